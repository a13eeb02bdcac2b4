"""The fleet's rules, pure: who observes a target, what the observers agree on, and the
values nodes share (JSON, read strictly).

Nodes share three kinds of value through the store (``router.fleet.store``):

- a **heartbeat** per node, with a TTL: the live nodes are those with one;
- an **observation** per (target, observer): the observer's own view of the target (its
  status after rise/fall, its published wait in ms) and when it was last checked;
- an **override** per selector: the operator's word, who said it and when.

``observers()`` picks, by rendezvous hashing over the live nodes, the few that probe a
target, so the load on a mirror stays the same however many nodes there are, and a node
joining or leaving moves only the targets it wins or held. ``agree()`` turns the fresh
observations into one verdict, the same on every node that reads the same values: down
only when a quorum says so; the latency is the median of the observers' published
figures (already quantized, so the median is on the same grid and does not wobble).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from router.core import values as v
from router.core.availability import Availability, Outcome
from router.core.earth import Point
from router.core.health import Centres, Health, Key, Status
from router.core.overrides import Override, Window, Windows, in_force, listed
from router.core.regions import ALL, CENTRES, EVERYWHERE, Region
from router.core.retries import V4, V6, Avoidance
from router.core.values import stamp

HEARTBEAT_TTL = 3.0  # seconds a node counts as live after its last heartbeat
TICK = 0.25  # seconds between a node's rounds with the store (overrides apply within 1 s)
MAX_VALUE = 4096  # bytes: a longer value in the store is refused unread


class BadValue(ValueError):
    """A value in the store that does not parse: logged and ignored, never applied."""


def observers(key: Key, nodes: Iterable[str], count: int) -> tuple[str, ...]:
    """The ``count`` nodes (all, when fewer) that probe ``key``: highest random weight
    (rendezvous hashing), so each target's observers are spread evenly and stable."""
    label = f"{key[0]}/{key[1]}".encode()

    def weight(node: str) -> bytes:
        return hashlib.blake2b(node.encode() + b"\0" + label, digest_size=8).digest()

    return tuple(sorted(set(nodes), key=weight, reverse=True)[:count])


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: str
    at: float  # the store's clock
    instance: str  # random per process: tells two nodes given the same name apart
    observers: int
    quorum: int | None
    region: Region = EVERYWHERE
    per_region: int = 2  # its observers_per_region


@dataclass(frozen=True, slots=True)
class Observation:
    """One observer's view of one target."""

    node: str
    status: Status  # after the observer's own rise/fall: UP, SUSPECT or DOWN
    latency_ms: int | None  # the observer's published wait
    at: float  # when it last checked (the store's clock)
    ttl: float  # seconds it counts for (two missed checks and then some)
    error: str | None = None

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)

    def fresh(self, now: float) -> bool:
        return self.age(now) <= self.ttl


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    """A fleet-wide override; with ``start`` and ``end`` (UTC epoch seconds) a window,
    kept under ``window_field`` (a selector may have one plain entry and windows)."""

    state: Override
    by: str  # who set it: user@host, or a node
    at: float  # the store's clock
    start: float | None = None
    end: float | None = None


def window_field(window: Window) -> str:
    """The store's field of a window: its selector, a space, and when it starts."""
    return f"{window.selector} {stamp(window.start)}"


def field_selector(name: str) -> str:
    """The selector a field of the overrides names (a plain entry's, or a window's)."""
    return name.split(" ", 1)[0]


def in_force_now(records: Mapping[str, OverrideRecord], now: float) -> dict[str, Override]:
    """The fleet's overrides at ``now`` (the store's clock): its plain entries, then each
    window that holds (``core.overrides.in_force``)."""
    return in_force({k: r.state for k, r in records.items() if r.start is None},
                    windows_of(records), now)


