"""The one decision engine: rank a service's targets for one client. Pure and synchronous.

``rank()`` is a short chain of stages, each with one job:

1. **assess** every target: its distance and cost for this client, and the reason it is
   excluded, if it is (disabled, wrong address family, country rules, the operator's
   override, the file, health);
2. **price** latency: ``km_per_ms`` x how much slower the target's server waits than the
   fastest usable one (no figure yet: no penalty), added to its cost;
3. **order** the usable ones: the near-equal best (cost within ``best x spread +
   spread_km``) by weighted rendezvous hashing on the client's network, then the rest by
   cost;
4. **all down**: when nothing is usable, ``on_all_down`` picks the fallback targets, every
   target (fail open), or nothing.

For an HTTP request for a file a catalog lists, ``files`` tells each target's availability
of that file (``router.core.availability``): a target known to lack it, to have a copy of the
wrong size, or stale for a file that new is excluded, and so is one not yet checked
(UNVERIFIED). Only when nothing else is usable are the unverified targets ranked.

Cost = (great-circle km + ``cross_border_km`` when the client's and the target's countries
differ + the latency term) / (weight / 100). An anycast target is ``anycast_km`` from
everyone. A client that GeoIP cannot place is put at the service's ``default_location``;
without one, distance plays no part and only latency, weight and hashing order the targets.

Operator overrides (``router.core.overrides``): ``drain`` and ``down`` exclude a target (down
ones are not served even when every target is down, drained ones not even unverified);
``up`` makes a failing health check not count. Latency figures arrive already quantized
(``router.core.health``), so a decision changes only when the health snapshot's generation does.

DNS, HTTP and ``explain`` all call ``rank()``; none of them scores on its own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Protocol

from router.core.availability import Availability, FileView
from router.core.catalog import CatalogFile
from router.core.config import OnAllDown, Service, Target
from router.core.earth import Point, distance_km
from router.core.geo import Location
from router.core.health import Effective, Snapshot, Status, effective
from router.core.overrides import Override


class Want(Enum):
    """What the asker needs from a target."""

    IPV4 = "A"  # an IPv4 address (DNS A)
    IPV6 = "AAAA"  # an IPv6 address (DNS AAAA)
    URL = "url"  # a base URL (HTTP redirect)
    ANY = "any"  # nothing in particular (explain without a type)


class Exclusion(Enum):
    """Why a target cannot be chosen for this request."""

    DISABLED = "disabled in the config (enabled = false)"
    NO_ADDRESS = "has no address of the asked family"
    NO_URL = "has no url, so it cannot take HTTP redirects"
    NOT_FOR_COUNTRY = "the client's country is not in only_countries"
    COUNTRY_EXCLUDED = "the client's country is in exclude_countries"
    DRAINED = "drained by the operator: takes no new clients"
    ADMIN_DOWN = "marked down by the operator"
    STALE = "stale: lacks the newest release, so not used for files that new"
    MISSING_FILE = "known not to have this file"
    WRONG_SIZE = "its copy of this file has the wrong size"
    DOWN = "health check failing"
    UNVERIFIED = "not yet known to have this file"


class Standing(Enum):
    """Why a usable target stands where it does in the ranking."""

    NEAREST = "lowest cost"
    SPREAD = "near-equal to the best (within spread), ordered by hashing the client network"
    BY_COST = "ranked by cost"
    FALLBACK = "all targets down: a fallback target, served regardless of health"
    FAIL_OPEN = "all targets down: served anyway (on_all_down = all)"
    UNVERIFIED = "no target is known to have this file: not yet checked, served anyway"


FORCED = "; forced up by the operator"  # added to the reason of a target served despite health

# Availability of a file → the exclusion it causes (PRESENT and ORIGIN cause none).
_FILE_EXCLUSIONS = {
    Availability.STALE: Exclusion.STALE,
    Availability.MISSING: Exclusion.MISSING_FILE,
    Availability.WRONG_SIZE: Exclusion.WRONG_SIZE,
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One target's figures for one client, and why it ranks or is excluded."""

    target: Target
    status: Status
    distance_km: float | None  # None: the client has no location to measure from
    border_km: float
    cost: float
    excluded: Exclusion | None = None
    standing: Standing | None = None
    file: Availability | None = None  # of the file asked for, when a catalog lists it
    latency_ms: int | None = None  # the server's wait as published by health (None: none yet)
    latency_km: float = 0.0  # km_per_ms x (latency_ms - the fastest usable target's)
    admin: Override = Override.AUTO

    def standing_as(self, standing: Standing) -> Candidate:
        """This candidate with ``standing``: ``dataclasses.replace`` without its generic
        machinery (a third of a new client's ranking, bench/http)."""
        return Candidate(self.target, self.status, self.distance_km, self.border_km,
                         self.cost, self.excluded, standing, self.file, self.latency_ms,
                         self.latency_km, self.admin)

    @property
    def reason(self) -> str:
        if self.excluded is not None:
            return self.excluded.value
        text = self.standing.value if self.standing else ""
        forced = effective(self.status, self.admin) is Effective.FORCED
        return text + FORCED if forced else text


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of ``rank()``: the usable targets in order, and the excluded ones."""

    service: Service
    client: Location
    origin: Point | None  # where distance was measured from (client or default location)
    ranked: tuple[Candidate, ...]
    excluded: tuple[Candidate, ...]
    degraded: bool  # every target was down and on_all_down chose these
    ttl: int
    # The order hashed on the client's network (near-equal targets spread): without it,
    # every network at the same place (point, country) gets this same ranking.
    hashed: bool = False

    def chosen(self, count: int | None = None) -> tuple[Target, ...]:
        n = self.service.answers if count is None else count
        return tuple(c.target for c in self.ranked[:n])


# The health view steering reads: target id → status. Built once per request from the
# board's snapshot, so one decision sees one consistent state.
HealthView = Callable[[str], Status]
LatencyView = Callable[[str], int | None]  # target id → published wait in ms
OverrideView = Callable[[str], Override]  # target id → the operator's override


def no_latency(_target_id: str) -> int | None:
    return None


def no_overrides(_target_id: str) -> Override:
    return Override.AUTO


def rank(service: Service, client: Location, health: HealthView, want: Want, *,
         files: FileView | None = None, latency: LatencyView = no_latency,
         admin: OverrideView = no_overrides) -> Decision:
    """Rank ``service``'s targets for ``client``; the hash key is the client's network.

    ``files``: each target's availability of the file asked for (HTTP, catalog listed).
    ``latency`` and ``admin``: each target's published wait and the operator's override.
    """
    origin = client.point or service.default_location
    assessed = [_assess(t, service, client, origin, health(t.id), want,
                        files(t.id) if files else None, admin(t.id), latency(t.id))
                for t in service.targets]
    usable = [c for c in assessed if c.excluded is None]
    # Nothing known to have the file, not even an origin: the unchecked healthy targets.
    unverified = [c for c in assessed if c.excluded is Exclusion.UNVERIFIED]
    overridden = Standing.UNVERIFIED if unverified and not usable else None
    usable = usable or unverified
    # Degraded only when health emptied the list, not when static rules did.
    degraded = not usable and any(c.excluded is Exclusion.DOWN for c in assessed)
    if degraded:
        usable = _when_all_down(service, assessed)
        overridden = Standing.FALLBACK if service.on_all_down is OnAllDown.FALLBACK \
            else Standing.FAIL_OPEN
    fastest = min((c.latency_ms for c in usable if c.latency_ms is not None), default=None)
    if fastest is not None:  # no figures (not probed yet, or --no-probe): nothing to charge
        priced = {c.target.id: _price(c, fastest, service.km_per_ms) for c in assessed}
        assessed = list(priced.values())
        usable = [priced[c.target.id] for c in usable]
    ranked = _order(usable, service, client.key) if usable else []
    hashed = any(c.standing is Standing.SPREAD for c in ranked)
    chosen_ids = {c.target.id for c in ranked}
    excluded = tuple(c for c in assessed if c.target.id not in chosen_ids)
    if overridden is not None:
        ranked = [replace(c, excluded=None, standing=overridden) for c in ranked]
    return Decision(service, client, origin, tuple(ranked), excluded, degraded,
                    _ttl(service, degraded), hashed)


def decide(snapshot: Snapshot, service: Service, client: Location, want: Want, *,
           files: FileView | None = None) -> Decision:
    """``rank()`` with all that one health snapshot knows: status, latency, overrides."""
    name = service.name
    return rank(service, client, snapshot.view(name), want, files=files,
                latency=snapshot.latency(name), admin=snapshot.overrides(name))


@dataclass(frozen=True, slots=True)
class Stage:
    """What ``rank()`` knows before it knows where in a country the client is, for a
    request with no file to check: the usable targets, each with its border km, weight
    divisor and latency km. ``order()`` finishes the ranking for a point with a few
    distances and no candidates: what a new place needs to find the decision it shares
    with places of the same outcome (a full ``rank()`` costs ten times as much)."""

    service: Service
    usable: tuple[tuple[Target, float, float, float], ...]

    def order(self, point: Point | None) -> tuple[str, ...] | None:
        """The target ids in ``rank()``'s order for a client of this stage's country at
        ``point``; None when near-equal targets would be spread by the client's network
        (then only ``rank()`` can say). The same sums as ``_assess`` and ``_price``."""
        service = self.service
        origin = point or service.default_location
        costs = sorted((((_distance(target, service, origin) or 0.0) + border) / divisor
                        + latency_km / divisor, target.id)
                       for target, border, divisor, latency_km in self.usable)
        limit = costs[0][0] * service.spread + service.spread_km + 1e-9
        if len(costs) > 1 and costs[1][0] <= limit:
            return None
        return tuple(target_id for _, target_id in costs)


def stage(service: Service, country: str | None, health: HealthView, want: Want, *,
          latency: LatencyView = no_latency, admin: OverrideView = no_overrides
          ) -> Stage | None:
    """``rank()`` up to the client's point, for clients in ``country`` (no file asked
    for). None when no target is usable: what all-down means is ``rank()``'s to say."""
    usable = [t for t in service.targets
              if _exclusion(t, country, health(t.id), want, None, admin(t.id)) is None]
    if not usable:
        return None
    waits = {t.id: latency(t.id) for t in usable}
    fastest = min((w for w in waits.values() if w is not None), default=None)
    return Stage(service, tuple(
        (t, _border_km(t, service, country), t.weight / 100,
         _latency_km(waits[t.id], fastest, service.km_per_ms)) for t in usable))


