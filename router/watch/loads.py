"""The load on each target, measured, and what it leaves each target (``core.load``):
once a second (``capacity.TICK``) in the process that owns the serving board.

What was sent comes from the counters (``totals``); in a fleet, the other nodes' rates
come from the store (``Fleet.others``, when a fleet is given) and this node's go there.
Each target with a ``load_url`` is read on its service's health interval, off the tick:
a page that fails, times out or does not give the figure makes its load unknown (logged
once each time it starts failing, ``load_read_failed``), never the target down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import aiohttp
import structlog

from router.core.capacity import TICK, Rate
from router.core.config import Config, Target
from router.core.health import Board, Key
from router.core.load import MAX_PAGE, BadFigure, Loads, Sent, figure
from router.watch.check import user_agent
from router.watch.tasks import cancel

log = structlog.get_logger("router.watch.loads")

Others = Callable[[], Mapping[Key, Sent]]


class LoadWatch:
    def __init__(self, board: Board, config: Callable[[], Config],
                 totals: Callable[[], Mapping[Key, Sent]], others: Others | None = None,
                 node: str | None = None, reading: bool = True) -> None:
        self.board, self.config, self.totals, self.others = board, config, totals, others
        self.reading = reading  # load_urls are read (not with --no-probe: contact nothing)
        self.loads = Loads()
        self.reported: dict[Key, float | None] = {}
        self._counters: dict[Key, Rate] = {}
        self._due: dict[Key, float] = {}
        self._failing: dict[Key, str] = {}
        self._reading: set[asyncio.Task[None]] = set()
        self._agent = user_agent(node)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._session = aiohttp.ClientSession(headers={"User-Agent": self._agent})
        self._task = asyncio.create_task(self._loop(), name="loads")
        # an override steps the pressures at once: a drain starts its slow drain in the
        # same snapshot, never a moment of "drained" before it
        self.board.on_overrides = lambda: self.step(time.monotonic())

    async def close(self) -> None:
        self.board.on_overrides = None
        await cancel([self._task, *self._reading])
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while True:
            try:
                self.round(time.monotonic())
            except Exception:  # a bug here must not stop the measuring for good
                log.exception("loads_round_failed")
            await asyncio.sleep(TICK)

    def round(self, now: float) -> None:
        """Start the due load_url reads; step every target's pressure."""
        config = self.config()
        for service in config.services:
            for target in service.targets:
                key = (service.name, target.id)
                if self.reading and target.load_url is not None \
                        and now >= self._due.get(key, 0.0):
                    self._due[key] = now + service.health.interval
                    task = asyncio.create_task(self._read(key, target, service.health.timeout))
                    self._reading.add(task)
                    task.add_done_callback(self._reading.discard)
        self.step(now, config)

    def step(self, now: float, config: Config | None = None) -> None:
        """Every target's pressure at ``now``, published on the board."""
        others = self.others() if self.others is not None else None
        self.board.set_pressures(self.loads.step(config or self.config(), self.board.snapshot,
                                                 self.totals(), self.reported, now, others))

    async def _read(self, key: Key, target: Target, timeout: float) -> None:
        assert target.load_url is not None and self._session is not None
        try:
            async with self._session.get(target.load_url,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                if r.status != 200:
                    raise BadFigure(f"HTTP {r.status}")
                text = (await r.content.read(MAX_PAGE)).decode("utf-8", "replace")
            value, counter = figure(text, target.load_metric)
        except (BadFigure, aiohttp.ClientError, TimeoutError, OSError) as e:
            self._failed(key, target, str(e) or type(e).__name__)
            return
        if counter:
            rate = self._counters.setdefault(key, Rate())
            first = rate.total is None
            rate.update(value, time.monotonic())
            self.reported[key] = None if first else rate.value
        else:
            self.reported[key] = value
        if self._failing.pop(key, None) is not None:
            log.info("load_read_ok", service=key[0], target=key[1], url=target.load_url)

    def _failed(self, key: Key, target: Target, error: str) -> None:
        self.reported[key] = None
        self._counters.pop(key, None)
        if key not in self._failing:
            log.warning("load_read_failed", service=key[0], target=key[1],
                        url=target.load_url, error=error,
                        effect="its load is unknown until a read succeeds; never down")
        self._failing[key] = error


def sent(chosen: Mapping[Key, int], sizes: Mapping[Key, int]) -> dict[Key, Sent]:
    """The totals a ``Loads.step`` reads: (bytes, requests) per target."""
    return {key: (float(sizes.get(key, 0)), float(n)) for key, n in chosen.items()}