def windows_of(records: Mapping[str, OverrideRecord]) -> Windows:
    return tuple(Window(field_selector(k), r.state, r.start, r.end)
                 for k, r in records.items() if r.start is not None and r.end is not None)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the fresh observers of one target agree on."""

    status: Status  # UP or DOWN
    latency_ms: int | None
    votes: int  # fresh observations
    down: int  # ... of which say down
    needed: int  # down votes that take it down

    def health(self, before: Health, now: float) -> Health:
        """The target's health as steering reads it, built from this verdict alone (so
        equal verdicts give equal health, and nothing is published for nothing)."""
        since = before.since if _served(before.status) is self.status else now
        return Health(status=self.status, since=since, latency_ms=self.latency_ms,
                      wait_ewma=None if self.latency_ms is None else self.latency_ms / 1000)


def _served(status: Status) -> Status:
    return Status.UP if status is Status.SUSPECT else status


def needed(votes: int, quorum: int | None) -> int:
    """Down votes that take a target down: ``quorum``, else a majority of the votes."""
    return quorum if quorum is not None else votes // 2 + 1


def agree(found: Iterable[Observation], *, live: Iterable[str], now: float,
          expected: int, quorum: int | None) -> Verdict | None:
    """The verdict of the fresh observations from live nodes, or None when there are too
    few (fewer than a majority of the ``expected`` observers, or than ``quorum``): the
    node must then look for itself. An observation past its TTL never counts, so a
    silent observer can never keep a target down."""
    alive = set(live)
    fresh = [o for o in found if o.node in alive and o.fresh(now)
             and o.status is not Status.UNKNOWN]
    if not fresh or len(fresh) < max(needed(expected, None), quorum or 0):
        return None
    down = sum(1 for o in fresh if o.status is Status.DOWN)
    need = needed(len(fresh), quorum)
    figures = sorted(o.latency_ms for o in fresh
                     if o.status is not Status.DOWN and o.latency_ms is not None)
    latency = figures[(len(figures) - 1) // 2] if figures else None  # the lower median
    return Verdict(Status.DOWN if down >= need else Status.UP, latency, len(fresh), down,
                   need)


# ---------------------------------------------------------------- values (JSON)


def dump(value: Heartbeat | Observation | OverrideRecord) -> str:
    """A value as the store keeps it: compact JSON."""
    fields: dict[str, Any]
    if isinstance(value, Heartbeat):
        place = value.region.point
        fields = {"node": value.node, "at": value.at, "instance": value.instance,
                  "observers": value.observers, "quorum": value.quorum,
                  "region": value.region.name, "per_region": value.per_region,
                  "place": None if place is None else [place.lat, place.lon]}
    elif isinstance(value, Observation):
        fields = {"status": value.status.value, "latency_ms": value.latency_ms,
                  "at": value.at, "ttl": value.ttl, "error": value.error}
    else:
        fields = {"state": value.state.value, "by": value.by, "at": value.at}
        if value.start is not None:
            fields |= {"from": value.start, "until": value.end}
    return json.dumps(fields, separators=(",", ":"))


def _object(raw: bytes | str, limit: int = MAX_VALUE) -> dict[str, Any]:
    if len(raw) > limit:
        raise BadValue(f"longer than {limit} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadValue(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadValue(f"a JSON object is expected, not {type(data).__name__}")
    return data


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
           optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadValue(f"{name}: {value!r} is not a valid value")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadValue(f"{name}: {value!r} is not a finite number")
    return value


def _name(value: Any, what: str) -> str:
    try:
        return v.identifier(value)
    except v.Invalid as e:
        raise BadValue(f"{what}: {e.reason}") from None


def load_heartbeat(raw: bytes | str) -> Heartbeat:
    data = _object(raw)
    quorum = _field(data, "quorum", int, optional=True)
    per_region = _field(data, "per_region", int, optional=True)
    return Heartbeat(_name(data.get("node"), "node"), float(_field(data, "at", (int, float))),
                     str(_field(data, "instance", str))[:64],
                     int(_field(data, "observers", int)), quorum, _region(data),
                     2 if per_region is None else per_region)


def _region(data: Mapping[str, Any]) -> Region:
    """A heartbeat's region (absent: a node of before regions, in ``all``)."""
    name = _field(data, "region", str, optional=True)
    if name is None or name == ALL:
        return EVERYWHERE
    name = _name(name, "region")
    place = data.get("place")
    if name in CENTRES:
        return Region(name, CENTRES[name])
    if not (isinstance(place, list) and len(place) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool)
                    and math.isfinite(x) for x in place)
            and -90 <= place[0] <= 90 and -180 <= place[1] <= 180):
        raise BadValue(f"place: {place!r} is not [lat, lon]")
    return Region(name, Point(float(place[0]), float(place[1])))


