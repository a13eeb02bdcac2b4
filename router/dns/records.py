"""Resource records as the writer (``wire.render``) writes them. Pure.

A ``Record`` is an owner name, type, class, TTL and its RDATA in wire form, kept as
parts: bytes as they go out, and the domain names that RFC 1035 lets a writer compress
(NS, CNAME, PTR, SOA, MX) kept as names, so the writer can point them at a name written
before. Static records are compiled once per zone load (``compile_rdata``: dnslib packs
the RDATA of the other types, TXT's string splitting and CAA included); a steered
answer's A/AAAA records are made per decision, four or sixteen bytes each. No dnslib
object is on any per-query path.

Names are tuples of lower-case labels (``(b"www", b"go", b"example", b"com")``), the
form a parsed query's name is in, so a lookup is one dict access.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from dnslib import AAAA as DnsAaaa
from dnslib import CAA as DnsCaa
from dnslib import SRV as DnsSrv
from dnslib import TXT as DnsTxt
from dnslib import A as DnsA
from dnslib import DNSBuffer

from router.core import config as cfg
from router.core import values

Name = tuple[bytes, ...]
Part = bytes | Name  # RDATA: bytes as they are, or a name the writer may compress

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, CAA = 1, 2, 5, 6, 12, 15, 16, 28, 33, 257
CLASS_IN = 1
TYPES = {"A": A, "NS": NS, "CNAME": CNAME, "SOA": SOA, "PTR": PTR, "MX": MX, "TXT": TXT,
         "AAAA": AAAA, "SRV": SRV, "CAA": CAA}


def to_name(text: str) -> Name:
    """``"www.go.example.com."`` → ``(b"www", b"go", b"example", b"com")``."""
    stripped = text.lower().rstrip(".")
    return tuple(stripped.encode("ascii").split(b".")) if stripped else ()


def wire_name(name: Name) -> bytes:
    """A name in wire form, uncompressed."""
    return b"".join(bytes((len(label),)) + label for label in name) + b"\0"


@dataclass(frozen=True, slots=True)
class Record:
    owner: Name
    rtype: int
    rclass: int
    ttl: int
    rdata: tuple[Part, ...]

    def renamed(self, owner: Name) -> Record:
        """The same record under another owner (a wildcard's, or a name's spelling)."""
        return Record(owner, self.rtype, self.rclass, self.ttl, self.rdata)

    @property
    def target(self) -> Name:
        """The name an NS, CNAME, PTR or MX record points at."""
        return next(p for p in self.rdata if isinstance(p, tuple))


def record(owner: Name, record_: cfg.Record) -> Record:
    """A static record of the zone file, compiled."""
    return Record(owner, TYPES[record_.type], CLASS_IN, record_.ttl, compile_rdata(record_))


def soa(zone: cfg.Zone, ttl: int) -> Record:
    timers = struct.pack("!5I", zone.serial, zone.refresh, zone.retry, zone.expire,
                         zone.negative_ttl)
    return Record(to_name(zone.origin), SOA, CLASS_IN, ttl,
                  (to_name(zone.nameservers[0]), to_name(zone.hostmaster), timers))


def packed(rdata: Any) -> bytes:
    """A dnslib RDATA object in wire form, uncompressed (once, at load)."""
    buffer = DNSBuffer()
    rdata.pack(buffer)
    return bytes(buffer.data)


def txt(*strings: bytes) -> tuple[Part, ...]:
    """TXT RDATA: each string (at most 255 octets) with its length before it."""
    return (packed(DnsTxt(list(strings))),)


def compile_rdata(r: cfg.Record) -> tuple[Part, ...]:
    """A zone file record's RDATA: the names RFC 1035 lets a writer compress kept as
    names; everything else packed by dnslib."""
    d = r.data
    match r.type:
        case "NS" | "CNAME" | "PTR":
            return (to_name(str(d)),)
        case "MX":
            assert isinstance(d, values.Mx)
            return (struct.pack("!H", d.preference), to_name(d.exchange))
        case "A":
            return (packed(DnsA(str(d))),)
        case "AAAA":
            return (packed(DnsAaaa(str(d))),)
        case "SRV":  # RFC 2782: the target is never compressed
            assert isinstance(d, values.Srv)
            return (packed(DnsSrv(d.priority, d.weight, d.port, d.target)),)
        case "CAA":
            assert isinstance(d, values.Caa)
            return (packed(DnsCaa(d.flags, d.tag, d.value)),)
        case "TXT":
            assert isinstance(d, values.Txt)
            return txt(*d.strings)
    raise ValueError(f"unsupported record type {r.type}")
