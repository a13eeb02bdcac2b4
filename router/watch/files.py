"""Files that may change under a running server (a certificate renewed in place, a GeoIP
database replaced): noticed by polling, acted on once a change has stood still."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from router.watch.tasks import cancel

T = TypeVar("T")
Stamp = tuple[int, int, int] | None  # (inode, size, mtime_ns); None: no such file


def stamp(*files: Path) -> tuple[Stamp, ...]:
    out: list[Stamp] = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class FileWatch:
    """Calls ``on_change`` when ``files`` differ from what ``loaded`` says was last read,
    once they have looked the same twice in a row (a copy caught half-way is not read).
    ``on_change`` sets ``loaded`` itself (by reading, or by giving up on that version)."""

    def __init__(self, files: tuple[Path, ...], on_change: Callable[[], Awaitable[object]],
                 every: float) -> None:
        self.files = files
        self.on_change = on_change
        self.every = every
        self.loaded = stamp(*files)
        self._task: asyncio.Task[None] | None = None

    async def reread(self, read: Callable[[], T], timeout: float) -> T:
        """``read()`` the files again, off the loop and bounded (``off_loop``); the version
        on disk counts as read whatever comes of it, so a bad one is not retried until it
        changes (a SIGHUP still asks again)."""
        self.loaded = stamp(*self.files)
        return await off_loop(read, timeout, str(self.files[0]))

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=f"watch {self.files[0]}")

    async def stop(self) -> None:
        await cancel([self._task])

    async def _follow(self) -> None:
        seen = self.loaded
        while True:
            await asyncio.sleep(self.every)
            now = stamp(*self.files)
            if now != self.loaded and now == seen:
                await self.on_change()
            seen = now



async def off_loop(read: Callable[[], T], timeout: float, what: str) -> T:
    """``read()`` in a thread of its own, waited for at most ``timeout`` seconds (then
    ``TimeoutError``), so that a file that hangs (a FIFO, a dead network mount) stops
    nothing but itself. The thread is a daemon: a read that never returns is left
    behind, and does not hold the process at exit as the default executor would."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = read()
        except BaseException as e:  # handed to the waiting coroutine, whatever it is
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=f"read {what}", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        raise TimeoutError(f"{what}: no answer after {timeout:g}s (still being read)") from None


def write_whole(path: Path, text: str) -> None:
    """Replace ``path`` whole: write a complete copy beside it, then rename it over, so a
    reader sees the old file or the new one, never half of one. The file keeps the mode
    it had; a new one gets what the umask leaves of 0666 (0644 under the usual 022,
    0600 under a unit's ``UMask=0077``), as any file the process creates."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        if mode is not None:
            os.fchmod(out.fileno(), mode)
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)

