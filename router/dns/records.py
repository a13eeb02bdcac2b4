"""Resource records as the writer (``wire.render``) writes them. Pure.

A ``Record`` is an owner name, type, class, TTL and its RDATA in wire form, kept as
parts: bytes as they go out, and the domain names that RFC 1035 lets a writer compress
(NS, CNAME, PTR, SOA, MX) kept as names, so the writer can point them at a name written
before. Static records are compiled once per zone load (``COMPILERS``: one function per
type a zone file may hold, as ``router.core.rdata.GRAMMAR`` reads it; dnslib packs
the RDATA of some, TXT's string splitting and CAA included); a steered answer's A/AAAA
records are made per decision, four or sixteen bytes each. No dnslib object is on any
per-query path.

Names are tuples of lower-case labels (``(b"www", b"go", b"example", b"com")``), the
form a parsed query's name is in, so a lookup is one dict access.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnslib import AAAA as DnsAaaa
from dnslib import CAA as DnsCaa
from dnslib import SRV as DnsSrv
from dnslib import TXT as DnsTxt
from dnslib import A as DnsA
from dnslib import DNSBuffer

from router.core import config as cfg
from router.core import rdata as rd
from router.core.dnsparams import Class, Type

Name = tuple[bytes, ...]
Part = bytes | Name  # RDATA: bytes as they are, or a name the writer may compress


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
    rtype = Type[record_.type]
    return Record(owner, rtype, Class.IN, record_.ttl, COMPILERS[rtype](record_.data))


def soa(zone: cfg.Zone, ttl: int) -> Record:
    timers = struct.pack("!5I", zone.serial, zone.refresh, zone.retry, zone.expire,
                         zone.negative_ttl)
    return Record(to_name(zone.origin), Type.SOA, Class.IN, ttl,
                  (to_name(zone.nameservers[0]), to_name(zone.hostmaster), timers))


def packed(rdata: Any) -> bytes:
    """A dnslib RDATA object in wire form, uncompressed (once, at load)."""
    buffer = DNSBuffer()
    rdata.pack(buffer)
    return bytes(buffer.data)


def txt(*strings: bytes) -> tuple[Part, ...]:
    """TXT RDATA: each string (at most 255 octets) with its length before it."""
    return (packed(DnsTxt(list(strings))),)


# ---------------------------------------------------------------- one compile function a type


def _name(d: rd.RData) -> tuple[Part, ...]:  # NS, CNAME, PTR: a name the writer may compress
    return (to_name(str(d)),)


def _mx(d: rd.RData) -> tuple[Part, ...]:
    assert isinstance(d, rd.Mx)
    return (struct.pack("!H", d.preference), to_name(d.exchange))


def _a(d: rd.RData) -> tuple[Part, ...]:
    return (packed(DnsA(str(d))),)


def _aaaa(d: rd.RData) -> tuple[Part, ...]:
    return (packed(DnsAaaa(str(d))),)


def _srv(d: rd.RData) -> tuple[Part, ...]:  # RFC 2782: the target is never compressed
    assert isinstance(d, rd.Srv)
    return (packed(DnsSrv(d.priority, d.weight, d.port, d.target)),)


def _caa(d: rd.RData) -> tuple[Part, ...]:
    assert isinstance(d, rd.Caa)
    return (packed(DnsCaa(d.flags, d.tag, d.value)),)


def _txt(d: rd.RData) -> tuple[Part, ...]:
    assert isinstance(d, rd.Txt)
    return txt(*d.strings)


def _svcb(d: rd.RData) -> tuple[Part, ...]:
    """SVCB and HTTPS (RFC 9460 2.2): priority, the target uncompressed, the parameters
    in ascending key order."""
    assert isinstance(d, rd.Svcb)
    params = b"".join(struct.pack("!HH", key, len(value)) + value for key, value in d.params)
    return (struct.pack("!H", d.priority) + wire_name(to_name(d.target)) + params,)


COMPILERS: dict[Type, Callable[[rd.RData], tuple[Part, ...]]] = {
    Type.A: _a, Type.AAAA: _aaaa, Type.NS: _name, Type.CNAME: _name, Type.PTR: _name,
    Type.MX: _mx, Type.TXT: _txt, Type.SRV: _srv, Type.CAA: _caa,
    Type.SVCB: _svcb, Type.HTTPS: _svcb,
}
