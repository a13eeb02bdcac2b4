"""Target health: a pure state machine and the board that publishes it as snapshots.

A probe reports pass or fail (plus timings). ``observe()`` applies the anti-flap rules:
the first result decides at once (so a cold start is never a guess), then ``fall``
consecutive failures take an UP target down and ``rise`` consecutive successes bring a
DOWN one back. The rules are data, in ``TRANSITIONS``.

Each success also feeds two moving averages: the time to first byte (what a user feels
from here) and the server's *wait* (first byte less the request's round trip), which is
what steering charges for. The wait is published to steering quantized to
``LATENCY_STEP_MS`` with hysteresis, so that noise does not change decisions.

``Board`` keeps the state of every (service, target), plus the operator's overrides, and
publishes a frozen ``Snapshot`` by swapping one reference; each request reads the
snapshot once. The snapshot's ``generation`` changes whenever anything a decision reads
changes (a status, a published latency figure, an override), and only then, so caches
of answers know when they are stale. Nothing here does I/O: the prober
(``router.watch.prober``) feeds results in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import Any

from router.core.capacity import Pressure
from router.core.config import HealthCheck
from router.core.earth import Point
from router.core.memo import Memo
from router.core.overrides import Override, Overrides, lookup
from router.core.regions import ALL, nearest

EWMA_ALPHA = 0.5  # weight of the newest sample: a trend shows within two or three probes
LATENCY_STEP_MS = 10  # steering sees the wait EWMA in steps of this many milliseconds
LATENCY_HYSTERESIS_MS = 7.5  # ... and a new step only once the EWMA is this far off


class Status(Enum):
    UNKNOWN = "unknown"  # not probed (yet): usable
    UP = "up"
    SUSPECT = "suspect"  # up, but its last check failed: still served, checked again soon
    DOWN = "down"


class Effective(Enum):
    """What a target's health and the operator's override come to, together."""

    USABLE = "usable"  # passing, or not probed yet
    FORCED = "forced"  # its check fails, but the operator forced it up: served
    DRAINED = "drained"  # the operator drains it: no new choices
    DOWN = "down"  # its check fails
    ADMIN_DOWN = "admin down"  # the operator took it down


def effective(status: Status, override: Override) -> Effective:
    """The one place health and an override are combined (steering, /status, explain)."""
    if override is Override.DOWN:
        return Effective.ADMIN_DOWN
    if override is Override.DRAIN:
        return Effective.DRAINED
    if status is Status.DOWN:
        return Effective.FORCED if override is Override.UP else Effective.DOWN
    return Effective.USABLE


class Threshold(Enum):
    AT_ONCE = "at once"
    RISE = "rise"
    FALL = "fall"


# (current status, probe passed) → (status once the streak reaches the threshold,
# the threshold, the status while it has not)
TRANSITIONS: Mapping[tuple[Status, bool], tuple[Status, Threshold, Status]] = MappingProxyType({
    (Status.UNKNOWN, True): (Status.UP, Threshold.AT_ONCE, Status.UP),
    (Status.UNKNOWN, False): (Status.DOWN, Threshold.AT_ONCE, Status.DOWN),
    (Status.UP, True): (Status.UP, Threshold.AT_ONCE, Status.UP),
    (Status.UP, False): (Status.DOWN, Threshold.FALL, Status.SUSPECT),
    (Status.SUSPECT, True): (Status.UP, Threshold.AT_ONCE, Status.UP),
    (Status.SUSPECT, False): (Status.DOWN, Threshold.FALL, Status.SUSPECT),
    (Status.DOWN, True): (Status.UP, Threshold.RISE, Status.DOWN),
    (Status.DOWN, False): (Status.DOWN, Threshold.AT_ONCE, Status.DOWN),
})


@dataclass(frozen=True, slots=True)
class Phases:
    """When each phase of one check ended, in seconds from its start, as ``curl -w``
    reports them (time_namelookup, time_connect, time_appconnect, time_pretransfer,
    time_starttransfer, time_total)."""

    dns: float
    connect: float
    tls: float | None  # None: plain HTTP, no handshake
    sent: float  # the request is on its way
    ttfb: float
    total: float

    @property
    def wait(self) -> float:
        """The server's wait: request sent to first byte, less one round trip (the TCP
        handshake took one), so that the distance from here to the mirror cancels out."""
        return max(0.0, self.ttfb - self.sent - (self.connect - self.dns))


@dataclass(frozen=True, slots=True)
class Result:
    """One probe's outcome. Times are seconds; ``at`` is on the caller's clock."""

    ok: bool
    at: float
    error: str | None = None
    http_status: int | None = None
    ttfb: float | None = None  # time to the first byte of the response
    total: float | None = None
    phases: Phases | None = None
    local: bool = False  # not made, for a reason of our own (no descriptor, a starved
    # loop): says nothing of the target, so it never moves its state

    @property
    def verdict(self) -> str:
        """``ok``, ``fail``, or ``unknown`` (a local failure): the metrics' label."""
        return "unknown" if self.local else "ok" if self.ok else "fail"

    @property
    def wait(self) -> float | None:
        return self.phases.wait if self.phases is not None else None