def _latency_km(wait: int | None, fastest: int | None, km_per_ms: float) -> float:
    """What a target that waits ``wait`` ms pays when the fastest usable one waits
    ``fastest`` (nothing without figures, nothing for the fastest)."""
    if wait is None or fastest is None or wait <= fastest:
        return 0.0
    return km_per_ms * (wait - fastest)


def staged(snapshot: Snapshot, service: Service, country: str | None, want: Want
           ) -> Stage | None:
    """``stage()`` with all that one health snapshot knows, as ``decide()`` for ``rank()``."""
    name = service.name
    return stage(service, country, snapshot.view(name), want,
                 latency=snapshot.latency(name), admin=snapshot.overrides(name))


def _assess(target: Target, service: Service, client: Location, origin: Point | None,
            status: Status, want: Want, file: Availability | None, admin: Override,
            latency_ms: int | None) -> Candidate:
    distance = _distance(target, service, origin)
    border = _border_km(target, service, client.country)
    cost = ((distance or 0.0) + border) / (target.weight / 100)
    excluded = _exclusion(target, client.country, status, want, file, admin)
    return Candidate(target, status, distance, border, cost, excluded, file=file,
                     latency_ms=latency_ms, admin=admin)


def _price(c: Candidate, fastest: int, km_per_ms: float) -> Candidate:
    """Add the latency term: a target that waits longer than the fastest usable one pays
    ``km_per_ms`` per millisecond more; the fastest, and targets with no figure, pay none."""
    extra = _latency_km(c.latency_ms, fastest, km_per_ms)
    if not extra:
        return c
    return Candidate(c.target, c.status, c.distance_km, c.border_km,
                     c.cost + extra / (c.target.weight / 100), c.excluded, c.standing, c.file,
                     c.latency_ms, extra, c.admin)


