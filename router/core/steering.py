"""The one decision engine: rank a service's targets for one client. Pure and synchronous.

``rank()`` lines the targets up for the client's kind (``router.core.scoring.line_up``:
exclusions and cost terms), has them ranked from the client's point
(``Lineup.ranking``: the one cost formula, the near-equal best spread by hashing the
client's network) and adds the explanations: a ``Candidate`` per target with its
figures, its ``Exclusion`` or its ``Standing``, and the ``Decision`` with its TTL and
whether it is degraded (every target down, served by ``on_all_down``).

For an HTTP request for a file a catalog lists, ``files`` tells each target's availability
of that file (``router.core.availability``): a target known to lack it, to have a copy of the
wrong size, or stale for a file that new is excluded, and so is one not yet checked
(UNVERIFIED). Only when nothing else is usable are the unverified targets ranked.

Cost = (great-circle km + ``cross_border_km`` when the client's and the target's countries
differ + the latency term) / (weight / 100) (``scoring.cost``). An anycast target is
``anycast_km`` from everyone. A client that GeoIP cannot place is put at the service's
``default_location``; without one, distance plays no part and only latency, weight and
hashing order the targets.

Operator overrides (``router.core.overrides``): ``drain`` and ``down`` exclude a target (down
ones are not served even when every target is down, drained ones not even unverified);
``up`` makes a failing health check not count. Latency figures arrive already quantized
(``router.core.health``), so a decision changes only when the health snapshot's generation does.

DNS, HTTP and ``explain`` all call ``rank()`` (or ``lined_up()`` then
``Lineup.decide``); none of them scores on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any, Protocol

from router.core import audience, scoring
from router.core.audience import EVERYONE, Rules, Scope
from router.core.availability import Availability, FileView
from router.core.capacity import Pressure
from router.core.catalog import CatalogFile
from router.core.config import Kind, Service, Target
from router.core.earth import Point
from router.core.geo import Location
from router.core.health import Effective, Snapshot, Status, address_id, effective
from router.core.ip import IPAddress
from router.core.memo import Memo
from router.core.overrides import Override
from router.core.scoring import (
    LACKING,
    Costed,
    Exclusion,
    HealthView,
    LatencyView,
    Lineup,
    OverrideView,
    Standing,
    Want,
    Whom,
    kind,
    line_up,
    near_limit,
    no_latency,
    no_overrides,
)

__all__ = ["FORCED", "Candidate", "Decision", "Exclusion", "FileChecker", "HealthView",
           "LatencyView", "OverrideView", "Standing", "Want", "answer_addresses", "decide",
           "describe", "kept_lineup",
           "lined_up", "rank", "seen_for", "worth_waiting_for"]

FORCED = "; forced up by the operator"  # added to the reason of a target served despite health


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
    rule: str | None = None  # the network or AS rule that routed, preferred or excluded it
    detail: str | None = None  # shed or ramping: "shed (load 95% of capacity)"

    @property
    def reason(self) -> str:
        if self.detail is not None:
            return self.detail
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
    region: str | None = None  # the fleet region whose verdicts it read (None: this node's)

    def chosen(self, count: int | None = None) -> tuple[Target, ...]:
        n = self.service.answers if count is None else count
        return tuple(c.target for c in self.ranked[:n])

    @property
    def lacking(self) -> bool:
        """No target can serve, and it is the file: some target that could have taken it
        is known to lack it (or to be behind), none is up and unchecked. A client
        should hear "not found" (the go command then asks the next proxy), not "try
        again later"."""
        return not self.ranked and any(c.excluded in LACKING for c in self.excluded)


def rank(service: Service, client: Location, health: HealthView, want: Want, *,
         files: FileView | None = None, latency: LatencyView = no_latency,
         admin: OverrideView = no_overrides, scope: Scope = EVERYONE) -> Decision:
    """Rank ``service``'s targets for ``client``; the hash key is the client's network.

    ``files``: each target's availability of the file asked for (HTTP, catalog listed).
    ``latency`` and ``admin``: each target's published wait and the operator's override.
    ``scope``: the network and AS rules the client matched (``core.audience.scope``).
    """
    return decision(line_up(service, whom(client, scope), health, want, files=files,
                            latency=latency, admin=admin), client)


def whom(client: Location, scope: Scope = EVERYONE) -> Whom:
    """What a ranking knows of ``client`` before its point."""
    return Whom(client.country, client.continent, scope)