_STATUSES = {s.value: s for s in (Status.UP, Status.SUSPECT, Status.DOWN)}


def load_observation(node: str, raw: bytes | str) -> Observation:
    data = _object(raw)
    status = _STATUSES.get(str(data.get("status")))
    if status is None:
        raise BadValue(f"status: {data.get('status')!r} is not up, suspect or down")
    latency = _field(data, "latency_ms", int, optional=True)
    if latency is not None and not 0 <= latency <= 600_000:
        raise BadValue(f"latency_ms: {latency} is out of range")
    error = _field(data, "error", str, optional=True)
    ttl = float(_field(data, "ttl", (int, float)))
    if not 0 < ttl <= 86400:
        raise BadValue(f"ttl: {ttl} is out of range")
    return Observation(_name(node, "observer"), status, latency,
                       float(_field(data, "at", (int, float))), ttl,
                       None if error is None else error[:200])


def load_override(raw: bytes | str) -> OverrideRecord:
    data = _object(raw)
    try:
        state = v.choice(Override)(data.get("state"))
    except v.Invalid as e:
        raise BadValue(f"state: {e.reason}") from None
    start, end = (_field(data, k, (int, float), optional=True) for k in ("from", "until"))
    if (start is None) != (end is None) or (start is not None and (
            end <= start or state is Override.AUTO)):
        raise BadValue("a window needs from and until (until after from) and a state of "
                       "drain, down or up")
    return OverrideRecord(state, str(_field(data, "by", str))[:128],
                          float(_field(data, "at", (int, float))),
                          None if start is None else float(start),
                          None if end is None else float(end))


def dump_avoidance(news: Avoidance, node: str, now: float) -> str:
    """An avoidance as the fleet's stream keeps it: until when on the store's clock
    (``now``), and which node began it."""
    return json.dumps({"service": news.service, "network": news.network.hex(),
                       "target": news.target, "until": round(now + news.seconds, 3),
                       "node": node}, separators=(",", ":"))


def load_avoidance(raw: bytes | str, now: float) -> tuple[str, Avoidance]:
    """The node that began it and the avoidance (``seconds`` from ``now``, the store's
    clock: 0 or less when it is over)."""
    data = _object(raw)
    try:
        network = bytes.fromhex(str(_field(data, "network", str)))
    except ValueError:
        raise BadValue(f"network: {data.get('network')!r} is not hex") from None
    if (len(network), network[-1:]) not in ((5, bytes((V4,))), (17, bytes((V6,)))):
        raise BadValue(f"network: {network.hex()} is not a /{V4} or a /{V6}")
    return _name(data.get("node"), "node"), Avoidance(
        _name(data.get("service"), "service"), network, _name(data.get("target"), "target"),
        float(_field(data, "until", (int, float))) - now)


def dump_rates(rates: Mapping[Key, tuple[float, float]], now: float) -> str:
    """A node's rates sent to each target, (bytes, requests) a second, and when."""
    return json.dumps({"at": round(now, 3), "rates": {
        f"{s}/{t}": [round(b, 1), round(r, 3)] for (s, t), (b, r) in sorted(rates.items())
        if b or r}}, separators=(",", ":"))