def _distance(target: Target, service: Service, origin: Point | None) -> float | None:
    if origin is None:
        return None
    if target.location is None:
        return service.anycast_km
    return distance_km(origin, target.location)


def _border_km(target: Target, service: Service, country: str | None) -> float:
    crosses = country and target.country and country != target.country
    return service.cross_border_km if crosses else 0.0


def _exclusion(target: Target, country: str | None, status: Status, want: Want,
               file: Availability | None, admin: Override) -> Exclusion | None:
    if not target.enabled:
        return Exclusion.DISABLED
    if want is Want.URL and target.url is None:
        return Exclusion.NO_URL
    if want in (Want.IPV4, Want.IPV6) and not target.addresses_of(4 if want is Want.IPV4 else 6):
        return Exclusion.NO_ADDRESS
    if target.only_countries and country not in target.only_countries:
        return Exclusion.NOT_FOR_COUNTRY
    if country in target.exclude_countries:
        return Exclusion.COUNTRY_EXCLUDED
    state = effective(status, admin)
    if state is Effective.DRAINED:
        return Exclusion.DRAINED
    if state is Effective.ADMIN_DOWN:
        return Exclusion.ADMIN_DOWN
    if file in _FILE_EXCLUSIONS:
        return _FILE_EXCLUSIONS[file]
    if state is Effective.DOWN:
        return Exclusion.DOWN
    if file is Availability.UNKNOWN:
        return Exclusion.UNVERIFIED
    return None


def _when_all_down(service: Service, assessed: list[Candidate]) -> list[Candidate]:
    """Only health is overridden: a target excluded for any other reason stays out."""
    down = [c for c in assessed if c.excluded is Exclusion.DOWN]
    if service.on_all_down is OnAllDown.FALLBACK:
        return [c for c in down if c.target.id in service.fallback]
    if service.on_all_down is OnAllDown.ALL:
        return down
    return []


