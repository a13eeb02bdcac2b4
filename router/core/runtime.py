"""The live state every face reads: the current config, GeoIP, health, file availability,
readiness, and the counters the faces keep (``router.core.stats``).

One object, passed explicitly to the DNS and HTTP adapters (never a global). A reload
calls ``install()``, which replaces the config and what is derived from it whole;
requests read each attribute once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from router.core.availability import Ledger
from router.core.config import Config
from router.core.fleet import View
from router.core.geo import Locator
from router.core.health import Board
from router.core.stats import Stats


class StateView(Protocol):
    """What the status page shows of the operator's state file."""

    @property
    def path(self) -> Path: ...

    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Signing:
    """One signed zone, as /status and /metrics show it (``router.dns.dnssec``)."""

    zone: str
    key: str  # the key file
    algorithm: str
    tag: int
    created: float  # when the key was made
    made: int  # signatures made (signature cache misses)
    reused: int  # signatures found in the cache


@dataclass(frozen=True, slots=True)
class Reload:
    """How the last reload (SIGHUP) went."""

    ok: bool
    at: float
    problems: tuple[str, ...] = ()


class Runtime:
    def __init__(self, config: Config, locator: Locator, board: Board,
                 probing: bool = True, *, ledger: Ledger | None = None) -> None:
        self.locator = locator
        self.board = board
        self.ledger = ledger or Ledger()  # catalogs and per-file availability
        self.probing = probing
        self.ready = False
        self.started = time.time()
        self.config = config
        self.config_loaded = self.started  # when the config in force was read
        self.last_reload: Reload | None = None  # None: not reloaded since start
        self.stats = Stats()
        self.state: StateView | None = None  # the operator's state file, when watched
        self.fleet: Callable[[], View | None] = lambda: None  # the fleet, when in one
        self.signing: Callable[[], list[Signing]] = list  # signed zones (the DNS face's)
        self.peers: tuple[Stats, ...] = ()  # --workers: the other processes' counts
        # name -> the cache's counters, read by sample(); the faces add theirs
        self.caches: dict[str, Callable[[], Mapping[str, int]]] = {"geoip": locator.counters}

    def sample(self) -> None:
        """Copy every cache's counters into ``stats.caches``."""
        for name, read in self.caches.items():
            for figure, value in read().items():
                self.stats.caches[(name, figure)] = value

    def totals(self) -> Stats:
        """This process's counts, plus the other workers' (as last reported)."""
        self.sample()
        return self.stats.merged(*self.peers) if self.peers else self.stats

    def install(self, config: Config) -> None:
        """Switch to a new config (on reload). What a face derives from the config it
        derives again when it sees ``config`` is no longer the object it derived from."""
        self.config = config
        self.config_loaded = time.time()