def load_rates(raw: bytes | str, now: float) -> dict[Key, tuple[float, float]]:
    """A node's rates (none when older than ``HEARTBEAT_TTL``: a node gone quiet)."""
    data = _object(raw, MAX_VALUE * 64)  # a figure pair per target
    at = float(_field(data, "at", (int, float)))
    rates = data.get("rates")
    if not isinstance(rates, dict):
        raise BadValue("rates: an object is expected")
    out: dict[Key, tuple[float, float]] = {}
    for name, pair in rates.items():
        service, _, target = str(name).partition("/")
        if not (isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                and x >= 0 for x in pair)):
            raise BadValue(f"rates: {name}: [bytes, requests] a second is expected")
        out[(_name(service, "service"), _name(target, "target"))] = (float(pair[0]),
                                                                   float(pair[1]))
    return out if now - at <= HEARTBEAT_TTL else {}


_AVAILABILITY = {a.value: a for a in (Availability.PRESENT, Availability.MISSING,
                                      Availability.WRONG_SIZE)}


def dump_file(outcome: Outcome, at: float) -> str:
    """One HEAD's outcome (state None: no usable answer) and when (the store's clock)."""
    return json.dumps({"state": outcome.state.value if outcome.state else None,
                       "detail": outcome.detail, "at": at}, separators=(",", ":"))


def load_file(raw: bytes | str) -> tuple[Outcome, float]:
    data = _object(raw)
    state = data.get("state")
    if state is not None and state not in _AVAILABILITY:
        raise BadValue(f"state: {state!r} is not present, missing or wrong size")
    detail = str(_field(data, "detail", str))[:200]
    return (Outcome(_AVAILABILITY[state] if state else None, detail),
            float(_field(data, "at", (int, float))))


# ---------------------------------------------------------------- what /status shows


@dataclass(frozen=True, slots=True)
class RegionView:
    """One target as one region's observers see it."""

    region: str
    observers: tuple[str, ...]  # chosen for it among the region's live nodes
    verdict: Verdict | None  # None: too few fresh observations there


@dataclass(frozen=True, slots=True)
class TargetView:
    """One target as this node sees the fleet's view of it."""

    key: Key
    observers: tuple[str, ...]  # chosen for it among the live nodes (of every region)
    observations: tuple[Observation, ...]  # as read, fresh or not
    verdict: Verdict | None  # this node's region's; None: too few fresh observations,
    # this node looks itself
    probing: bool  # this node checks it (an observer, or for want of a verdict)
    regions: tuple[RegionView, ...] = ()  # with live nodes in two regions or more


@dataclass(frozen=True, slots=True)
class View:
    """The fleet as one node sees it: for ``/status``, ``/metrics`` and ``fleet status``."""

    store: str  # the URL, password redacted
    name: str
    node: str
    connected: bool
    since: float  # when ``connected`` last changed (this node's clock)
    error: str | None
    skew: float  # the store's clock less this node's
    live: tuple[str, ...]
    targets: tuple[TargetView, ...] = ()
    overrides: Mapping[str, OverrideRecord] | None = None
    places: Mapping[str, Region] | None = None  # each live node's region

    def age(self, observation: Observation, now: float) -> float:
        """How old an observation is, ``now`` on this node's clock."""
        return observation.age(now + self.skew)


def observation_ttl(interval: float, timeout: float) -> float:
    """How long an observation counts: two missed checks and then some."""
    return 2 * interval + timeout + HEARTBEAT_TTL


def grouped(live: Iterable[str], places: Mapping[str, Region] | None) -> dict[str, list[str]]:
    """The live nodes by region (a node whose region is not known: ``all``)."""
    regions: dict[str, list[str]] = {}
    for node in sorted(live):
        regions.setdefault(str((places or {}).get(node, EVERYWHERE)), []).append(node)
    return regions


def centres(places: Mapping[str, Region] | None) -> Centres:
    """The regions clients are mapped to: those of the live nodes with a place, when
    there are two regions or more (none: one region judges for everyone)."""
    regions = {r.name: r.point for r in (places or {}).values()}
    if len(regions) < 2:
        return ()
    return tuple(sorted((name, point) for name, point in regions.items() if point is not None))