def _order(usable: list[Candidate], service: Service, key: bytes) -> list[Candidate]:
    limit = _near_limit(usable, service)
    near = [c for c in usable if c.cost <= limit]
    rest = sorted((c for c in usable if c.cost > limit), key=lambda c: (c.cost, c.target.id))
    if len(near) > 1:
        near.sort(key=lambda c: _rendezvous(key, c.target), reverse=True)
        first = [c.standing_as(Standing.SPREAD) for c in near]
    else:
        first = [near[0].standing_as(Standing.NEAREST)]
    return first + [c.standing_as(Standing.BY_COST) for c in rest]


class FileChecker(Protocol):
    """What checks files on mirrors for a request (``router.watch.inventory.Inventory``):
    the HTTP face is handed one and never imports the watching side."""

    async def settle(self, service: Service, file: CatalogFile,
                     decide: Callable[[], Decision]) -> Decision:
        """Decide; wait a bounded time for the checks that could change the decision."""

    def check_due(self, service: Service, file: CatalogFile) -> None:
        """Start, in the background, every check of ``file`` that has come due."""


def worth_waiting_for(decision: Decision) -> tuple[str, ...]:
    """Targets not yet checked for the file that would rank first once known to have it.

    They cost no more than the near-equal limit of the best usable target (every one of
    them when nothing is usable): a request may wait a little for their checks.
    """
    unverified = [c for c in decision.excluded if c.excluded is Exclusion.UNVERIFIED]
    unverified += [c for c in decision.ranked if c.standing is Standing.UNVERIFIED]
    usable = [c for c in decision.ranked if c.standing is not Standing.UNVERIFIED]
    if not usable:
        return tuple(c.target.id for c in unverified)
    limit = _near_limit(usable, decision.service)
    return tuple(c.target.id for c in unverified if c.cost <= limit)


def _near_limit(usable: list[Candidate], service: Service) -> float:
    """The highest cost that is near-equal to the best: ``best x spread + spread_km``."""
    return min(c.cost for c in usable) * service.spread + service.spread_km + 1e-9


def _rendezvous(key: bytes, target: Target) -> float:
    """Weighted rendezvous (highest random weight) score: ``-weight / ln(u)``, u in (0, 1)."""
    digest = hashlib.blake2b(key + b"\0" + target.id.encode(), digest_size=8).digest()
    # 53 bits, so that u stays below 1.0 as a float (2**64 / (2**64 + 1) rounds to 1.0).
    u = ((int.from_bytes(digest, "big") >> 11) + 1) / (2**53 + 1)
    return -target.weight / math.log(u)


def _ttl(service: Service, degraded: bool) -> int:
    """A degraded answer lives no longer than a probe interval, so recovery shows quickly."""
    if degraded:
        return min(service.ttl, max(1, int(service.health.interval)))
    return service.ttl


def describe(decision: Decision) -> dict[str, Any]:
    """The decision as plain data, for ``explain --json`` and the HTTP mirror list."""
    client = decision.client
    chosen = {t.id for t in decision.chosen()}
    rows = [_row(c, i + 1, c.target.id in chosen) for i, c in enumerate(decision.ranked)]
    rows += [_row(c, None, False) for c in decision.excluded]
    origin = decision.origin
    return {
        "service": decision.service.name,
        "client": {
            "network": str(client.network),
            "country": client.country,
            "continent": client.continent,
            "city": client.city,
            "lat": client.point.lat if client.point else None,
            "lon": client.point.lon if client.point else None,
        },
        "measured_from": {"lat": origin.lat, "lon": origin.lon} if origin else None,
        "default_location_used": client.point is None and origin is not None,
        "degraded": decision.degraded,
        "ttl": decision.ttl,
        "candidates": rows,
    }


def _row(c: Candidate, position: int | None, chosen: bool) -> dict[str, Any]:
    t = c.target
    return {
        "rank": position,
        "id": t.id,
        "chosen": chosen,
        "state": c.status.value,
        "country": t.country,
        "location": "anycast" if t.location is None else {"lat": t.location.lat,
                                                           "lon": t.location.lon},
        "distance_km": None if c.distance_km is None else round(c.distance_km, 1),
        "border_km": round(c.border_km, 1),
        "latency_ms": c.latency_ms,
        "latency_km": round(c.latency_km, 1),
        "admin": c.admin.value,
        "weight": t.weight,
        "cost": round(c.cost, 1),
        "excluded": c.excluded is not None,
        "reason": c.reason,
        "file": c.file.value if c.file else None,
        "url": t.url,
        "addresses": [str(a) for a in t.addresses],
    }
