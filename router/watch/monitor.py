"""The watching side: the prober and the operator's state file, both feeding one Board.

In a single process the server runs a ``Monitor`` itself. With ``--workers N`` only the
supervising process runs one, and the workers get its snapshots (``router.serve.supervisor``),
so probe traffic does not multiply with the number of workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from router.core.config import Config, FleetConfig
from router.core.fleet import View
from router.core.health import Board, Key, Status
from router.core.load import Sent
from router.core.retries import Avoidance
from router.core.stats import Stats
from router.watch.fleet import Fleet, cache_path
from router.watch.loads import LoadWatch, sent
from router.watch.prober import Prober, log_change
from router.watch.statefile import StateFile

log = structlog.get_logger("router.watch.monitor")


class Monitor:
    def __init__(self, board: Board, stats: Stats, config: Callable[[], Config], *,
                 probe: bool = True, state: Path | None = None,
                 ca_file: Path | None = None, fleet: FleetConfig | None = None,
                 totals: Callable[[], Mapping[Key, Sent]] | None = None) -> None:
        self.board = board
        # what was sent to each target (the supervisor's: every worker's, summed)
        self.totals = totals or (lambda: sent(stats.http_chosen, stats.http_bytes))
        self.loads: LoadWatch | None = None
        self.stats = stats
        self.config = config
        self.probe = probe
        self.ca_file = ca_file
        self.state = StateFile(state, board, config) if state is not None else None
        self.prober: Prober | None = None
        self.fleet_config = fleet
        self.fleet: Fleet | None = None  # in a fleet: decides what ``board`` says
        # in a fleet, the prober's results go to a board of this node's own, which the
        # fleet's observations are made of; alone, straight to the one steering reads
        self.own = Board() if fleet is not None else board
        self._cache = cache_path(state, fleet.name) if fleet is not None else None
        # the other nodes' avoidances (core.retries), handed to whoever serves
        self.learned: Callable[[Avoidance], None] | None = None

    def verifies(self, key: Key) -> bool:
        """Whether this node verifies ``key``'s copies (in a fleet: one node each)."""
        return self.fleet.verifies(key) if self.fleet is not None else True

    async def start(self) -> None:
        """Apply the operator's overrides, then run the first probe round (or assume up)."""
        if self.state is not None:
            await self.state.load_now()
            self.state.start()
        config = self.config()
        if not self.probe:
            assume_up(self.board, config)
            assume_up(self.own, config)
        else:
            node = self.fleet_config.node if self.fleet_config else None
            self.prober = Prober(self.own, log_change, on_result=self.stats.probed,
                                 ca_file=self.ca_file, node=node)
            await self.prober.start(config)
            started = time.monotonic()
            await self.prober.first_round()
            log.info("first_probe_round", seconds=round(time.monotonic() - started, 3),
                     checked=len(self.own.snapshot.health))
        if self.fleet_config is not None:
            prober = self.prober
            self.fleet = Fleet(self.fleet_config, self.board, self.own, self.config,
                               prober.select if prober else lambda _keys: None,
                               cache=self._cache, probing=prober is not None)
            self.fleet.learned = self._learned
            await self.fleet.start()
        fleet = self.fleet
        self.loads = LoadWatch(self.board, self.config, self.totals,
                               fleet.others if fleet is not None else None,
                               node=self.fleet_config.node if self.fleet_config else None,
                               reading=self.probe)
        if fleet is not None:
            fleet.rates = lambda: self.loads.loads.mine if self.loads else {}
        self.loads.start()

    def tell(self, news: Avoidance) -> None:
        """An avoidance this node began: for the fleet (alone: for no one)."""
        if self.fleet is not None:
            self.fleet.tell(news)

    def _learned(self, news: Avoidance) -> None:
        if self.learned is not None:
            self.learned(news)

    def fleet_view(self) -> View | None:
        return self.fleet.view() if self.fleet is not None else None

    async def ready(self, dns: list[str], http: list[str]) -> None:
        """Nothing to tell: this process serves on its own."""

    def reconfigure(self, config: Config) -> None:
        """Follow a reloaded config: new targets probed, gone ones forgotten."""
        if self.prober is not None:
            self.prober.reconfigure(config)
        else:
            assume_up(self.board, config)
            assume_up(self.own, config)

    async def close(self) -> None:
        if self.loads is not None:
            await self.loads.close()
        if self.fleet is not None:
            await self.fleet.close()
        if self.prober is not None:
            await self.prober.close()
        if self.state is not None:
            await self.state.stop()


def assume_up(board: Board, config: Config) -> None:
    """--no-probe: every target counts as up and nothing is contacted."""
    keys = [(s.name, t.id) for s in config.services for t in s.targets]
    board.retain(keys)
    board.assume(keys, Status.UP, time.time())