def survey(observations: Mapping[Key, Mapping[str, Observation]], keys: Iterable[Key], *,
           live: tuple[str, ...], count: int, quorum: int | None, now: float,
           me: str | None = None, connected: bool = True,
           places: Mapping[str, Region] | None = None, per_region: int = 2
           ) -> tuple[TargetView, ...]:
    """Each target's observers and verdict (``now`` on the store's clock). Without the
    store (``connected`` false) there are neither, and ``me`` checks every target.

    With live nodes in two regions or more (``places``), each region has its own
    ``per_region`` observers (rendezvous within the region) and its own verdict; the
    target's ``verdict`` is then that of ``me``'s region."""
    regions = grouped(live, places) if connected else {}
    if len(regions) < 2:
        return tuple(_one(key, observations.get(key, {}), live, count, quorum, now, me,
                          connected) for key in keys)
    mine = str((places or {}).get(me or "", EVERYWHERE))
    need = None if quorum is None else min(quorum, per_region)
    views = []
    for key in keys:
        seen = observations.get(key, {})
        each = tuple(_regional(key, seen, region, tuple(nodes), per_region, need, now)
                     for region, nodes in sorted(regions.items()))
        own = next((r for r in each if r.region == mine), None)
        chosen = tuple(n for r in each for n in r.observers)
        verdict = own.verdict if own is not None else None
        views.append(TargetView(key, chosen, tuple(o for _n, o in sorted(seen.items())),
                                verdict, me in chosen or verdict is None, each))
    return tuple(views)


def _one(key: Key, seen: Mapping[str, Observation], live: tuple[str, ...], count: int,
         quorum: int | None, now: float, me: str | None, connected: bool) -> TargetView:
    chosen = observers(key, live, count) if connected else ()
    verdict = agree(seen.values(), live=live, now=now, expected=len(chosen),
                    quorum=quorum) if connected else None
    return TargetView(key, chosen, tuple(o for _n, o in sorted(seen.items())), verdict,
                      me in chosen or verdict is None)


def _regional(key: Key, seen: Mapping[str, Observation], region: str, nodes: tuple[str, ...],
              count: int, quorum: int | None, now: float) -> RegionView:
    chosen = observers(key, nodes, count)
    mine = [o for node, o in seen.items() if node in nodes]
    return RegionView(region, chosen, agree(mine, live=nodes, now=now, expected=len(chosen),
                                            quorum=quorum))


def _verdict(verdict: Verdict | None) -> dict[str, Any] | None:
    return None if verdict is None else {
        "status": verdict.status.value, "latency_ms": verdict.latency_ms,
        "votes": verdict.votes, "down": verdict.down, "needed": verdict.needed}


def document(view: View, now: float) -> dict[str, Any]:
    """The fleet as JSON-ready data (``/status.json``, ``fleet status --json``); ``now``
    on this node's clock."""
    store_now = now + view.skew
    live = set(view.live)
    places = view.places or {}
    return {
        "fleet": view.name, "store": view.store, "node": view.node,
        "connected": view.connected, "since": view.since, "error": view.error,
        "nodes": list(view.live),
        "regions": {n: str(places.get(n, EVERYWHERE)) for n in view.live},
        "targets": [{
            "service": t.key[0], "target": t.key[1], "observers": list(t.observers),
            "probing": t.probing,
            "verdict": _verdict(t.verdict),
            "regions": [{"region": r.region, "observers": list(r.observers),
                         "verdict": _verdict(r.verdict)} for r in t.regions],
            "observations": [{
                "node": o.node, "status": o.status.value, "latency_ms": o.latency_ms,
                "age": round(o.age(store_now), 1), "error": o.error,
                "counted": o.fresh(store_now) and o.node in live} for o in t.observations],
        } for t in view.targets],
        "overrides": {k: {"state": r.state.value, "by": r.by, "at": r.at}
                      for k, r in sorted((view.overrides or {}).items()) if r.start is None},
        "windows": listed(windows_of(view.overrides or {}), store_now),
    }

