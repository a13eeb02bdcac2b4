"""The one scorer: what each target costs a client, and the order that follows. Pure.

A ranking is made in two steps, and every path (``steering.rank``, the HTTP face's new
places, the DNS face) takes both:

1. ``line_up()``: everything that does not depend on where the client stands, for one
   *kind* of client (its country): each target's exclusion, if any (``exclusion()``:
   disabled, address family, country rules, the operator, the file, health), and its
   cost terms (``Entrant``: the border km, the latency km, the weight). Which targets
   take part is settled here: the usable ones, or when nothing is usable, the targets
   not yet known to have the file, or (all down) what ``on_all_down`` serves.
2. ``Lineup.costs(point)``: each entrant's distance from the client and its cost,
   ``cost()``, the one formula, cheapest first (with ``head``, only as many as the first
   ``head`` places of the ranking need: a service of many targets is walked nearest
   first, ``core.nearest``, and the walk stops where no target left can be cheap
   enough, so a new client network costs the same with 100 targets or 10,000);
   ``Lineup.ranking()`` orders them: the near-equal best (``near_limit()``) by weighted
   rendezvous hashing on the client's network, then the rest by cost.
   ``Lineup.order()`` reads the same costs for a client whose ranking will not hash on
   its network (None where it would): the HTTP face finds the shared decision of a new
   place with it, without building a ``Candidate``.

A new cost term is a field of ``Entrant`` set in ``line_up()`` (or a figure
``costs()`` reads), added in ``cost()``; a new exclusion is an ``Exclusion`` and a rule
in ``exclusion()``.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from router.core.audience import EVERYONE, Scope
from router.core.availability import Availability, FileView
from router.core.capacity import Pressure
from router.core.config import OnAllDown, Service, Target
from router.core.earth import Point, distance_km
from router.core.health import Effective, Status, address_id, effective
from router.core.memo import Memo
from router.core.nearest import Nearest
from router.core.overrides import Override

INDEXED = 64  # targets taking part from which costs(head=...) walks nearest first


class Want(Enum):
    """What the asker needs from a target."""

    IPV4 = "A"  # an IPv4 address (DNS A)
    IPV6 = "AAAA"  # an IPv6 address (DNS AAAA)
    URL = "url"  # a base URL (HTTP redirect)
    SECURE_URL = "https url"  # an https:// base URL (the client came over HTTPS)
    ANY = "any"  # nothing in particular (explain without a type)


class Exclusion(Enum):
    """Why a target cannot be chosen for this request."""

    DISABLED = "disabled in the config (enabled = false)"
    NO_ADDRESS = "has no address of the asked family"
    NO_HEALTHY_A = "no healthy A: every IPv4 address of it fails its check"
    NO_HEALTHY_AAAA = "no healthy AAAA: every IPv6 address of it fails its check"
    NO_URL = "has no url, so it cannot take HTTP redirects"
    INSECURE = "an http:// mirror, and the client came over HTTPS (allow_downgrade = false)"
    NOT_FOR_COUNTRY = "the client's country is not in only_countries"
    COUNTRY_EXCLUDED = "the client's country is in exclude_countries"
    NOT_FOR_CONTINENT = "the client's continent is not in only_continents"
    CONTINENT_EXCLUDED = "the client's continent is in exclude_continents"
    NOT_FOR_NETWORK = "serves only some networks or ASes, and the client is in none of them"
    DRAINED = "drained by the operator: takes no new clients"
    ADMIN_DOWN = "marked down by the operator"
    STALE = "stale: lacks the newest release, so not used for files that new"
    BEHIND = "behind: its answer for this path is older than the freshest mirror's"
    MISSING_FILE = "known not to have this file"
    WRONG_SIZE = "its copy of this file has the wrong size"
    CORRUPT = "its copy of this file is corrupt: fetched whole, it did not match the digest"
    CORRUPT_TARGET = "corrupt: several of its copies did not match their digests"
    DOWN = "health check failing"
    UNVERIFIED = "not yet known to have this file"
    AVOIDED = "avoided for this client network: its clients came back for the same file"
    SHED = "shed for load: over its capacity, it keeps only some client networks"
    RAMPING = "ramping up after recovery (slow_start): it keeps only some client networks"


class Standing(Enum):
    """Why a usable target stands where it does in the ranking."""

    ROUTED = "a route sends the client's network here first, in its order"
    PREFERRED = "preferred for the client's network or AS (networks, asns), whatever the cost"
    NEAREST = "lowest cost"
    SPREAD = "near-equal to the best (within spread), ordered by hashing the client network"
    BY_COST = "ranked by cost"
    FALLBACK = "all targets down: a fallback target, served regardless of health"
    FAIL_OPEN = "all targets down: served anyway (on_all_down = all)"
    UNVERIFIED = "no target is known to have this file: not yet checked, served anyway"


# Availability of a file → the exclusion it causes (PRESENT and ORIGIN cause none).
_FILE_EXCLUSIONS = {
    Availability.STALE: Exclusion.STALE,
    Availability.MISSING: Exclusion.MISSING_FILE,
    Availability.WRONG_SIZE: Exclusion.WRONG_SIZE,
    Availability.BEHIND: Exclusion.BEHIND,
    Availability.CORRUPT: Exclusion.CORRUPT,
}
# The exclusions that say a target lacks the file (not that it is down or barred).
LACKING = frozenset(_FILE_EXCLUSIONS.values())

# What steering reads of the state, per target id (built once per request from one
# health snapshot, so one decision sees one consistent state).
HealthView = Callable[[str], Status]
LatencyView = Callable[[str], int | None]  # target id → published wait in ms
OverrideView = Callable[[str], Override]  # target id → the operator's override


def no_latency(_target_id: str) -> int | None:
    return None


def no_overrides(_target_id: str) -> Override:
    return Override.AUTO


@dataclass(frozen=True, slots=True)
class Entrant:
    """One target as a kind of client sees it before its point is known: its state, why
    it is excluded (if it is), and the cost terms that do not depend on the distance."""

    target: Target
    status: Status
    admin: Override
    file: Availability | None  # of the file asked for, when a catalog lists it
    latency_ms: int | None  # the server's wait as published by health (None: none yet)
    excluded: Exclusion | None
    border_km: float  # cross_border_km when the client's and the target's countries differ
    latency_km: float = 0.0  # km_per_ms x (latency_ms - the fastest taking part's)
    # Before any cost: 0 routed (``order``: its place in the route), 1 preferred, 2 the
    # rest (``core.audience``); ``rule`` the rule that routed, preferred or excluded it.
    tier: int = 2
    order: int = 0
    rule: str | None = None


def cost(entrant: Entrant, distance: float | None) -> float:
    """The one cost formula: (great-circle km + border km + latency km) / (weight / 100).
    No distance (a client that cannot be placed, no default location): the terms alone."""
    return ((distance or 0.0) + entrant.border_km + entrant.latency_km) \
        / (entrant.target.weight / 100)


def near_limit(best: float, service: Service) -> float:
    """The highest cost that is near-equal to ``best``: ``best x spread + spread_km``."""
    return best * service.spread + service.spread_km + 1e-9


def distance(target: Target, service: Service, origin: Point | None) -> float | None:
    """Great-circle km from ``origin`` (None: no place to measure from); an anycast
    target is ``anycast_km`` from everyone."""
    if origin is None:
        return None
    if target.location is None:
        return service.anycast_km
    return distance_km(origin, target.location)


Costed = tuple[float, float | None, Entrant]  # cost, distance km, the entrant
Placed = tuple[Entrant, float, float | None, Standing]  # ranked: cost, distance, standing


@dataclass(frozen=True, slots=True)
class Lineup:
    """A service's targets lined up for one kind of client (``line_up()``): ``entrants``
    every one, ``taking_part`` those the ranking orders; ``standing`` set when they take
    part for want of better (unverified, fallback, fail open) and ``degraded`` when
    health emptied the field."""

    service: Service
    entrants: tuple[Entrant, ...]
    taking_part: tuple[Entrant, ...]
    standing: Standing | None = None
    degraded: bool = False
    # for costs(head=...), with INDEXED or more taking part: those of the last tier with
    # a location (walked nearest first), the others, and the highest weight / 100 of
    # the located ones (no cost is lower than distance / it)
    located: Mapping[str, Entrant] | None = None
    others: tuple[Entrant, ...] = ()
    top_weight: float = 1.0
    # the targets that keep only some client networks (core.capacity): shed for load,
    # or ramping up; a network one does not keep ranks as if it were not there
    keep: Mapping[str, Pressure] = field(default_factory=dict)

    def origin(self, point: Point | None) -> Point | None:
        """Where distance is measured from for a client at ``point``: there, or (a client
        GeoIP cannot place) the service's ``default_location``, or nowhere."""
        return point or self.service.default_location

    def costs(self, point: Point | None, head: int | None = None) -> list[Costed]:
        """Every entrant taking part, with its cost for a client at ``point``: routed ones
        first (in the route's order), then preferred ones, then the rest, each cheapest
        first. With ``head``: at least those that the first ``head`` places of
        ``ranking()`` can be made of (every routed and preferred one, every unlocated
        one, the near-equal best and the ``head`` cheapest of the rest)."""
        service, origin = self.service, self.origin(point)
        if head is not None and self.located is not None and origin is not None:
            return self._nearest(origin, head + len(self.keep))
        out = []
        for e in self.taking_part:
            km = distance(e.target, service, origin)
            out.append((cost(e, km), km, e))
        out.sort(key=_by_cost)
        return out

    def _nearest(self, origin: Point, head: int) -> list[Costed]:
        service, located = self.service, self.located
        assert located is not None
        out = []
        for e in self.others:
            km = distance(e.target, service, origin)
            out.append((cost(e, km), km, e))
        found: list[float] = []  # the located ones' costs so far, sorted
        for chord, target in index(service).tree.nearest_first(origin):
            entrant = located.get(target.id)
            if entrant is None:
                continue
            if len(found) >= head and chord / self.top_weight > max(
                    found[head - 1], near_limit(found[0], service)) + 1e-6:
                break  # nothing further can cost less than what the head needs
            km = distance(target, service, origin)  # the one formula's km, to the last bit
            c = cost(entrant, km)
            bisect.insort(found, c)
            out.append((c, km, entrant))
        out.sort(key=_by_cost)
        return out

    def order(self, costed: list[Costed]) -> tuple[str, ...] | None:
        """The target ids in ``ranking()``'s order (``costed``: ``costs()`` for the
        client's point), when that order does not hash on the client's network; None
        where it would (near-equal targets are spread by network), or when nothing
        usable takes part."""
        if self.standing is not None or not costed:
            return None
        if len(self._heads(costed)[1]) > 1 or self.pressed(costed):
            return None
        return tuple(e.target.id for _, _, e in costed)

    def ranking(self, costed: list[Costed], key: bytes) -> list[Placed]:
        """The entrants taking part in order (``costed``: ``costs()`` for the client's
        point) for a client whose network is ``key``: routed ones in their route's
        order; then the near-equal best (of the preferred, if any) by weighted
        rendezvous on ``key``; then by cost. A target that does not keep the network
        (``keep``) is left out, unless that leaves none."""
        if self.keep:
            dropped = self.unkept(key, costed)
            kept = [c for c in costed if c[2].target.id not in dropped]
            costed = kept or costed
        routed, near = self._heads(costed)
        placed = [(e, c, km, Standing.ROUTED) for c, km, e in routed]
        rest = costed[len(routed) + len(near):]
        if len(near) == 1:
            c, km, e = near[0]
            placed.append((e, c, km, Standing.PREFERRED if e.tier == 1 else Standing.NEAREST))
        else:
            near.sort(key=lambda c: rendezvous(key, c[2].target), reverse=True)
            placed += [(e, c, km, Standing.SPREAD) for c, km, e in near]
        return placed + [(e, c, km, Standing.PREFERRED if e.tier == 1 else Standing.BY_COST)
                         for c, km, e in rest]

    def unkept(self, key: bytes, costed: list[Costed]) -> dict[str, Pressure]:
        """The targets that do not keep the client network ``key`` (``core.capacity``):
        each judged by its regret: what the next target in ``costed`` that is not
        pressed (not in ``keep``) costs more, infinite when there is none."""
        out = {}
        free = math.inf  # the cost of the cheapest target after this one that is not pressed
        for c, _km, e in reversed(costed):
            p = self.keep.get(e.target.id)
            if p is None:
                free = c
            elif not p.keeps(key, e.target.id, free - c):
                out[e.target.id] = p
        return out

    def pressed(self, costed: list[Costed], head: int | None = None) -> bool:
        """Whether the first ``head`` places may depend on the network through ``keep``."""
        keep = self.keep
        return bool(keep) and any(c[2].target.id in keep
                                  for c in costed[:None if head is None else head + len(keep)])

    def _heads(self, costed: list[Costed]) -> tuple[list[Costed], list[Costed]]:
        """The routed entrants, and after them the near-equal best of the first tier
        left (``best x spread + spread_km``)."""
        routed = [c for c in costed if c[2].tier == 0]
        rest = costed[len(routed):]
        if not rest:
            return routed, []
        tier, limit = rest[0][2].tier, near_limit(rest[0][0], self.service)
        near = []
        for c in rest:
            if c[2].tier != tier or c[0] > limit:
                break
            near.append(c)
        return routed, near


