"""Per-file availability and freshness of every mirror, learned from HEAD requests. Pure.

A HEAD answer is judged against the catalog (``judge()``): a 200 whose ``Content-Length``
equals the listed size means PRESENT, another size WRONG_SIZE, a 4xx MISSING; no answer
(timeout, refused, 5xx) teaches nothing and keeps what was known. Each result is due to be
checked again after ``availability_ttl`` (present) or ``availability_negative_ttl`` (the
rest); until then, and while a re-check runs, the last result stands, so what a request
sees never depends on the clock, only on what was recorded.

A mirror is STALE when it is known to lack a file of the newest stable release (the
freshness probe HEADs those on every mirror); it is then never used for files that new or
newer, but still for older files it is known to have. A path whose answer changes (a
module's version list) is BEHIND on a mirror whose answer is older than the freshest
(``router.core.mutable``). A service's ``origin`` and ``fallback`` targets are its
origin: they have every file by definition, and are never checked.

``Ledger`` holds the catalogs and every result. Its ``generation`` grows by one on every
change that can change a redirect (a catalog that differs, a result that differs, a
freshness that differs), so caches of decisions can key on it. Nothing here does I/O: the
inventory (``router.watch.inventory``) fetches and HEADs, and records here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from router.core.catalog import Catalog, CatalogFile, subject
from router.core.config import Config, Service
from router.core.memo import Memo


class Availability(Enum):
    """What is known of one file on one mirror."""

    UNKNOWN = "unknown"  # never checked, or no check has had an answer yet
    PRESENT = "present"  # HEAD: 200 with the listed size
    MISSING = "missing"  # HEAD: 404, 410, 403, ...
    WRONG_SIZE = "wrong size"  # HEAD: 200 with another size (truncated, or an old copy)
    STALE = "stale"  # the mirror lacks the newest release, and this file is that new
    BEHIND = "behind"  # a changing answer (a version list) older than the freshest one
    CORRUPT = "corrupt"  # fetched whole, its bytes did not hash to the digest
    ORIGIN = "origin"  # an origin (or fallback) target: it has every file


class Freshness(Enum):
    """Whether a mirror has the newest stable release."""

    UNKNOWN = "unknown"  # not (completely) probed yet
    FRESH = "fresh"  # has every file of the newest stable release
    STALE = "stale"  # lacks at least one of them
    ORIGIN = "origin"  # a fallback target


# Availability of one file, by target id: what steering reads for one request.
FileView = Callable[[str], Availability]


@dataclass(frozen=True, slots=True)
class Seen:
    """The last thing learned about one file on one mirror."""

    state: Availability
    at: float  # when it was checked (the caller's clock)
    due: float  # when to check again
    detail: str = ""  # "HTTP 404", "1000 bytes, the catalog says 2000", "timeout after 3s"


@dataclass(frozen=True, slots=True)
class Corruption:
    """A mirror's copy of a file that was fetched whole and did not match."""

    expected: str  # the sha-256 (hex) the reference gives
    got: str  # what the copy hashed to
    at: float  # when it was verified


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one HEAD taught: a state, or None when it got no usable answer."""

    state: Availability | None
    detail: str


def judge(file: CatalogFile, status: int | None, length: int | None,
          error: str | None = None) -> Outcome:
    """One HEAD answer (``status`` None: no answer) → what it says about ``file``."""
    if status is None:
        return Outcome(None, error or "no answer")
    if status == 200:
        if file.size is not None and length != file.size:
            said = "no Content-Length" if length is None else f"{length} bytes"
            return Outcome(Availability.WRONG_SIZE, f"{said}, the catalog says {file.size}")
        return Outcome(Availability.PRESENT, "HTTP 200")
    if 400 <= status < 500 and status not in (408, 425, 429):
        return Outcome(Availability.MISSING, f"HTTP {status}")
    return Outcome(None, f"HTTP {status}")


Key = tuple[str, str]  # (service name, target id)
MAX_FILES = 65536  # results kept per mirror (a client chooses which immutable paths)

# What one ledger learned, for another process's ledger (``--workers``):
# ("install", service, Catalog) or ("record", service, target, file name, Outcome, at).
Event = tuple[Any, ...]


class Ledger:
    """Every service's catalog and every (mirror, file) result; ``generation`` counts changes.

    ``journal``, when set, is told every catalog installed and every result recorded here,
    so that other processes' ledgers can ``apply()`` them (``router.serve.supervisor``).
    """

    journal: Callable[[Event], None] | None = None

    def __init__(self, max_files: int = MAX_FILES) -> None:
        self.max_files = max_files  # results kept per mirror (core.memo: oldest first out)
        self._catalogs: dict[str, Catalog] = {}
        self._seen: dict[Key, Memo[str, Seen]] = {}  # per mirror, file name → what was seen
        self._freshness: dict[Key, Freshness] = {}
        self._sources: dict[str, tuple[str, str]] = {}  # service → catalog (url, format)
        self._urls: dict[Key, str | None] = {}  # the URL each target's results came from
        self._corrupt: dict[Key, Memo[str, Corruption]] = {}  # per mirror, failed copies
        self._barred: dict[str, frozenset[str]] = {}  # per service: corrupt targets
        self.generation = 0

    # ---------------------------------------------------------------- reading

    def catalog(self, service: str) -> Catalog | None:
        return self._catalogs.get(service)

    def seen(self, service: str, target: str, name: str) -> Seen | None:
        found = self._seen.get((service, target))
        return found.get(name) if found is not None else None

    def freshness(self, service: Service, target: str) -> Freshness:
        if target in service.origins:
            return Freshness.ORIGIN
        return self._freshness.get((service.name, target), Freshness.UNKNOWN)

    def view(self, service: Service, file: CatalogFile) -> FileView:
        """``target id → Availability`` of ``file``, for ``steering.rank()``."""
        catalog = self._catalogs.get(service.name)
        new = catalog is not None and file.name in catalog.new_files
        name, seen, fresh, corrupt = service.name, self._seen, self._freshness, self._corrupt

        origins = service.origins

        def availability(target: str) -> Availability:
            if target in origins:
                return Availability.ORIGIN
            if new and fresh.get((name, target)) is Freshness.STALE:
                return Availability.STALE
            bad = corrupt.get((name, target))
            if bad is not None and file.name in bad:
                return Availability.CORRUPT  # until a later verification passes
            found = seen.get((name, target))
            held = found.get(file.name) if found is not None else None
            return held.state if held else Availability.UNKNOWN

        return availability

    def is_due(self, service: Service, target: str, file: CatalogFile, now: float) -> bool:
        """Whether ``file`` on ``target`` should be checked (again) now."""
        if target in service.origins:
            return False
        found = self.seen(service.name, target, file.name)
        return found is None or now >= found.due

    def freshness_plan(self, service: Service, now: float) -> Iterator[tuple[str, CatalogFile]]:
        """The (target id, file) HEADs the freshness probe needs now: the due ones."""
        catalog = self._catalogs.get(service.name)
        for t in service.targets:
            if catalog is None or not t.enabled or t.url is None:
                continue
            for f in catalog.probe_files():
                if self.is_due(service, t.id, f, now):
                    yield t.id, f

    def counts(self, service: str, target: str) -> dict[str, int]:
        """How many files this process knows the state of on a mirror, by state."""
        out: dict[str, int] = {}
        for _name, seen in self._seen.get((service, target), Memo(1)).items():
            out[seen.state.value] = out.get(seen.state.value, 0) + 1
        return out

    def describe(self, service: Service, target: str, file: CatalogFile | None) -> dict[str, Any]:
        """One mirror's row for ``?mirrorlist``: the file's availability and its freshness."""
        row: dict[str, Any] = {"freshness": self.freshness(service, target).value}
        if file is not None:
            found = self.seen(service.name, target, file.name)
            row["file"] = self.view(service, file)(target).value
            row["file_checked"] = found.detail if found else None
        return row

    # ---------------------------------------------------------------- writing

    def install(self, service: Service, catalog: Catalog) -> bool:
        """A freshly fetched catalog; True when it differs from the one held."""
        old = self._catalogs.get(service.name)
        if old is not None and old.fingerprint == catalog.fingerprint:
            return False
        self._catalogs[service.name] = catalog
        if service.catalog is not None:
            self._sources[service.name] = (service.catalog.url, service.catalog.format)
        for key, entries in self._seen.items():
            if key[0] == service.name:
                entries.retain(lambda name: name in catalog.files)
        for t in service.targets:
            self._judge_freshness(service, t.id)
        self.generation += 1
        if self.journal is not None:
            self.journal(("install", service.name, catalog))
        return True

    def record(self, service: Service, target: str, file: CatalogFile, outcome: Outcome,
               at: float) -> bool:
        """One HEAD's outcome; True when what requests see has changed."""
        key = (service.name, target)
        self._urls.setdefault(key, _url_of(service, target))
        entries = self._seen.get(key)
        if entries is None:  # immutable paths are many: the oldest results go first
            entries = self._seen[key] = Memo(self.max_files)
        before = entries.get(file.name)
        state = outcome.state or (before.state if before else Availability.UNKNOWN)
        entries.put(file.name, Seen(state, at, at + recheck_after(service, file.name,
                                                                  outcome.state),
                                    outcome.detail))
        changed = before is None or before.state is not state
        if changed:
            self._judge_freshness(service, target)
            self.generation += 1
        if self.journal is not None:
            self.journal(("record", service.name, target, file.name, outcome, at))
        return changed

    def verified(self, service: Service, target: str, name: str, expected: str, got: str,
                 at: float) -> bool:
        """One copy fetched whole and hashed: ``got`` is not ``expected`` marks the
        (mirror, file) corrupt; a match clears a mark. True when requests see a change."""
        key = (service.name, target)
        marks = self._corrupt.get(key)
        if marks is None:
            marks = self._corrupt[key] = Memo(self.max_files)
        held = name in marks
        if got == expected:
            marks.pop(name)
        else:
            marks.put(name, Corruption(expected, got, at))
        if self.journal is not None:
            self.journal(("verified", service.name, target, name, expected, got, at))
        if held == (got != expected):
            return False
        self._barred[service.name] = frozenset(
            t.id for t in service.targets if len(self._corrupt.get((service.name, t.id), ()))
            >= service.corrupt_after)
        self.generation += 1
        return True

    def present(self, service: str, target: str) -> list[str]:
        """The files a mirror is known to have (a check said so)."""
        return [name for name, seen in self._seen.get((service, target), Memo(1)).items()
                if seen.state is Availability.PRESENT]

    def corrupt(self, service: str, target: str) -> dict[str, Corruption]:
        """The files whose copy on a mirror failed its verification."""
        return dict(self._corrupt.get((service, target), Memo(1)).items())

    def barred(self, service: str) -> frozenset[str]:
        """The targets with ``corrupt_after`` corrupt files or more: corrupt for the whole
        service (excluded from every redirect of it)."""
        return self._barred.get(service, frozenset())

    def apply(self, event: Event, config: Config) -> None:
        """What another process's ledger journaled; it is not journaled again here."""
        service = config.service(event[1])
        if service is None:
            return
        journal, self.journal = self.journal, None
        try:
            if event[0] == "install":
                self.install(service, event[2])
            elif event[0] == "record":
                catalog = self._catalogs.get(service.name)
                file = catalog.lookup(event[3]) if catalog else service.checked(event[3])
                held = self.seen(service.name, event[2], event[3])
                if file is not None and (held is None or held.at < event[5]):  # newer only
                    self.record(service, event[2], file, event[4], event[5])
            elif event[0] == "verified":
                self.verified(service, *event[2:])
        finally:
            self.journal = journal

    def events(self) -> Iterator[Event]:
        """Everything held, as events: what a new process needs to catch up."""
        for name, catalog in self._catalogs.items():
            yield ("install", name, catalog)
        for (name, target), entries in self._seen.items():
            for file_name, seen in entries.items():
                yield ("record", name, target, file_name, Outcome(seen.state, seen.detail),
                       seen.at)
        for (name, target), marks in self._corrupt.items():
            for file_name, c in marks.items():
                yield ("verified", name, target, file_name, c.expected, c.got, c.at)

    def retain(self, config: Config) -> None:
        """After a reload: forget targets that left or moved, and catalogs whose source did."""
        services = {s.name: s for s in config.services}
        moved = [k for k in self._seen if k[0] not in services
                 or _url_of(services[k[0]], k[1]) != self._urls.get(k)]
        for key in moved:
            del self._seen[key]
            self._freshness.pop(key, None)
            self._urls.pop(key, None)
        for key in [k for k in self._corrupt
                    if k[0] not in services or services[k[0]].target(k[1]) is None]:
            del self._corrupt[key]
            moved.append(key)
        sources = {s.name: (s.catalog.url, s.catalog.format) for s in config.services
                   if s.catalog is not None}
        gone = [n for n in self._catalogs
                if n not in sources or sources[n] != self._sources.get(n)]
        for name in gone:
            del self._catalogs[name]
            self._sources.pop(name, None)
        if moved or gone:
            self.generation += 1

    def _judge_freshness(self, service: Service, target: str) -> None:
        catalog = self._catalogs.get(service.name)
        entries = self._seen.get((service.name, target))
        states = [held.state if entries is not None and (held := entries.get(f.name))
                  else Availability.UNKNOWN for f in (catalog.probe_files() if catalog else ())]
        if Availability.MISSING in states:
            fresh = Freshness.STALE
        elif states and Availability.UNKNOWN not in states:
            fresh = Freshness.FRESH
        else:
            fresh = Freshness.UNKNOWN
        self._freshness[(service.name, target)] = fresh


def _url_of(service: Service, target: str) -> str | None:
    found = service.target(target)
    return found.url if found else None


def recheck_after(service: Service, name: str, state: Availability | None) -> float:
    """Seconds a result stands before the file is checked again: a changing answer's
    freshness for ``mutable_ttl``, any other file by its state."""
    checks = service.checks
    found = subject(name) if service.mutable else None
    if found is not None and found.name == name:
        return service.mutable_ttl
    return checks.ttl if state is Availability.PRESENT else checks.negative_ttl
