"""Who each mirror may serve, and where a client's network is routed. Pure; built once
per config (``Rules``) and per client network (``Placer.at``).

A target may serve only some clients (``only_networks``, ``only_asns``: a private mirror,
which is those clients' first choice too), or be preferred for some, whatever the
distance (``networks``, ``asns``: a university's, an ISP's own); a service may route
client networks, ASes or countries to a list of targets (``[[services.X.routes]]``: the
longest prefix wins, then an AS, then a country).
Continent rules are read from the client's GeoIP record like country rules.

``Placer.at`` locates a client as GeoIP does, then finds every rule its address matches
(a rule by AS is a rule by the networks the ASN database gives the AS: ``core.asn``), and
narrows its network so that it holds no rule network it is not in
(``PrefixTable.split``): the narrowed network is the client's key in every cache and the
ECS scope of a DNS answer, so an answer decided by a rule is never reused outside it.
``scope()`` turns what matched into what one service's ranking reads (``Scope``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import NamedTuple

from router.core.asn import AsnDb
from router.core.config import Config, Problem, Service, Target
from router.core.geo import Location, Locator
from router.core.ip import IPAddress, IPNetwork
from router.core.prefixes import WIDTH, PrefixTable

ONLY, PREFER, ROUTE = "only", "prefer", "route"
_PREFIX = [bytes((n,)) for n in range(129)]


class Rule(NamedTuple):
    """One way a client is matched: by a target's scope or by a route."""

    service: str
    kind: str  # ONLY, PREFER or ROUTE
    subject: str  # the target id (ONLY, PREFER) or the route's name (ROUTE)
    basis: str  # what matched, for explanations: "only_asns 64500", "networks 198.51.100.0/24"
    rank: int  # among a service's routes: the more specific, the higher


class Scope(NamedTuple):
    """What one service's ranking reads of a client's rules."""

    outside: Mapping[str, str]  # target id → the rule it serves only (the client is not in)
    preferred: Mapping[str, str]  # target id → the rule that prefers it for the client
    route: tuple[str, tuple[str, ...]] | None = None  # (route and what matched, targets)


EVERYONE = Scope({}, {})