@dataclass(frozen=True, slots=True)
class Health:
    status: Status = Status.UNKNOWN
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    since: float | None = None  # when the status last changed
    last_ok: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    ttfb_ewma: float | None = None
    wait_ewma: float | None = None
    latency_ms: int | None = None  # wait_ewma as steering sees it: quantized, hysteretic
    checks: int = 0
    last: Result | None = None


def observe(h: Health, result: Result, check: HealthCheck) -> Health:
    """Apply one probe result to a target's health (pure). A local failure changes
    nothing: the target was not asked."""
    if result.local:
        return h
    ok = result.ok
    wait = _ewma(h.wait_ewma, result.wait) if ok else h.wait_ewma
    successes = h.successes + 1 if ok else 0
    failures = 0 if ok else h.failures + 1
    goal, threshold, meanwhile = TRANSITIONS[(h.status, ok)]
    need = {Threshold.AT_ONCE: 1, Threshold.RISE: check.rise, Threshold.FALL: check.fall}[threshold]
    status = goal if (successes if ok else failures) >= need else meanwhile
    return replace(
        h,
        status=status,
        successes=successes,
        failures=failures,
        since=result.at if status is not h.status else h.since,
        last_ok=result.at if ok else h.last_ok,
        last_failure=h.last_failure if ok else result.at,
        last_error=h.last_error if ok else result.error,
        ttfb_ewma=_ewma(h.ttfb_ewma, result.ttfb) if ok else h.ttfb_ewma,
        wait_ewma=wait,
        latency_ms=quantize(wait, h.latency_ms),
        checks=h.checks + 1,
        last=result,
    )


def _ewma(old: float | None, new: float | None) -> float | None:
    if new is None:
        return old
    return new if old is None else old + EWMA_ALPHA * (new - old)


def quantize(seconds: float | None, published: int | None) -> int | None:
    """The latency figure steering sees: ``seconds`` in ``LATENCY_STEP_MS`` steps. It
    moves only when the average is ``LATENCY_HYSTERESIS_MS`` away from the published
    figure, so a value hovering at a step boundary does not flip decisions (and caches)."""
    if seconds is None:
        return published
    ms = seconds * 1000.0
    if published is not None and abs(ms - published) < LATENCY_HYSTERESIS_MS:
        return published
    return round(ms / LATENCY_STEP_MS) * LATENCY_STEP_MS


Key = tuple[str, str]  # (service name, target id)
PLACES = 65536  # client points whose region a snapshot remembers


def address_id(target: str, address: object) -> str:
    """The health id of one address of a target (``fra@2001:db8::21``): checked on its
    own, its state rolls up into the target's (``Board.set_groups``). ``@`` is in no
    target id, so it can be told apart."""
    return f"{target}@{address}"