def _by_cost(c: Costed) -> tuple[int, int, float, str]:
    e = c[2]
    return e.tier, e.order, c[0], e.target.id


class Whom(NamedTuple):
    """What a ranking knows of its client before its point: country, continent, and the
    network and AS rules its network matched (``core.audience.Scope``)."""

    country: str | None
    continent: str | None = None
    scope: Scope = EVERYONE


def line_up(service: Service, whom: Whom, health: HealthView, want: Want, *,
            files: FileView | None = None, latency: LatencyView = no_latency,
            admin: OverrideView = no_overrides, addresses: HealthView | None = None,
            barred: Collection[str] = (), avoided: Collection[str] = (),
            keep: Mapping[str, Pressure] | None = None) -> Lineup:
    """``service``'s targets for a client ``whom``: who is excluded and why, who
    takes part, and every entrant's cost terms (``files``: each target's availability of
    the file asked for; ``addresses``: the health of each address checked on its own,
    by ``health.address_id``; ``barred``: targets corrupt for the service; ``avoided``:
    targets the client's network avoids, ``core.retries``; ``keep``: the targets that
    keep only some client networks, ``core.capacity``)."""
    draining = {t for t, p in keep.items() if p.draining} if keep else set()
    entrants = [_entrant(t, service, whom, health(t.id), want,
                         files(t.id) if files else None, admin(t.id), latency(t.id),
                         family_down(t, want, addresses), t.id in draining)
                if t.id not in barred and t.id not in avoided else
                Entrant(t, health(t.id), admin(t.id), None, latency(t.id),
                        Exclusion.CORRUPT_TARGET if t.id in barred else Exclusion.AVOIDED, 0.0)
                for t in service.targets]
    usable = [e for e in entrants if e.excluded is None]
    # Nothing known to have the file, not even an origin: the unchecked healthy targets.
    unverified = [e for e in entrants if e.excluded is Exclusion.UNVERIFIED]
    standing = Standing.UNVERIFIED if unverified and not usable else None
    usable = usable or unverified
    # Degraded only when health emptied the list, not when static rules did.
    degraded = not usable and any(e.excluded is Exclusion.DOWN for e in entrants)
    if degraded:
        usable = _when_all_down(service, entrants)
        standing = Standing.FALLBACK if service.on_all_down is OnAllDown.FALLBACK \
            else Standing.FAIL_OPEN
    fastest = min((e.latency_ms for e in usable if e.latency_ms is not None), default=None)
    if fastest is not None:  # no figures (not probed yet, or --no-probe): nothing to charge
        priced = {e.target.id: _priced(e, fastest, service.km_per_ms) for e in entrants}
        entrants = list(priced.values())
        usable = [priced[e.target.id] for e in usable]
    return _made(service, entrants, usable, standing, degraded, keep)


