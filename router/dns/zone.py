"""A loaded ``Config`` compiled into lookup tables of dnslib records, once per (re)load.

Names are tuples of lower-case labels (``(b"www", b"go", b"example", b"com")``), the
form a parsed query's name is in, so a lookup is one dict access.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnslib import AAAA, CAA, CNAME, MX, NS, PTR, RR, SOA, SRV, TXT, A, DNSLabel

from router.core import config as cfg
from router.core import values
from router.dns.wire import Type

Name = tuple[bytes, ...]


def to_name(text: str) -> Name:
    """``"www.go.example.com."`` → ``(b"www", b"go", b"example", b"com")``."""
    stripped = text.lower().rstrip(".")
    return tuple(stripped.encode("ascii").split(b".")) if stripped else ()


@dataclass(slots=True)
class Node:
    """Everything at one owner name."""

    rrsets: dict[int, list[RR]] = field(default_factory=dict)
    service: cfg.Service | None = None  # steered A/AAAA


@dataclass(slots=True)
class ZoneData:
    zone: cfg.Zone
    origin: Name
    nodes: dict[Name, Node]
    parents: set[Name]  # every name that has a descendant (so never NXDOMAIN)
    cuts: set[Name]  # delegation points below the apex (NS records)
    soa: RR  # for the answer section
    negative_soa: RR  # for the authority section: TTL = min(SOA TTL, minimum), RFC 2308


class ZoneTable:
    """Every zone we are authoritative for, and the glue across them."""

    def __init__(self, config: cfg.Config) -> None:
        self.config = config
        self.zones = sorted((_compile(z) for z in config.zones),
                            key=lambda z: len(z.origin), reverse=True)

    def find(self, name: Name) -> ZoneData | None:
        """The most specific zone that contains ``name``."""
        for zone in self.zones:
            n = len(zone.origin)
            if len(name) >= n and (n == 0 or name[-n:] == zone.origin):
                return zone
        return None

    def addresses(self, name: Name) -> list[RR]:
        """Static A/AAAA records of ``name`` in any of our zones (glue)."""
        zone = self.find(name)
        node = zone.nodes.get(name) if zone else None
        if node is None:
            return []
        return [*node.rrsets.get(Type.A, []), *node.rrsets.get(Type.AAAA, [])]


def _compile(zone: cfg.Zone) -> ZoneData:
    origin = to_name(zone.origin)
    nodes: dict[Name, Node] = {}
    for record in zone.records:
        node = nodes.setdefault(to_name(record.name), Node())
        rr = RR(DNSLabel(to_name(record.name)), _TYPE[record.type], ttl=record.ttl,
                rdata=_rdata(record))
        node.rrsets.setdefault(rr.rtype, []).append(rr)
    for service in zone.services:
        for name in service.dns_names:
            nodes.setdefault(to_name(name), Node()).service = service
    apex = nodes.setdefault(origin, Node())
    soa = RR(DNSLabel(origin), Type.SOA, ttl=zone.ttl, rdata=SOA(
        zone.nameservers[0], zone.hostmaster,
        (zone.serial, zone.refresh, zone.retry, zone.expire, zone.negative_ttl)))
    apex.rrsets[Type.SOA] = [soa]
    apex.rrsets[Type.NS] = [RR(DNSLabel(origin), Type.NS, ttl=zone.ttl, rdata=NS(ns))
                            for ns in zone.nameservers]
    negative = RR(DNSLabel(origin), Type.SOA, ttl=min(zone.ttl, zone.negative_ttl),
                  rdata=soa.rdata)
    parents = {name[i:] for name in nodes for i in range(1, len(name) - len(origin) + 1)}
    cuts = {name for name, node in nodes.items() if name != origin and Type.NS in node.rrsets}
    return ZoneData(zone, origin, nodes, parents, cuts, soa, negative)


_TYPE = {name: int(Type[name]) for name in values.RECORD_TYPES}


def _rdata(record: cfg.Record) -> object:
    d = record.data
    match record.type:
        case "A":
            return A(str(d))
        case "AAAA":
            return AAAA(str(d))
        case "CNAME":
            return CNAME(d)
        case "NS":
            return NS(d)
        case "PTR":
            return PTR(d)
        case "MX":
            assert isinstance(d, values.Mx)
            return MX(d.exchange, d.preference)
        case "SRV":
            assert isinstance(d, values.Srv)
            return SRV(d.priority, d.weight, d.port, d.target)
        case "CAA":
            assert isinstance(d, values.Caa)
            return CAA(d.flags, d.tag, d.value)
        case "TXT":
            assert isinstance(d, values.Txt)
            return TXT(list(d.strings))
    raise ValueError(f"unsupported record type {record.type}")
