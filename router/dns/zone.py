"""A loaded ``Config`` compiled into lookup tables of records (``router.dns.records``),
once per (re)load.

Names are tuples of lower-case labels, the form a parsed query's name is in, so a lookup
is one dict access.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from router.core import config as cfg
from router.core.dnsparams import Class, Type
from router.dns import dnssec
from router.dns.records import Name, Record, record, soa, to_name

__all__ = ["Name", "Node", "ZoneData", "ZoneTable", "to_name"]


@dataclass(slots=True)
class Node:
    """Everything at one owner name."""

    rrsets: dict[int, list[Record]] = field(default_factory=dict)
    service: cfg.Service | None = None  # steered A/AAAA


@dataclass(slots=True)
class ZoneData:
    zone: cfg.Zone
    origin: Name
    nodes: dict[Name, Node]
    parents: set[Name]  # every name that has a descendant (so never NXDOMAIN)
    cuts: set[Name]  # delegation points below the apex (NS records)
    soa: Record  # for the answer section
    negative_soa: Record  # for the authority section: TTL = min(SOA TTL, minimum), RFC 2308
    signer: dnssec.Signer | None = None  # a signed zone's (router.dns.dnssec)

    def types(self, name: Name) -> set[int]:
        """The record types that exist at ``name`` (for a denial's NSEC bitmap)."""
        node = self.nodes.get(name)
        if node is None:
            return set()
        steered = {Type.A, Type.AAAA} if node.service is not None else set()
        return {*node.rrsets, *steered}

    def rekey(self, now: float) -> dnssec.Phase | None:
        """A signed zone at ``now``: when its keys' phase changed (a key published,
        activated, retired or removed since), the apex's DNSKEY, CDS and CDNSKEY follow,
        and the new phase is returned; else None."""
        if self.signer is None:
            return None
        changed = self.signer.at(now)
        if changed is not None:
            _publish(self.nodes[self.origin], self.zone, changed)
        return changed


def _publish(apex: Node, zone: cfg.Zone, phase: dnssec.Phase) -> None:
    for rtype in dnssec.KEY_TYPES:
        apex.rrsets.pop(rtype, None)
    apex.rrsets.update(dnssec.key_records(to_name(zone.origin), phase, zone.ttl,
                                          zone.dnssec_cds))


class ZoneTable:
    """Every zone we are authoritative for, and the glue across them."""

    def __init__(self, config: cfg.Config, now: float | None = None) -> None:
        self.config = config
        when = time.time() if now is None else now
        self.zones = sorted((_compile(z, when) for z in config.zones),
                            key=lambda z: len(z.origin), reverse=True)

    def find(self, name: Name) -> ZoneData | None:
        """The most specific zone that contains ``name``."""
        for zone in self.zones:
            n = len(zone.origin)
            if len(name) >= n and (n == 0 or name[-n:] == zone.origin):
                return zone
        return None

    def addresses(self, name: Name) -> list[Record]:
        """Static A/AAAA records of ``name`` in any of our zones (glue)."""
        zone = self.find(name)
        node = zone.nodes.get(name) if zone else None
        if node is None:
            return []
        return [*node.rrsets.get(Type.A, []), *node.rrsets.get(Type.AAAA, [])]


def _compile(zone: cfg.Zone, now: float) -> ZoneData:
    origin = to_name(zone.origin)
    nodes: dict[Name, Node] = {}
    for r in zone.records:
        owner = to_name(r.name)
        compiled = record(owner, r)
        nodes.setdefault(owner, Node()).rrsets.setdefault(compiled.rtype, []).append(compiled)
    for service in zone.services:
        for name in service.dns_names:
            nodes.setdefault(to_name(name), Node()).service = service
    apex = nodes.setdefault(origin, Node())
    signer = None
    if zone.signed:  # checked at load (dnssec.check): a bad key raises
        signer = dnssec.Signer(dnssec.zone_keys(zone), zone.ttl, now)
        _publish(apex, zone, signer.phase)
    apex.rrsets[Type.SOA] = [soa(zone, zone.ttl)]
    apex.rrsets[Type.NS] = [Record(origin, Type.NS, Class.IN, zone.ttl, (to_name(ns),))
                       for ns in zone.nameservers]
    parents = {name[i:] for name in nodes for i in range(1, len(name) - len(origin) + 1)}
    cuts = {name for name, node in nodes.items() if name != origin and Type.NS in node.rrsets}
    return ZoneData(zone, origin, nodes, parents, cuts, apex.rrsets[Type.SOA][0],
                    soa(zone, min(zone.ttl, zone.negative_ttl)), signer)