def _made(service: Service, entrants: list[Entrant], usable: list[Entrant],
          standing: Standing | None, degraded: bool, keep: Mapping[str, Pressure] | None
          ) -> Lineup:
    """The line-up, with a nearest-first index when many take part."""
    kept = {e.target.id: keep[e.target.id] for e in usable if e.target.id in keep} \
        if keep else {}
    if len(usable) < INDEXED:
        return Lineup(service, tuple(entrants), tuple(usable), standing, degraded, keep=kept)
    located = {e.target.id: e for e in usable if e.tier == 2 and e.target.location is not None}
    return Lineup(service, tuple(entrants), tuple(usable), standing, degraded, located,
                  tuple(e for e in usable if e.target.id not in located),
                  max((e.target.weight for e in located.values()), default=100) / 100, kept)


@dataclass(frozen=True, slots=True)
class Index:
    """What is worked out once per service of a config: its located targets nearest
    first (``core.nearest``), and whether a line-up depends on the client's country or
    continent at all (a rule by country or continent, or ``cross_border_km``): when not,
    one line-up serves clients of every country."""

    tree: Nearest[Target]
    by_place: bool


_INDEXES: Memo[int, tuple[Service, Index]] = Memo(64)  # id(service) -> (it, its index)


def index(service: Service) -> Index:
    """``service``'s ``Index``, built at first use (kept for the last few services)."""
    found = _INDEXES.get(id(service))
    if found is None or found[0] is not service:
        targets = service.targets
        by_place = service.cross_border_km > 0 or any(
            t.only_countries or t.exclude_countries or t.only_continents
            or t.exclude_continents for t in targets)
        found = _INDEXES.put(id(service), (service, Index(Nearest(
            [(t.location, t) for t in targets if t.location is not None]), by_place)))
    return found[1]


