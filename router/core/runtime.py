"""The live state every face reads: the current config, GeoIP, health, file availability,
readiness, and the counters the faces keep (``router.core.stats``).

One object, passed explicitly to the DNS and HTTP adapters (never a global), built whole
(``Readings``: what the serving side shows of itself). A reload calls ``install()``,
which replaces the config and what is derived from it whole; requests read each
attribute once. The clock is injected (``time.time`` by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from router.core.asn import AsnDb
from router.core.audience import Rules
from router.core.availability import Ledger
from router.core.config import Config
from router.core.fleet import View
from router.core.geo import Locator
from router.core.health import Board
from router.core.overrides import Windows
from router.core.retries import Retries
from router.core.speeds import Speeds
from router.core.stats import Stats


class StateView(Protocol):
    """What the status page shows of the operator's state file."""

    @property
    def path(self) -> Path: ...

    @property
    def error(self) -> str | None: ...

    @property
    def windows(self) -> Windows: ...  # scheduled overrides, coming or in force


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of a signed zone (``router.dns.dnssec``)."""

    file: str
    algorithm: str
    tag: int
    created: float  # when the key was made
    state: str  # planned, published, ready, active, signing-unpublished, retired, removed
    events: Mapping[str, float]  # its timing: publish, ready, activate, retire, remove
    signs: bool = False  # it signs answers now (``dnssec.phase``)


def signing_line(zone: str, keys: Sequence[tuple[str, int]] | None) -> str:
    """Whether DO queries to ``zone`` get signed answers, and from which keys, each
    (algorithm, key tag) (None: the zone is unsigned): what ``explain`` says, offline or
    from the running router."""
    if keys is None:
        return f"zone {zone} is unsigned"
    names = "; ".join(f"{algorithm}, key tag {tag}" for algorithm, tag in keys)
    return f"zone {zone} is signed: DO queries get RRSIGs ({names})"


@dataclass(frozen=True, slots=True)
class Signing:
    """One signed zone, as /status and /metrics show it (``router.dns.dnssec``)."""

    zone: str
    keys: tuple[SigningKey, ...]
    next_event: tuple[float, str, int] | None  # (when, what, key tag); None: none planned
    made: int  # signatures made (signature cache misses)
    reused: int  # signatures found in the cache


@dataclass(frozen=True, slots=True)
class Reload:
    """How the last reload (SIGHUP) went."""

    ok: bool
    at: float
    problems: tuple[str, ...] = ()


class Readings(Protocol):
    """What the serving side knows and the pages show (``/status``, ``/metrics``), read
    when they are asked for: the operator's state file, the fleet, the signed zones and
    every cache's counters. ``router.serve`` builds one and hands it to the ``Runtime``
    at its birth."""

    @property
    def state(self) -> StateView | None: ...

    def fleet(self) -> View | None: ...

    def signing(self) -> list[Signing]: ...

    def caches(self) -> Mapping[str, Mapping[str, int]]:
        """Every bounded table's counters (``core.memo``), by the name /metrics shows."""
        ...


class Unserved:
    """The readings of a runtime that nothing serves from (``explain``, tests, benches):
    no state file, no fleet, no signing, only the GeoIP database's caches."""

    def __init__(self, locator: Callable[[], Locator]) -> None:
        self._locator = locator

    @property
    def state(self) -> StateView | None:
        return None

    def fleet(self) -> View | None:
        return None

    def signing(self) -> list[Signing]:
        return []

    def caches(self) -> Mapping[str, Mapping[str, int]]:
        return self._locator().caches()


class Runtime:
    """Built whole: everything it reads is given to it. What changes while it serves is
    swapped in whole (``install()`` a config and its rules, ``locator`` a GeoIP database,
    ``asn_db`` with ``rules``) or is a
    plain fact (``ready``, ``last_reload``, ``peers``: the other workers' counts)."""

    def __init__(self, config: Config, locator: Locator, board: Board,
                 probing: bool = True, *, ledger: Ledger | None = None,
                 readings: Readings | None = None, clock: Callable[[], float] = time.time,
                 asn_db: AsnDb | None = None, rules: Rules | None = None) -> None:
        self.locator = locator
        self.asn_db = asn_db  # --asn-db: the networks of the ASes rules name
        # who each target serves, routes: built with the config (and the ASN database),
        # off the loop, and swapped in with them; both faces read this one
        self.rules = rules or Rules(config, asn_db)
        self.board = board
        self.ledger = ledger or Ledger()  # catalogs and per-file availability
        self.probing = probing
        self.readings: Readings = readings or Unserved(lambda: self.locator)
        self.clock = clock
        self.ready = False
        self.started = clock()
        self.config = config
        self.config_loaded = self.started  # when the config in force was read
        self.last_reload: Reload | None = None  # None: not reloaded since start
        self.stats = Stats()
        self.retries = Retries(self.stats.clients)  # clients that came back, what they avoid
        self.speeds = Speeds()  # what clients reported of their downloads' speed
        self.peers: tuple[Stats, ...] = ()  # --workers: the other processes' counts

    @property
    def state(self) -> StateView | None:
        return self.readings.state

    def fleet(self) -> View | None:
        return self.readings.fleet()

    def signing(self) -> list[Signing]:
        return self.readings.signing()

    def sample(self) -> None:
        """Copy every cache's counters into ``stats.caches``."""
        for name, counters in self.readings.caches().items():
            for figure, value in counters.items():
                self.stats.caches[(name, figure)] = value

    def totals(self) -> Stats:
        """This process's counts, plus the other workers' (as last reported)."""
        self.sample()
        return self.stats.merged(*self.peers) if self.peers else self.stats

    def install(self, config: Config, rules: Rules | None = None) -> None:
        """Switch to a new config (on reload) and its rules (built from it and the ASN
        database in force, when not given). What a face derives from the config it derives
        again when it sees ``config`` is no longer the object it derived from."""
        self.rules = rules or Rules(config, self.asn_db)
        self.config = config
        self.config_loaded = self.clock()