Centres = tuple[tuple[str, Point], ...]  # (region, its centre): where clients are judged from
Regional = Mapping[str, Mapping[Key, Health]]  # region → the targets its verdicts differ on


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A frozen view of every target's health at one moment. In a fleet with nodes in
    several regions, also as each region sees it (``seen``): ``from_point()`` gives a
    client's."""

    health: Mapping[Key, Health] = field(default_factory=lambda: MappingProxyType({}))
    generation: int = 0
    admin: Overrides = field(default_factory=lambda: MappingProxyType({}))
    centres: Centres = ()  # the regions clients are mapped to (none: one region)
    # region → this snapshot as seen from there
    seen: Mapping[str, Snapshot] = field(default_factory=lambda: MappingProxyType({}))
    region: str | None = None  # the region this one is seen from (None: this node's)
    # milliseconds charged on top of the wait: a reference download's time at the
    # speed the clients of this region report (``core.speeds``)
    charges: Mapping[Key, int] = field(default_factory=lambda: MappingProxyType({}))
    # what each target with a capacity or in slow start keeps (router.core.capacity)
    pressures: Mapping[Key, Pressure] = field(default_factory=lambda: MappingProxyType({}))
    # point → the view it is judged by (with regions): a new place pays one search
    places: Memo[Point, Snapshot] = field(default_factory=lambda: Memo(PLACES), compare=False,
                                          repr=False)

    def get(self, service: str, target: str) -> Health:
        return self.health.get((service, target), _UNKNOWN)

    def region_of(self, point: Point | None) -> str | None:
        """The region a client at ``point`` is judged from (None: one region, or no
        point: this node's)."""
        return nearest(point, self.centres) if self.centres and point is not None else None

    def from_point(self, point: Point | None) -> Snapshot:
        """This snapshot as the region nearest ``point`` sees it (itself, with one region)."""
        if not self.centres or point is None:
            return self
        places = self.places
        found = places.fresh.get(point) or places.from_aged(point)
        if found is None:
            found = places.put(point, self.seen.get(nearest(point, self.centres) or "", self))
        return found

    def kept(self, service: str) -> dict[str, Pressure]:
        """The targets of ``service`` that keep only some of their client networks."""
        return {t: p for (s, t), p in self.pressures.items() if s == service and p.pressing}

    def view(self, service: str) -> Callable[[str], Status]:
        """The ``target id → status`` function that steering reads for one service."""
        health = self.health
        return lambda target: health.get((service, target), _UNKNOWN).status

    def latency(self, service: str) -> Callable[[str], int | None]:
        """``target id → published wait in ms`` (None: no figure yet), plus what the
        clients' reported speed charges, for steering."""
        health, charges = self.health, self.charges
        if not charges:
            return lambda target: health.get((service, target), _UNKNOWN).latency_ms

        def charged(target: str) -> int | None:
            wait = health.get((service, target), _UNKNOWN).latency_ms
            extra = charges.get((service, target))
            return wait if extra is None else extra + (wait or 0)
        return charged

    def overrides(self, service: str) -> Callable[[str], Override]:
        """``target id → the operator's override``, for steering."""
        admin = self.admin
        return lambda target: lookup(admin, service, target)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Picklable (the mappings are read-only views): for ``--workers``' channel."""
        return _snapshot, (dict(self.health), self.generation, dict(self.admin),
                           self.centres, {r: (dict(s.health), dict(s.charges))
                                          for r, s in self.seen.items()}, dict(self.charges),
                           dict(self.pressures))


def _snapshot(health: dict[Key, Health], generation: int, admin: dict[str, Override],
              centres: Centres = (),
              seen: dict[str, tuple[dict[Key, Health], dict[Key, int]]] | None = None,
              charges: dict[Key, int] | None = None,
              pressures: dict[Key, Pressure] | None = None) -> Snapshot:
    frozen, pressed = MappingProxyType(admin), MappingProxyType(pressures or {})
    views = MappingProxyType({r: Snapshot(MappingProxyType(h), generation, frozen, region=r,
                                          charges=MappingProxyType(c), pressures=pressed)
                              for r, (h, c) in (seen or {}).items()})
    return Snapshot(MappingProxyType(health), generation, frozen, centres, views,
                    charges=MappingProxyType(charges or {}), pressures=pressed)


_UNKNOWN = Health()


