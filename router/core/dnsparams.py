"""DNS's numbers and their names, in one place: the IANA "Domain Name System (DNS)
Parameters" registries as far as we use them. Pure.

RR types, classes, opcodes, rcodes and EDNS option codes are ``IntEnum``s (a member is
its number on the wire, its name is its mnemonic), as dnspython's ``rdatatype`` and
Knot's ``knot_rrtype`` table have them. The reader and writer (``router.dns.wire``), the
records (``router.dns.records``), DNSSEC (``router.dns.dnssec``), the zone-file grammar
(``router.core.rdata``) and the counters (``router.core.stats``: the label names in
/metrics) all read them from here.

To add a record type for zone files: its member in ``Type`` (if it is new), its grammar
in ``router.core.rdata.GRAMMAR``, and its compile function in
``router.dns.records.COMPILERS``. Nothing else spells a type number.
"""

from __future__ import annotations

from enum import IntEnum


class Type(IntEnum):
    """RR types (RFC 1035 and successors)."""

    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    HINFO = 13
    MX = 15
    TXT = 16
    AAAA = 28
    SRV = 33
    OPT = 41  # RFC 6891: a pseudo-record, never asked for
    DS = 43
    RRSIG = 46
    NSEC = 47
    DNSKEY = 48
    CDS = 59
    CDNSKEY = 60
    SVCB = 64  # RFC 9460
    HTTPS = 65  # RFC 9460
    NXNAME = 128  # RFC 9824: a meta-type, only ever in a compact denial's bitmap
    IXFR = 251
    AXFR = 252
    ANY = 255
    CAA = 257


class Class(IntEnum):
    IN = 1
    CH = 3  # CHAOS: id.server, hostname.bind
    ANY = 255


class Opcode(IntEnum):
    QUERY = 0
    NOTIFY = 4
    UPDATE = 5


class Rcode(IntEnum):
    """Response codes; the extended ones (16 and up) travel partly in the OPT record."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16  # RFC 6891
    BADCOOKIE = 23  # RFC 7873


class Option(IntEnum):
    """EDNS option codes."""

    NSID = 3  # RFC 5001: name server identifier
    ECS = 8  # RFC 7871: EDNS Client Subnet
    COOKIE = 10  # RFC 7873
    KEEPALIVE = 11  # RFC 7828: edns-tcp-keepalive


# Types that are asked for by name in /metrics; any other qtype counts as "other", so no
# client can make series. (OPT is never a question.)
COUNTED = frozenset(t for t in Type if t is not Type.OPT)


def type_name(code: int) -> str:
    """A type's mnemonic, or ``TYPE<n>`` (RFC 3597) for one we do not name."""
    return Type(code).name if code in Type._value2member_map_ else f"TYPE{code}"


def rcode_name(code: int) -> str:
    """An rcode's mnemonic, or ``RCODE<n>``."""
    return Rcode(code).name if code in Rcode._value2member_map_ else f"RCODE{code}"