class Rules:
    """Every service's network, AS and country rules, indexed. Rules by AS become rules
    by the AS's networks, as the ASN database gives them (``AsnDb.networks``): one table
    of prefixes is all a client is matched against, and a client is never looked up in
    the ASN database. Without a database, rules by AS match nobody (``serve`` and
    ``check`` refuse them: ``asn_problems``)."""

    def __init__(self, config: Config, asn_db: AsnDb | None = None) -> None:
        nets: list[tuple[IPNetwork, Rule]] = []
        by_asn: list[tuple[int, Rule]] = []
        self.by_country: dict[str, list[Rule]] = {}
        self.scoped: dict[str, dict[str, str]] = {}  # service → target → its only_ rules
        for s in config.services:
            for t in s.targets:
                for kind, networks, asns, key in ((ONLY, t.only_networks, t.only_asns, "only_"),
                                                  (PREFER, t.networks, t.asns, "")):
                    nets += [(n, Rule(s.name, kind, t.id, f"{key}networks {n}", 0))
                             for n in networks]
                    by_asn += [(a, Rule(s.name, kind, t.id, f"{key}asns {a}", 0)) for a in asns]
                if t.only_networks or t.only_asns:
                    self.scoped.setdefault(s.name, {})[t.id] = _only(t.only_networks, t.only_asns)
            self._routes(s, nets, by_asn)
        self.asns = frozenset(a for a, _rule in by_asn)  # the ASes some rule names
        announced = asn_db.networks(self.asns) if asn_db is not None and self.asns else {}
        nets += [(n, rule) for a, rule in by_asn for n in announced.get(a, ())]
        self.table = PrefixTable(nets)
        self.any = bool(self.table) or bool(self.by_country)

    def _routes(self, s: Service, nets: list[tuple[IPNetwork, Rule]],
                by_asn: list[tuple[int, Rule]]) -> None:
        for r in s.routes:
            nets += [(n, Rule(s.name, ROUTE, r.name, f"route {r.name} ({n})", 1000 + n.prefixlen))
                     for n in r.networks]
            by_asn += [(a, Rule(s.name, ROUTE, r.name, f"route {r.name} (AS{a})", 500))
                       for a in r.asns]
            for c in r.countries:
                self.by_country.setdefault(c, []).append(
                    Rule(s.name, ROUTE, r.name, f"route {r.name} ({c})", 100))

    def place(self, where: Location, value: int, version: int,
              narrow: bool = True) -> Location:
        """``where`` (GeoIP's) with the rules the address matches, its network made at
        least as long as the longest rule network holding it, and narrowed to hold no
        rule network it is not in (``PrefixTable.split``), for an answer whose scope
        resolvers cache (DNS). A client no rule concerns is ``where`` itself; with
        ``narrow`` it is narrowed too when a rule network lies within its GeoIP network
        (without: it keeps that network, as the redirector, which has no scope, wants)."""
        found = self.table.match(value, version)
        country = self.by_country.get(where.country) if where.country is not None else None
        if not found and country is None and not narrow:
            return where
        # an answer decided by a rule is kept inside the rule's network: the longest of
        # GeoIP's network and the longest rule's (RFC 7871 7.2.1 lets a scope exceed the source)
        prefix = max(where.prefixlen, found[0][0]) if found else where.prefixlen
        if self.table:
            prefix = self.table.split(value, version, prefix)
        if not found and country is None and prefix == where.prefixlen:
            return where
        matched = [r for _length, rules in found for r in rules] + (country or [])
        width = WIDTH[version]
        first = value >> (width - prefix) << (width - prefix)
        return where._replace(key=first.to_bytes(width // 8, "big") + _PREFIX[prefix],
                              matched=frozenset(matched), effect=frozenset(
                                  (r.service, r.kind, r.subject, r.rank) for r in matched))


def asn_problems(config: Config) -> list[Problem]:
    """Every rule that needs an ASN database, as a problem (for a config served or
    checked without one): the file, the key and what to do."""
    hint = ("needs an ASN database: --asn-db FILE (or asn_db in [server]): GeoLite2-ASN "
            "(geoipupdate) or DB-IP ASN Lite")
    found = []
    for zone in config.zones:
        for s in zone.services:
            found += [Problem(zone.source, f"services.{s.name}.targets[{t.id}].{key}", hint)
                      for t in s.targets for key, asns in (("only_asns", t.only_asns),
                                                           ("asns", t.asns)) if asns]
            found += [Problem(zone.source, f"services.{s.name}.routes[{r.name}].asns", hint)
                      for r in s.routes if r.asns]
    return found


def target_rules(target: Target) -> list[str]:
    """Whom ``target`` serves, one rule a line as explanations name them (``/status``);
    long lists shortened. Empty: everyone, by distance."""
    said = []
    for key in ("only_countries", "exclude_countries", "only_continents",
                "exclude_continents", "only_networks", "only_asns", "networks", "asns"):
        value = getattr(target, key)
        items = [str(x) for x in (sorted(value) if isinstance(value, frozenset) else value)]
        if items:
            more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
            said.append(f"{key} {','.join(items[:3])}{more}")
    return said


def _only(networks: tuple[IPNetwork, ...], asns: frozenset[int]) -> str:
    said = [*(f"only_networks {n}" for n in networks[:3]), *(f"only_asns {a}" for a in
                                                             sorted(asns)[:3])]
    more = len(networks) + len(asns) - len(said)
    return ", ".join(said) + (f" (and {more} more)" if more > 0 else "")


def scope(rules: Rules, service: Service, client: Location) -> Scope:
    """What ``service``'s ranking reads of the rules ``client`` matched."""
    mine = [r for r in client.matched if r.service == service.name]
    scoped = rules.scoped.get(service.name, {})
    if not mine and not scoped:
        return EVERYONE
    allowed = {r.subject: r.basis for r in sorted(mine) if r.kind == ONLY}
    # a private mirror is its clients' first choice too (as Fedora's MirrorManager has it)
    preferred = {**allowed, **{r.subject: r.basis for r in sorted(mine) if r.kind == PREFER}}
    routes = [r for r in mine if r.kind == ROUTE]
    route = None
    if routes:
        best = max(routes, key=lambda r: (r.rank, r.subject))
        found = next(x for x in service.routes if x.name == best.subject)
        route = (best.basis, found.targets)
    return Scope({t: rule for t, rule in scoped.items() if t not in allowed}, preferred, route)


class Placer:
    """Where a client is, and what rules it matches: GeoIP (``Locator``), then, when the
    config has rules, ``Rules.place``. Without rules it is GeoIP itself, at no cost.
    ``locate()`` (explanations, pages) also names the client's AS, from ``asn_db``."""

    def __init__(self, locator: Locator, rules: Rules, asn_db: AsnDb | None = None,
                 narrow: bool = True) -> None:
        self.locator = locator
        self.rules = rules
        self.asn_db = asn_db
        self.narrow = narrow  # DNS: a client's network holds no rule network it is not in
        if not rules.any:
            self.at = locator.at  # type: ignore[method-assign]

    def at(self, value: int, version: int) -> Location:
        """``Locator.at``, with the rules the address matches."""
        return self.rules.place(self.locator.at(value, version), value, version, self.narrow)

    def locate(self, address: IPAddress | str) -> Location:
        """``Locator.locate``, with the rules the address matches and its AS."""
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        where = self.at(int(addr), addr.version)
        return where if self.asn_db is None else where._replace(asn=self.asn_db.number(addr))