def rolled_up(members: list[Health]) -> Health:
    """A target's health from its addresses': up while any is up (or suspect: served as
    up), unknown while none is up and any is unknown, else down; its latency the best
    of the up ones'; the last error among them."""
    served = [_served(h.status) for h in members]
    status = Status.UP if Status.UP in served else \
        Status.UNKNOWN if Status.UNKNOWN in served else Status.DOWN
    up = [h for h in members if _served(h.status) is Status.UP]
    waits = [h.latency_ms for h in up if h.latency_ms is not None]
    ttfbs = [h.ttfb_ewma for h in up if h.ttfb_ewma is not None]
    failed = max((h for h in members if h.last_failure is not None),
                 key=lambda h: h.last_failure or 0.0, default=None)
    last = max((h.last for h in members if h.last is not None), key=lambda r: r.at,
               default=None)
    return Health(status=status, since=min((h.since for h in members if h.since), default=None),
                  last_ok=max((h.last_ok for h in members if h.last_ok), default=None),
                  last_failure=failed.last_failure if failed else None,
                  last_error=failed.last_error if failed else None,
                  ttfb_ewma=min(ttfbs, default=None), wait_ewma=None,
                  latency_ms=min(waits, default=None), checks=sum(h.checks for h in members),
                  last=last)


def _served(status: Status) -> Status:
    """A status as steering uses it: a suspect is served as up, so UP <-> SUSPECT changes
    no decision (and does not retire cached answers)."""
    return Status.UP if status is Status.SUSPECT else status