def kind(service: Service, country: str | None, continent: str | None
         ) -> tuple[str | None, str | None]:
    """The part of a client that ``service``'s line-ups depend on, besides its rules:
    its country and continent, or nothing (``Index.by_place``)."""
    return (country, continent) if index(service).by_place else (None, None)


def _entrant(target: Target, service: Service, whom: Whom, status: Status,
             want: Want, file: Availability | None, admin: Override,
             latency_ms: int | None, down: bool, draining: bool = False) -> Entrant:
    """``draining``: the operator's drain is in its slow drain, so it does not exclude
    the target yet (what it keeps falls: ``core.capacity``)."""
    country, scope = whom.country, whom.scope
    crosses = country and target.country and country != target.country
    excluded = exclusion(target, whom, status, want, file,
                         Override.AUTO if draining and admin is Override.DRAIN else admin, down)
    tier, order, rule = 2, 0, None
    if scope.route is not None and target.id in scope.route[1]:
        tier, order, rule = 0, scope.route[1].index(target.id), scope.route[0]
    elif target.id in scope.preferred:
        tier, rule = 1, scope.preferred[target.id]
    if excluded is Exclusion.NOT_FOR_NETWORK:
        rule = scope.outside[target.id]
    elif excluded in _PLACE_RULES:
        key = _PLACE_RULES[excluded]
        rule = f"{key} {','.join(sorted(getattr(target, key)))}"
    return Entrant(target, status, admin, file, latency_ms, excluded,
                   service.cross_border_km if crosses else 0.0, 0.0, tier, order, rule)


