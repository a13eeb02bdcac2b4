"""The prober: health checks that feed the ``Board``.

Each target with a health URL gets its own loop: one check of its kind (the ``Checker``
of ``router.watch.kinds``; for ``http``, ``router.watch.check`` GETs the URL with the
service's timeout, timed phase by phase), record the result, sleep a jittered
interval. The first round runs for every target at once and ``first_round()`` waits for
it (bounded by the timeouts), so the server is ready only once every answer rests on a
real observation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import structlog

from router.core.checks import Checker, Probe, groups, probes, unprobed
from router.core.config import Config, Kind
from router.core.health import Board, Health, Key, Result, Status
from router.core.values import redact
from router.watch.check import loop_lag, new_session
from router.watch.kinds import checkers
from router.watch.tasks import cancel, reconcile

log = structlog.get_logger("router.watch.prober")

JITTER = 0.1  # each interval is shortened by up to 10%, so probes drift apart

def jittered(interval: float, u: float) -> float:
    """The wait before the next check, ``u`` uniform in [0, 1): up to ``JITTER`` shorter,
    so that checks started together drift apart and never stampede."""
    return interval * (1 - u * JITTER)


OnChange = Callable[[Key, Health, Health, str], None]  # key, before, after, URL checked
OnResult = Callable[[Key, Result], None]


class Prober:
    """Runs one check loop per target and records every result on the board.

    The prober only ever calls ``board.record()`` (and ``on_result``, for statistics), so
    the board can as well be fed from elsewhere: one prober per machine, publishing to
    several serving processes."""

    def __init__(self, board: Board, on_change: OnChange | None = None, *,
                 on_result: OnResult | None = None, ca_file: Path | None = None,
                 node: str | None = None) -> None:
        self.board = board
        self.node = node
        self.on_change = on_change
        self.on_result = on_result
        self.ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None
        self._checkers: dict[Kind, Checker] = {}  # one per kind of check, on the session
        self._tasks: dict[Key, tuple[asyncio.Task[None], Probe]] = {}
        self._first: dict[Key, asyncio.Event] = {}
        self._active: set[Key] | None = None  # None: every target (see select)
        self._wake: dict[Key, asyncio.Event] = {}

    async def start(self, config: Config) -> None:
        loop_lag()  # watching the loop before the first round can keep it busy
        self._session = new_session(self.ca_file, self.node)
        self._checkers = checkers(self._session)
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Start, keep or stop loops so that they match ``config`` (on start and reload)."""
        wanted = {probe.key: probe for probe in probes(config)}
        grouped = groups(config)
        self.board.set_groups(grouped)
        reconcile(self._tasks, wanted, self._start)
        self.board.retain([*wanted, *grouped, *unprobed(config)])
        self.board.assume([k for k in unprobed(config)
                           if self.board.snapshot.get(*k).status is not Status.UP],
                          Status.UP, time.time())

    def _start(self, key: Key, probe: Probe) -> asyncio.Task[None]:
        self._first[key] = asyncio.Event()
        return asyncio.create_task(self._loop(probe), name=f"probe {key}")

    def select(self, keys: set[Key] | None) -> None:
        """Check only ``keys`` (None: every target), as a fleet asks: the targets this
        node observes, and those the fleet has too few fresh observations of. A target
        that becomes selected is checked at once."""
        before = self._active
        self._active = None if keys is None else set(keys)
        for key, wake in self._wake.items():
            if self.selected(key) and (before is not None and key not in before):
                wake.set()

    def selected(self, key: Key) -> bool:
        return self._active is None or key in self._active

    async def first_round(self) -> None:
        """Wait until every target has one result (each check is bounded by its timeout)."""
        pending = [e.wait() for e in self._first.values() if not e.is_set()]
        if pending:
            longest = max(probe.check.timeout for _t, probe in self._tasks.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), longest + 1.0)

    async def close(self) -> None:
        await cancel(t for t, _p in self._tasks.values())
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()

    async def _loop(self, probe: Probe) -> None:
        key, check = probe.key, probe.check
        checker = self._checkers[check.kind]
        wake = self._wake[key] = asyncio.Event()
        while True:
            if not self.selected(key):
                wake.clear()
                await wake.wait()
                continue
            started = time.monotonic()
            result = await checker.check(probe)
            if result.local:
                log.warning("probe_not_made", service=key[0], target=key[1],
                            reason=result.error, effect="the target's state stays as it was")
            before, after = self.board.record(key, result, check)
            if self.on_result is not None:
                self.on_result(key, result)
            self._first[key].set()
            if after.status is not before.status and self.on_change is not None:
                self.on_change(key, before, after, probe.url)
            # A suspect is checked again soon: fall x suspect_interval to take a dead one
            # out; a recovering one keeps the normal interval for its rise.
            every = check.fast if after.status is Status.SUSPECT else check.interval
            delay = jittered(every, random.random())
            await asyncio.sleep(max(0.0, started + delay - time.monotonic()))


def log_change(key: Key, before: Health, after: Health, url: str) -> None:
    """The default ``on_change``: one structured log line per state change, naming the
    URL checked; a warning when a target goes down (an operator wants to hear of it)."""
    last = after.last
    say = log.warning if after.status is Status.DOWN else log.info
    say("target_state", service=key[0], target=key[1], old=before.status.value,
        new=after.status.value, error=last.error if last else None,
        http_status=last.http_status if last else None, url=redact(url))