class Board:
    """The live health of every target; ``snapshot`` is swapped whole on each change."""

    def __init__(self) -> None:
        self._state: dict[Key, Health] = {}
        self._group: dict[Key, Key] = {}  # an address's key → its target's
        self._members: dict[Key, tuple[Key, ...]] = {}  # a target's key → its addresses
        self._admin: Overrides = MappingProxyType({})  # in force: the two below, merged
        self._local: Overrides = MappingProxyType({})
        self._fleet: Overrides = MappingProxyType({})
        self._centres: Centres = ()
        self._regional: Regional = {}
        self._charges: dict[str, dict[Key, int]] = {}  # region ("all": this node's) → ms
        self._pressures: Mapping[Key, Pressure] = MappingProxyType({})  # steering's
        # every target's pressure as last measured, with its load figures: what /status
        # and /metrics show (a worker's, handed on by its supervisor), never steered by
        self.figures: Mapping[Key, Pressure] = MappingProxyType({})
        self.on_overrides: Callable[[], None] | None = None  # before a new override shows
        self.snapshot = Snapshot()

    def record(self, key: Key, result: Result, check: HealthCheck) -> tuple[Health, Health]:
        """Apply a result; return (before, after) so the caller can log a change."""
        before = self._state.get(key, _UNKNOWN)
        after = observe(before, result, check)
        self.put(key, after)
        return before, after

    def put(self, key: Key, after: Health) -> Health:
        """Set a target's health as decided elsewhere (the fleet's verdict); return the
        one it replaces. A new generation only if what steering reads has changed. An
        address's health rolls up into its target's."""
        before = self._state.get(key, _UNKNOWN)
        self._state[key] = after
        changed = _served(after.status) is not _served(before.status) \
            or after.latency_ms != before.latency_ms
        group = self._group.get(key)
        if group is not None:
            self._state[group] = rolled_up([self._state.get(m, _UNKNOWN)
                                            for m in self._members[group]])
        self._publish(changed=changed)
        return before

    def set_groups(self, groups: Mapping[Key, tuple[Key, ...]]) -> None:
        """Targets whose addresses are checked one by one: target key → address keys.
        The target's health is theirs rolled up (``rolled_up``)."""
        self._members = dict(groups)
        self._group = {m: target for target, members in groups.items() for m in members}

    def set_overrides(self, overrides: Overrides, *, fleet: bool = False) -> bool:
        """Install the operator's overrides: this node's (the state file), or the fleet's
        (``fleet=True``). A node's own entry wins over the fleet's for the same selector.
        True (and a new generation) if what is in force changed."""
        if fleet:
            self._fleet = MappingProxyType(dict(overrides))
        else:
            self._local = MappingProxyType(dict(overrides))
        merged = {**self._fleet, **self._local}
        if merged == dict(self._admin):
            return False
        self._admin = MappingProxyType(merged)
        self._publish(changed=True)
        if self.on_overrides is not None:  # the pressures follow at once (a slow drain)
            self.on_overrides()
        return True

    def set_regional(self, centres: Centres, regional: Regional) -> None:
        """The fleet's verdicts per region (``core.fleet``): each region's targets whose
        verdict there is its own, and the regions clients are mapped to. A new generation
        only when what steering reads from any region changes."""
        if centres == self._centres and _served_figures(regional) == \
                _served_figures(self._regional):
            self._regional = regional  # the same decisions: no new generation
            return
        self._centres, self._regional = centres, regional
        self._publish(changed=True)

    def charge(self, region: str, key: Key, ms: int) -> None:
        """Charge ``key`` ``ms`` for the clients of ``region`` (``all``: those judged
        by this node's view): a new generation when that changes."""
        found = self._charges.setdefault(region, {})
        if found.get(key) != ms:
            found[key] = ms
            self._publish(changed=True)

    def set_pressures(self, pressures: Mapping[Key, Pressure]) -> None:
        """What each target keeps (``core.capacity``). The snapshot carries only what
        steering reads of the targets that keep fewer than all (``Pressure.steered``):
        a new snapshot only when that changes, a new generation only when a bar does.
        Every figure is kept in ``figures``, for /status and /metrics."""
        if dict(pressures) != dict(self.figures):
            self.figures = MappingProxyType(dict(pressures))
        steered = {k: p.steered() for k, p in pressures.items() if p.pressing}
        if steered == dict(self._pressures):
            return
        before = {k: p.bars for k, p in self._pressures.items()}
        self._pressures = MappingProxyType(steered)
        self._publish(changed=before != {k: p.bars for k, p in steered.items()})

    def charged(self, region: str, key: Key) -> int | None:
        return self._charges.get(region, {}).get(key)

    @property
    def local_overrides(self) -> Overrides:
        return self._local

    @property
    def fleet_overrides(self) -> Overrides:
        return self._fleet

    def assume(self, keys: Iterable[Key], status: Status, at: float) -> None:
        """Set targets that are never probed (no health URL, or --no-probe)."""
        for key in keys:
            self._state[key] = Health(status=status, since=at)
        self._publish(changed=True)

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget targets that left the config (on reload)."""
        wanted = set(keys)
        gone = [k for k in self._state if k not in wanted]
        for k in gone:
            del self._state[k]
        if gone:
            self._publish(changed=True)

    def adopt(self, snapshot: Snapshot) -> None:
        """Take another process's snapshot whole (a worker fed by its supervisor)."""
        self.snapshot = snapshot

    def _publish(self, changed: bool) -> None:
        generation = self.snapshot.generation + (1 if changed else 0)
        charges = self._charges
        pressures = self._pressures
        seen = {region: Snapshot(MappingProxyType(self._seen_from(overlay)), generation,
                                 self._admin, region=region,
                                 charges=MappingProxyType(dict(charges.get(region, {}))),
                                 pressures=pressures)
                for region, overlay in self._regional.items()} if self._centres else {}
        self.snapshot = Snapshot(MappingProxyType(dict(self._state)), generation, self._admin,
                                 self._centres, MappingProxyType(seen),
                                 charges=MappingProxyType(dict(charges.get(ALL, {}))),
                                 pressures=pressures)

    def _seen_from(self, overlay: Mapping[Key, Health]) -> dict[Key, Health]:
        """Every target's health with a region's own verdicts over this node's (a
        target checked address by address rolled up from the region's figures)."""
        merged = {**self._state, **overlay}
        for group in {self._group[k] for k in overlay if k in self._group}:
            merged[group] = rolled_up([merged.get(m, _UNKNOWN) for m in self._members[group]])
        return merged


def _served_figures(regional: Regional) -> dict[str, dict[Key, tuple[Status, int | None]]]:
    """What steering reads of each region's verdicts: the served status and latency."""
    return {region: {k: (_served(h.status), h.latency_ms) for k, h in overlay.items()}
            for region, overlay in regional.items()}