# an exclusion by the client's place → the target's key that made it (named as the rule)
_PLACE_RULES = {Exclusion.NOT_FOR_COUNTRY: "only_countries",
                Exclusion.COUNTRY_EXCLUDED: "exclude_countries",
                Exclusion.NOT_FOR_CONTINENT: "only_continents",
                Exclusion.CONTINENT_EXCLUDED: "exclude_continents"}


def family_down(target: Target, want: Want, addresses: HealthView | None) -> bool:
    """Whether every address of the asked family fails its own check (none checked on
    its own, or no family asked: no)."""
    if addresses is None or want not in (Want.IPV4, Want.IPV6):
        return False
    own = target.addresses_of(4 if want is Want.IPV4 else 6)
    return bool(own) and all(addresses(address_id(target.id, a)) is Status.DOWN for a in own)


def _priced(e: Entrant, fastest: int, km_per_ms: float) -> Entrant:
    """The latency term: a target that waits longer than the fastest one taking part pays
    ``km_per_ms`` per millisecond more; the fastest, and targets with no figure, pay none."""
    wait = e.latency_ms
    if wait is None or wait <= fastest:
        return e
    return Entrant(e.target, e.status, e.admin, e.file, wait, e.excluded, e.border_km,
                   km_per_ms * (wait - fastest), e.tier, e.order, e.rule)


