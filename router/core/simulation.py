"""What steering would do with a traffic mix: pure, and the server's own code.

``simulate()`` places each flow of traffic (a client network, with its requests and
bytes a second) exactly as the DNS face places a query that misses its caches
(``steering.kept_lineup`` then ``steering.decision`` with the answer's head), under a
snapshot that says what is down or drained; then it measures each target's load
against its capacity and takes a step of the same shedding (``capacity.shed_next``)
the server takes once a settle, until the kept fractions stop moving. What it predicts
is what the server does once its loads have settled.

A flow is a client network. A country's traffic (``country_flows``) is spread over
``PER_COUNTRY`` networks at the country's centre, each with its share: shedding keeps or
moves whole networks, as it does in the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from router.core.audience import Rules
from router.core.capacity import Load, Pressure, pressure, shed_next
from router.core.config import Config, Service
from router.core.earth import Point
from router.core.geo import Location
from router.core.health import Health, Key, Snapshot, Status
from router.core.memo import Memo
from router.core.overrides import Override
from router.core.scoring import Costed, Lineup, Want
from router.core.steering import decision, kept_lineup

PER_COUNTRY = 64  # client networks a country's traffic is spread over
ROUNDS = 80  # steps of shedding at most before the answer is given


@dataclass(frozen=True, slots=True)
class Flow:
    """Traffic from one client network: requests and bytes a second."""

    client: Location
    requests: float
    bytes_per_second: float
    label: str  # the country or prefix of the traffic file's row


@dataclass(slots=True)
class Share:
    """What one target gets."""

    networks: int = 0
    requests: float = 0.0
    bytes_per_second: float = 0.0
    flows: dict[str, float] = field(default_factory=dict)  # label -> bytes a second


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where the traffic goes once shedding has settled."""

    service: Service
    shares: Mapping[str, Share]  # target id -> what it gets ("" : no target can serve)
    pressures: Mapping[Key, Pressure]
    rounds: int
    assigned: Mapping[bytes, str]  # client network -> the target it is sent to

    def overloaded(self) -> list[str]:
        """The targets over their capacity (above 100%)."""
        return sorted(t for (_s, t), p in self.pressures.items()
                      if p.ratio is not None and p.ratio > 1.0)


def country_flows(rows: Iterable[tuple[str, float, float]],
                  centres: Mapping[str, Point]) -> list[Flow]:
    """``(country, requests a second, mean bytes)`` rows as flows from ``PER_COUNTRY``
    networks each, at the country's centre (unknown countries: unlocated)."""
    out = []
    for country, rate, size in rows:
        point = centres.get(country)
        for i in range(PER_COUNTRY):
            key = hashlib.blake2b(f"{country}/{i}".encode(), digest_size=4).digest() + b"\x18"
            out.append(Flow(Location(key, point, country), rate / PER_COUNTRY,
                            rate * size / PER_COUNTRY, country))
    return out


def snapshot_of(config: Config, down: Iterable[str] = (), drain: Iterable[str] = ()
                ) -> Snapshot:
    """Every target up, bar ``down`` (target ids, or ``service/id``), and ``drain``ed."""
    downs = set(down)
    health = {(s.name, t.id): Health(Status.DOWN if {t.id, f"{s.name}/{t.id}"} & downs
                                     else Status.UP)
              for s in config.services for t in s.targets}
    admin = {name: Override.DRAIN for name in drain}
    return Snapshot(MappingProxyType(health), 1, MappingProxyType(admin))


def simulate(service: Service, base: Snapshot, flows: list[Flow], rules: Rules,
             want: Want = Want.URL) -> Outcome:
    """Place ``flows`` as the server would, shedding until the kept fractions settle."""
    pressures: dict[Key, Pressure] = {}
    for rounds in range(1, ROUNDS + 1):
        snapshot = _with(base, pressures, rounds)
        shares, assigned = _place(service, snapshot, flows, rules, want)
        after = _pressures(service, shares, pressures)
        if {k: p.keep for k, p in after.items()} == {k: p.keep for k, p in pressures.items()}:
            return Outcome(service, shares, after, rounds, assigned)
        pressures = after
    return Outcome(service, shares, pressures, ROUNDS, assigned)


def _with(base: Snapshot, pressures: Mapping[Key, Pressure], generation: int) -> Snapshot:
    return Snapshot(base.health, generation, base.admin, pressures=MappingProxyType(
        dict(pressures)))


def _place(service: Service, snapshot: Snapshot, flows: list[Flow], rules: Rules,
           want: Want) -> tuple[dict[str, Share], dict[bytes, str]]:
    lineups: Memo[tuple[object, ...], Lineup] = Memo(4096)
    base = (service.name, want, snapshot.generation)
    shares: dict[str, Share] = {t.id: Share() for t in service.targets}
    assigned: dict[bytes, str] = {}
    # one place's costs per line-up (the line-up held, so its id is not reused)
    costs: dict[tuple[int, Point | None], tuple[Lineup, list[Costed]]] = {}
    for flow in flows:
        lineup = kept_lineup(lineups, base, snapshot, service, flow.client, rules, want)
        at = (id(lineup), flow.client.point)
        found = costs.get(at)
        if found is None:
            found = costs[at] = (lineup, lineup.costs(flow.client.point, 1))
        chosen = decision(lineup, flow.client, list(found[1]), head=1).chosen(1)
        target = chosen[0].id if chosen else ""
        share = shares.setdefault(target, Share())
        share.networks += 1
        share.requests += flow.requests
        share.bytes_per_second += flow.bytes_per_second
        share.flows[flow.label] = share.flows.get(flow.label, 0.0) + flow.bytes_per_second
        assigned[flow.client.key] = target
    return shares, assigned


def _pressures(service: Service, shares: Mapping[str, Share],
               before: Mapping[Key, Pressure]) -> dict[Key, Pressure]:
    """One step of shedding for every target with a capacity."""
    out: dict[Key, Pressure] = {}
    for target in service.targets:
        if target.capacity is None:
            continue
        key, got = (service.name, target.id), shares.get(target.id, Share())
        load = Load(got.bytes_per_second, got.requests)
        ratio = load.ratio(target.capacity)
        was = before.get(key)
        shed = shed_next(was.shed if was else 0.0, ratio, target.capacity)
        out[key] = pressure(shed, ratio, None, load)
    return out