def decide(snapshot: Snapshot, service: Service, client: Location, want: Want, *,
           files: FileView | None = None, barred: Collection[str] = (),
           scope: Scope = EVERYONE, avoided: Collection[str] = ()) -> Decision:
    """``rank()`` with all that one health snapshot knows: status, latency, overrides
    (``barred``: targets corrupt for the service, from the availability ledger;
    ``avoided``: the targets the client's network avoids, unless that leaves none)."""
    local = seen_for(snapshot, service, client)
    made = None
    if avoided:
        made = decision(lined_up(local, service, whom(client, scope), want, files=files,
                                 barred=barred, avoided=avoided), client)
    if made is None or not made.ranked:
        made = decision(lined_up(local, service, whom(client, scope), want, files=files,
                                 barred=barred), client)
    return made if local.region is None else replace(made, region=local.region)


def seen_for(snapshot: Snapshot, service: Service, client: Location) -> Snapshot:
    """``snapshot`` as the fleet region ``client`` is judged from sees it: the one
    nearest the client (or the service's ``default_location``); itself with one region."""
    if not snapshot.centres:
        return snapshot
    return snapshot.from_point(client.point or service.default_location)


def lined_up(snapshot: Snapshot, service: Service, client: Whom, want: Want, *,
             files: FileView | None = None, barred: Collection[str] = (),
             avoided: Collection[str] = ()) -> Lineup:
    """``scoring.line_up()`` with all that one health snapshot knows: what a face keeps
    per (service, generation, kind of client) to rank the clients of a new place from."""
    name = service.name
    view = snapshot.view(name)
    return line_up(service, client, view, want, files=files,
                   latency=snapshot.latency(name), admin=snapshot.overrides(name),
                   addresses=view if service.health.kind is Kind.ADDRESSES else None,
                   barred=barred, avoided=avoided, keep=snapshot.kept(name))


def kept_lineup(lineups: Memo[tuple[object, ...], Lineup], base: tuple[object, ...],
                snapshot: Snapshot, service: Service, client: Location, rules: Rules,
                want: Want, *, barred: Collection[str] = ()) -> Lineup:
    """The line-up for ``client``'s kind (``scoring.kind``: its country and continent
    where they matter, and what its rules do) under ``base`` (what else a face keys on:
    the service, generations, want), from ``lineups``, or made (the client's ``rules``
    read only then) and kept: both faces rank a new place from one."""
    local = seen_for(snapshot, service, client)
    at = (*base, local.region, *kind(service, client.country, client.continent),
          client.effect)
    found = lineups.get(at)
    if found is None:
        who = whom(client, audience.scope(rules, service, client))
        found = lineups.put(at, lined_up(local, service, who, want, barred=barred))
    return found


def answer_addresses(snapshot: Snapshot, service: Service, target: Target, version: int
                     ) -> tuple[IPAddress, ...]:
    """The addresses of ``version`` a DNS answer carries for a chosen target: those not
    failing their own check, or all of them when every one does (the target was chosen
    all the same: forced up by the operator, or every target down)."""
    own = target.addresses_of(version)
    if service.health.kind is not Kind.ADDRESSES:
        return own  # checked as one: no address has a state of its own
    health = snapshot.view(service.name)
    live = tuple(a for a in own if health(address_id(target.id, a)) is not Status.DOWN)
    return live or own


def decision(lineup: Lineup, client: Location, costed: list[Costed] | None = None,
             head: int | None = None) -> Decision:
    """The ranking of ``lineup`` for ``client``, with every target's explanation
    (``costed``: ``lineup.costs()`` for the client's point, when made already). With
    ``head`` (a DNS answer's count), only the first ``head`` ranked and no excluded ones:
    what an answer needs, at a cost that does not grow with the number of targets."""
    service = lineup.service
    origin = lineup.origin(client.point)
    if costed is None:
        costed = lineup.costs(client.point, head)
    placed = lineup.ranking(costed, client.key)
    hashed = any(standing is Standing.SPREAD for *_, standing in placed) \
        or lineup.pressed(costed, head)
    if head is not None:
        placed = placed[:head]
    ranked = [_candidate(e, c, km, lineup.standing or standing) for e, c, km, standing in placed]
    chosen = {c.target.id for c in ranked}
    dropped = lineup.unkept(client.key, costed) if lineup.keep and head is None else {}
    excluded = () if head is not None else tuple(
        _candidate(e, _cost(e, service, origin), _km(e, service, origin), None,
                   dropped.get(e.target.id))
        for e in lineup.entrants if e.target.id not in chosen)
    return Decision(service, client, origin, tuple(ranked), excluded, lineup.degraded,
                    _ttl(service, lineup.degraded), hashed)