def exclusion(target: Target, whom: Whom, status: Status, want: Want,
              file: Availability | None, admin: Override, family_down: bool = False
              ) -> Exclusion | None:
    """Why ``target`` cannot serve this request (None: it can), the first reason that
    holds, in this order: static rules, the operator, the file, health (the target's,
    then its addresses' of the asked family: ``family_down``)."""
    if not target.enabled:
        return Exclusion.DISABLED
    if want in (Want.URL, Want.SECURE_URL) and target.url is None:
        return Exclusion.NO_URL
    if want is Want.SECURE_URL and not target.secure:
        return Exclusion.INSECURE
    if want in (Want.IPV4, Want.IPV6) and not target.addresses_of(4 if want is Want.IPV4 else 6):
        return Exclusion.NO_ADDRESS
    country, continent = whom.country, whom.continent
    if target.only_countries and country not in target.only_countries:
        return Exclusion.NOT_FOR_COUNTRY
    if country in target.exclude_countries:
        return Exclusion.COUNTRY_EXCLUDED
    if target.only_continents and continent not in target.only_continents:
        return Exclusion.NOT_FOR_CONTINENT
    if continent in target.exclude_continents:
        return Exclusion.CONTINENT_EXCLUDED
    if target.id in whom.scope.outside:
        return Exclusion.NOT_FOR_NETWORK
    state = effective(status, admin)
    if state is Effective.DRAINED:
        return Exclusion.DRAINED
    if state is Effective.ADMIN_DOWN:
        return Exclusion.ADMIN_DOWN
    if file in _FILE_EXCLUSIONS:
        return _FILE_EXCLUSIONS[file]
    if state is Effective.DOWN:
        return Exclusion.DOWN
    if family_down and state is not Effective.FORCED:
        return Exclusion.NO_HEALTHY_AAAA if want is Want.IPV6 else Exclusion.NO_HEALTHY_A
    if file is Availability.UNKNOWN:
        return Exclusion.UNVERIFIED
    return None


def _when_all_down(service: Service, entrants: list[Entrant]) -> list[Entrant]:
    """Only health is overridden: a target excluded for any other reason stays out."""
    down = [e for e in entrants if e.excluded is Exclusion.DOWN]
    if service.on_all_down is OnAllDown.FALLBACK:
        return [e for e in down if e.target.id in service.fallback]
    if service.on_all_down is OnAllDown.ALL:
        return down
    return []


def rendezvous(key: bytes, target: Target) -> float:
    """Weighted rendezvous (highest random weight) score: ``-weight / ln(u)``, u in (0, 1)."""
    digest = hashlib.blake2b(key + b"\0" + target.id.encode(), digest_size=8).digest()
    # 53 bits, so that u stays below 1.0 as a float (2**64 / (2**64 + 1) rounds to 1.0).
    u = ((int.from_bytes(digest, "big") >> 11) + 1) / (2**53 + 1)
    return -target.weight / math.log(u)
