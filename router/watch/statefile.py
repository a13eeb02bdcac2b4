"""The operator's state file on disk: read it safely, write it atomically, watch it.

``serve --state FILE`` polls the file four times a second and applies a change once the
file has stood still for one poll, so a change shows in answers within half a second,
and an editor caught half-way through a save is not read. Whatever goes wrong, the last
good overrides stay in force: a file that is missing, unreadable, not TOML, or has a bad
entry is logged (file, key, reason) and ignored until it is fixed. Only a good file,
which must hold a ``[targets]`` table (an empty or truncated file does not), changes
anything. ``mirror-router admin`` writes the file by renaming a complete copy over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from router.core import reading
from router.core.config import Config, ConfigError, Problem
from router.core.health import Board
from router.core.overrides import (
    Override,
    Overrides,
    Windows,
    in_force,
    moves,
    next_change,
    parse_state,
    render,
    unknown,
)
from router.core.values import stamp
from router.watch.files import off_loop, write_whole
from router.watch.tasks import cancel

log = structlog.get_logger("router.state")

READ_TIMEOUT = 5.0  # seconds a read of the state file may take
POLL = 0.25  # seconds between looks at the file
DEFAULT_NAME = "state.toml"
DEFAULT_DIR = Path("/var/lib/mirror-router")  # systemd's StateDirectory=mirror-router

Signature = tuple[int, int, int, int]  # inode, size, mtime, ctime


def default_path(env: Callable[[str], str | None] = os.environ.get) -> Path | None:
    """``$STATE_DIRECTORY/state.toml`` when systemd gives a state directory, else None."""
    directory = env("STATE_DIRECTORY")
    return Path(directory.split(":")[0]) / DEFAULT_NAME if directory else None


def _signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read(path: Path) -> dict[str, Override]:
    """The overrides in ``path`` (none if it does not exist); ``ConfigError`` if bad."""
    return read_state(path)[0]


def read_state(path: Path) -> tuple[dict[str, Override], Windows]:
    """The overrides and windows in ``path`` (none if it does not exist)."""
    try:
        text = reading.read_text(path, "state file")
    except FileNotFoundError:
        return {}, ()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(str(path), "", f"cannot read: {e}")]) from None
    return parse_state(text, str(path))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write cycles of ``mirror-router admin`` on one file. The
    folder must exist: a mistyped path must not quietly create one."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder (create it, or give --state)")
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write(path: Path, overrides: Overrides, windows: Windows = ()) -> None:
    """Replace ``path`` whole (a complete copy renamed over it); windows that have ended
    are left out."""
    now = time.time()
    write_whole(path, render(overrides, tuple(w for w in windows if w.end > now)))


def told(windows: Windows, before: Overrides, after: Overrides, now: float,
         fleet: bool = False) -> None:
    """Log the windows that began or ended (``window_started``, ``window_ended``)."""
    for move, w in moves(windows, before, after, now):
        log.info(f"window_{move}", target=w.selector, state=str(w.state),
                 until=stamp(w.end), late_s=round(now - (w.start if move == "started"
                                                         else w.end), 3), fleet=fleet)


class StateFile:
    """Applies the file's overrides to the board; keeps the last good ones on error."""

    def __init__(self, path: Path, board: Board, config: Callable[[], Config]) -> None:
        self.path = path
        self.board = board
        self.config = config
        self.error: str | None = None  # why the file on disk is not in force, if it is not
        self.loaded_at: float | None = None
        self._seen: Signature | None = None
        self._applied: Signature | None = None
        self._task: asyncio.Task[None] | None = None
        self.base: dict[str, Override] = {}  # the file's plain entries
        self.windows: Windows = ()  # and its scheduled ones
        self._next: float | None = None  # when a window starts or ends next

    async def load_now(self) -> None:
        """Read the file at once (at start-up)."""
        self._seen = _signature(self.path)
        await self._apply(self._seen)

    async def poll(self) -> None:
        """Apply the file once it has changed and then stood still for one poll, and the
        windows that start or end (on time, within a poll)."""
        signature = _signature(self.path)
        if signature != self._applied and signature == self._seen:
            await self._apply(signature)
        self._seen = signature
        now = time.time()
        if self._next is not None and now >= self._next:
            self._enforce(now)

    def _enforce(self, now: float) -> None:
        """The file's overrides as they stand at ``now`` (its windows in or out)."""
        before = dict(self.board.local_overrides)
        overrides = in_force(self.base, self.windows, now)
        self._next = next_change(self.windows, now)
        if overrides != before:
            self.board.set_overrides(overrides)
            told(self.windows, before, overrides, now)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="state file")

    async def stop(self) -> None:
        await cancel([self._task])

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            await self.poll()

    async def _apply(self, signature: Signature | None) -> None:
        self._applied = signature
        if signature is None:
            self._keep(f"{self.path}: no such file" if self.loaded_at else None)
            return
        path = self.path
        try:  # off the loop, bounded: a FIFO or a dead mount stops nothing but this read
            text = await off_loop(lambda: reading.read_text(path, "state file"),
                                  READ_TIMEOUT, str(path))
            base, windows = parse_state(text, str(path))
        except TimeoutError as e:
            self._keep(str(e))
            return
        except (OSError, UnicodeDecodeError) as e:
            self._keep(f"{self.path}: cannot read: {e}")
            return
        except ConfigError as e:
            self._keep("; ".join(str(p) for p in e.problems))
            return
        self.base, self.windows = base, windows
        now = time.time()
        overrides = in_force(base, windows, now)
        self._next = next_change(windows, now)
        changed = self.board.set_overrides(overrides)
        self.error, self.loaded_at = None, now
        log.info("state_loaded", file=str(self.path), changed=changed,
                 overrides={k: str(s) for k, s in sorted(overrides.items())},
                 windows=[f"{w.selector} {w.state} {stamp(w.start)}..{stamp(w.end)}"
                          for w in windows if w.end > now])
        strays = unknown([*overrides, *(w.selector for w in windows)], self.config())
        if strays:
            log.warning("state_unknown_targets", file=str(self.path), selectors=strays)

    def _keep(self, error: str | None) -> None:
        """Something is wrong with the file: log it and keep the overrides in force."""
        self.error = error
        if error is not None:
            log.error("state_file_invalid", file=str(self.path), error=error,
                      keeping={k: str(s) for k, s in sorted(self.board.local_overrides.items())})