def _candidate(e: scoring.Entrant, cost: float, km: float | None,
               standing: Standing | None, pressed: Pressure | None = None) -> Candidate:
    if pressed is not None and e.excluded is None and standing is None:
        why = pressed.why()
        return Candidate(e.target, e.status, km, e.border_km, cost,
                         Exclusion.RAMPING if why.startswith("ramping") else Exclusion.SHED,
                         None, e.file, e.latency_ms, e.latency_km, e.admin, e.rule, why)
    return Candidate(e.target, e.status, km, e.border_km, cost,
                     e.excluded if standing is None else None, standing, e.file,
                     e.latency_ms, e.latency_km, e.admin, e.rule)


def _km(e: scoring.Entrant, service: Service, origin: Point | None) -> float | None:
    return scoring.distance(e.target, service, origin)


def _cost(e: scoring.Entrant, service: Service, origin: Point | None) -> float:
    return scoring.cost(e, _km(e, service, origin))


def _ttl(service: Service, degraded: bool) -> int:
    """A degraded answer lives no longer than a probe interval, so recovery shows quickly."""
    if degraded:
        return min(service.ttl, max(1, int(service.health.interval)))
    return service.ttl


class FileChecker(Protocol):
    """What checks files on mirrors for a request (``router.watch.inventory.Inventory``):
    the HTTP face is handed one and never imports the watching side."""

    async def settle(self, service: Service, file: CatalogFile,
                     decide: Callable[[], Decision]) -> Decision:
        """Decide; wait a bounded time for the checks that could change the decision."""

    def check_due(self, service: Service, file: CatalogFile) -> None:
        """Start, in the background, every check of ``file`` that has come due."""

    def size_of(self, service: Service, path: str, url: str) -> int | None:
        """The size of a file no catalog lists, once a HEAD of ``url`` told it (None:
        not yet; the HEAD is started in the background)."""


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
    limit = near_limit(min(c.cost for c in usable), decision.service)
    return tuple(c.target.id for c in unverified if c.cost <= limit)


def describe(decision: Decision) -> dict[str, Any]:
    """The decision as plain data, for ``explain --json`` and the HTTP mirror list."""
    client = decision.client
    chosen = {t.id for t in decision.chosen()}
    rows = [_row(c, i + 1, c.target.id in chosen) for i, c in enumerate(decision.ranked)]
    rows += [_row(c, None, False) for c in decision.excluded]
    origin, service = decision.origin, decision.service
    return {
        "service": service.name,
        "settings": {"spread": service.spread, "cross_border_km": service.cross_border_km,
                     "anycast_km": service.anycast_km, "km_per_ms": service.km_per_ms,
                     "answers": service.answers, "on_all_down": str(service.on_all_down)},
        "client": {
            "network": str(client.network),
            "country": client.country,
            "continent": client.continent,
            "city": client.city,
            "lat": client.point.lat if client.point else None,
            "lon": client.point.lon if client.point else None,
            "asn": client.asn,
            "region": decision.region,
            "rules": sorted(r.basis for r in client.matched if r.service == service.name),
        },
        "measured_from": {"lat": origin.lat, "lon": origin.lon} if origin else None,
        "default_location_used": client.point is None and origin is not None,
        "degraded": decision.degraded,
        "ttl": decision.ttl,
        "candidates": rows,
    }


def describe_answer(decision: Decision, want: Want, snapshot: Snapshot | None = None
                    ) -> dict[str, Any]:
    """``describe()`` of a DNS decision, with the addresses its answer carries (with a
    live ``snapshot``, as ``answer_addresses()`` leaves them: the server's answer)."""
    data = describe(decision)
    version, service = (6 if want is Want.IPV6 else 4), decision.service
    if snapshot is not None:
        snapshot = seen_for(snapshot, service, decision.client)
    data["answer"] = [str(a) for t in decision.chosen() for a in (
        t.addresses_of(version) if snapshot is None
        else answer_addresses(snapshot, service, t, version))]
    return data


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
        "exclusion": c.excluded.name.lower() if c.excluded is not None else None,
        "reason": c.reason,
        "rule": c.rule,
        "file": c.file.value if c.file else None,
        "url": t.url,
        "addresses": [str(a) for a in t.addresses],
    }
