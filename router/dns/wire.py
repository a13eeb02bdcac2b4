"""DNS on the wire: bytes → ``Query``, and a ``Reply`` → bytes. Pure: no sockets, no zone.

The query side is parsed straight from the bytes (header, one question, the OPT record
and its Client Subnet option), strictly: anything malformed raises ``QueryError`` with
the code the other side should be told (FORMERR), or none when the packet should be
dropped (too short to have a header, or not a query at all). The reply side is written
by ``render()`` (``Writer``, struct and name compression) within the client's buffer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from dataclasses import dataclass, field

from router.core.dnsparams import Opcode, Option, Rcode, Type
from router.core.ip import IPAddress
from router.dns.records import Record
from router.errors import RouterError

# The option codes the reader's loop compares, bound as plain ints (the registry's numbers:
# ``router.core.dnsparams.Option``).
_ECS, _COOKIE, _NSID = int(Option.ECS), int(Option.COOKIE), int(Option.NSID)
MAX_NAME = 255

_HEADER = struct.Struct("!HHHHHH")
_QFIXED = struct.Struct("!HH")
_RRFIXED = struct.Struct("!HHIH")

QR, AA, TC, RD, RA, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010


class QueryError(RouterError):
    """A packet we cannot serve. ``rcode`` is what to tell the sender (None: say nothing)."""

    def __init__(self, reason: str, rcode: Rcode | None = None, header: bytes = b"") -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.header = header  # the first 4 bytes (ID and flags) when they could be read


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    """An ECS option: the client network a resolver asks on behalf of."""

    family: int  # 1 = IPv4, 2 = IPv6
    source: int  # SOURCE PREFIX-LENGTH
    address: IPAddress  # zero beyond the source prefix
    raw: bytes  # the ADDRESS octets as sent, echoed back unchanged

    def echo(self, scope: int) -> bytes:
        return struct.pack("!HBB", self.family, self.source, scope) + self.raw


@dataclass(slots=True)
class Edns:
    payload: int  # the client's UDP buffer size
    version: int
    do: bool
    co: bool = False  # Compact answers OK (RFC 9824): say NXDOMAIN with a compact denial
    ecs: bytes | None = None  # the Client Subnet option's value, checked (``check_subnet``)
    _subnet: ClientSubnet | None = None

    @property
    def subnet(self) -> ClientSubnet | None:
        """The Client Subnet as addresses: made when first asked for (the strict path),
        never on a cache hit."""
        if self._subnet is None and self.ecs is not None:
            self._subnet = read_subnet(self.ecs)
        return self._subnet


# The shape bits of a cache key: what of the query, besides the question, is in a reply.
COPIED_FLAGS = RD | CD  # copied into the reply's header
SHAPE_EDNS = 0x10000  # an OPT record is present (so the reply has one)
SHAPE_DO = 0x20000  # DNSSEC OK
SHAPE_ECS = 0x40000  # a Client Subnet option is present (so the reply echoes one)
SHAPE_CO = 0x80000  # Compact answers OK: a signed zone's denials differ
VERSION_SHIFT = 24  # the EDNS version (above 0: BADVERS)


@dataclass(slots=True)  # not frozen: one per query, and frozen costs about a microsecond
class Query:
    """Everything a query says, read once (``read``): the question, the header, the EDNS
    shape, the options we act on, and where the name and the ECS option are in
    ``data`` (a cached answer is patched there)."""

    data: bytes
    id: int
    flags: int
    name_end: int  # just past the query name (the question starts at 12)
    qtype: int
    qclass: int
    edns: Edns | None
    key: bytes  # the question with its name in lower case: the answer cache's key
    shape: int  # the shape bits (see above)
    lower: bool  # the name was sent in lower case
    ecs: int = -1  # offset of the Client Subnet option (-1: none) ...
    ecs_end: int = -1  # ... and just past it
    cookie: bytes | None = None  # the COOKIE option's value
    nsid: bool = False  # an empty NSID option: the sender asks which node answers
    # the name split into labels (lower case; as sent), once, when first needed: a query
    # answered from the cache never needs them
    _name: tuple[bytes, ...] | None = None
    _spelled: tuple[bytes, ...] | None = None

    @property
    def name(self) -> tuple[bytes, ...]:
        """The name in lower case, for lookups and the answer's owner names."""
        name = self._name
        if name is None:
            name = self._name = _labels(self.key)
        return name

    @property
    def labels(self) -> tuple[bytes, ...]:
        """The name as sent: the question of the reply is written so."""
        if self.lower:
            return self.name
        spelled = self._spelled
        if spelled is None:
            spelled = self._spelled = _labels(self.data[_HEADER.size:self.name_end])
        return spelled

    @property
    def base(self) -> tuple[bytes, int]:
        """The answer cache's key for everyone: the folded question and the shape bits."""
        return self.key, self.shape

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def payload(self) -> int | None:
        return self.edns.payload if self.edns is not None else None

    @property
    def ecs_value(self) -> bytes:
        """The Client Subnet option's value as sent (b"": none)."""
        return self.data[self.ecs + 4:self.ecs_end] if self.ecs >= 0 else b""

    @property
    def question(self) -> bytes:
        """The question as sent: name, type and class."""
        return self.data[_HEADER.size:self.name_end + _QFIXED.size]


def _labels(name: bytes) -> tuple[bytes, ...]:
    """A name in wire form that ``name_end`` has read (plain labels) split into labels."""
    out = []
    i = 0
    while size := name[i]:
        out.append(name[i + 1:i + 1 + size])
        i += size + 1
    return tuple(out)


def name_end(data: bytes, offset: int, pointers: bool = False) -> int:
    """Just past the name at ``offset``, read strictly: plain labels, at most 255 octets
    in all, and (``pointers``) compression pointers, each pointing back, without loops.
    ``ValueError`` or ``IndexError`` when it is not one. The one way names are read here
    (the question, other records' owners, the OPT record found in a message)."""
    start, end, hops, length = offset, -1, 0, 1
    while size := data[offset]:
        if size & 0xC0:
            if size & 0xC0 != 0xC0 or not pointers:
                raise ValueError("compression pointer in the question"
                                 if size & 0xC0 == 0xC0 else "unknown label type")
            hops += 1
            target = ((size & 0x3F) << 8) | data[offset + 1]
            if hops > 16 or target >= offset:
                raise ValueError("compression pointer loop" if hops > 16
                                 else "forward compression pointer")
            if end < 0:
                end = offset + 2
            length += offset - start
            start = offset = target
            continue
        offset += size + 1
    if length + offset - start > MAX_NAME:
        raise ValueError("name longer than 255 octets")
    return end if end >= 0 else offset + 1


def read(data: bytes) -> Query:
    """Read a query, strictly, in one pass; ``QueryError`` for anything that is not a
    well-formed one (with the rcode to answer, or None: say nothing)."""
    if len(data) < _HEADER.size:
        raise QueryError("shorter than a DNS header")
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    head = data[:4]
    if flags & 0xF800 or qd != 1:  # QR, an opcode other than QUERY, not one question
        _refuse(flags, head)
    try:
        end = name_end(data, _HEADER.size)  # plain labels only, at most 255 octets
        qtype, qclass = _QFIXED.unpack_from(data, end)
        if qtype == 252 or qtype == 251:  # AXFR, IXFR (with its SOA): refused all the same
            raise QueryError("zone transfers are not served", Rcode.REFUSED, head)
        if an or ns:
            raise QueryError("a query has no answer or authority records", Rcode.FORMERR, head)
        name = data[_HEADER.size:end]
        folded = name.lower()
        q = Query(data, qid, flags, end, qtype, qclass, None,
                  folded + data[end:end + 4], flags & COPIED_FLAGS, folded == name)
        offset = end + _QFIXED.size
        if ar:
            offset = _read_additional(q, offset, ar)
    except (struct.error, IndexError) as e:
        raise QueryError(f"truncated packet: {e}", Rcode.FORMERR, head) from None
    except ValueError as e:
        raise QueryError(str(e), Rcode.FORMERR, head) from None
    if offset != len(data):
        raise QueryError("trailing bytes after the last record", Rcode.FORMERR, head)
    return q


def _refuse(flags: int, head: bytes) -> None:
    if flags & QR:
        raise QueryError("a response, not a query")  # never answer: no reflection loops
    if flags & 0x7800:
        raise QueryError("opcode not implemented", Rcode.NOTIMP, head)  # NOTIFY, UPDATE
    raise QueryError("a query has one question", Rcode.FORMERR, head)


_OPT_FIXED = struct.Struct("!HHBBHH")  # TYPE, CLASS (payload), TTL (3 parts), RDLENGTH
_ONE_OPT = b"\x00\x00\x29"  # the root owner and TYPE OPT: the usual additional section


def _read_additional(q: Query, offset: int, count: int) -> int:
    data = q.data
    if count == 1 and data[offset:offset + 3] == _ONE_OPT:  # the usual: one OPT record
        return _read_opt(q, offset + 1)
    for _ in range(count):
        root = data[offset] == 0  # an OPT record's owner
        offset = name_end(data, offset, pointers=True)
        rtype, _class, _ttl, rdlength = _RRFIXED.unpack_from(data, offset)
        if rtype == Type.OPT:
            if not root:
                raise ValueError("OPT record owner is not the root")
            offset = _read_opt(q, offset)
            continue
        offset += _RRFIXED.size + rdlength  # any other record (e.g. TSIG): ignored
        if offset > len(data):
            raise IndexError("record data runs past the end")
    return offset


def _read_opt(q: Query, offset: int) -> int:
    """The OPT record whose TYPE is at ``offset``, and its options; the offset past it."""
    if q.edns is not None:
        raise ValueError("more than one OPT record")
    data = q.data
    _type, payload, _rcode, version, flags, rdlength = _OPT_FIXED.unpack_from(data, offset)
    offset += _OPT_FIXED.size
    end: int = offset + rdlength
    if end > len(data):
        raise IndexError("record data runs past the end")
    edns = q.edns = Edns(payload, version, flags & 0x8000 != 0, flags & 0x4000 != 0)
    q.shape |= SHAPE_EDNS | (SHAPE_DO if flags & 0x8000 else 0) | (
        SHAPE_CO if flags & 0x4000 else 0) | version << VERSION_SHIFT
    while offset < end:
        code, length = struct.unpack_from("!HH", data, offset)
        start, offset = offset, offset + 4 + length
        if offset > end:
            raise IndexError("EDNS option runs past the end")
        if code == _ECS:
            if edns.ecs is not None:
                raise ValueError("more than one Client Subnet option")
            value = data[start + 4:offset]
            check_subnet(value)
            edns.ecs, q.ecs, q.ecs_end = value, start, offset
            q.shape |= SHAPE_ECS
        elif code == _COOKIE and q.cookie is None:
            q.cookie = data[start + 4:offset]
        elif code == _NSID and not length:
            q.nsid = True
    return end


def check_subnet(value: bytes) -> None:
    """An ECS option's value, checked strictly (RFC 7871 6; 7.2.1: FORMERR when wrong)."""
    size = len(value)
    if size < 4:
        raise ValueError("Client Subnet option shorter than 4 octets")
    family, source = value[0] << 8 | value[1], value[2]
    if family != 1 and family != 2:
        raise ValueError(f"Client Subnet family {family} is not IPv4 (1) or IPv6 (2)")
    if source > (32 if family == 1 else 128):
        raise ValueError(f"Client Subnet source prefix /{source} is too long")
    if size - 4 != (source + 7) >> 3:
        raise ValueError("Client Subnet address length does not match its source prefix")
    if source & 7 and value[-1] & (0xFF >> (source & 7)):
        raise ValueError("Client Subnet address has bits set beyond its source prefix")


def read_subnet(value: bytes) -> ClientSubnet:
    """An ECS option's value as addresses; ``check_subnet`` has passed it (the reader
    checks every option it keeps)."""
    family, source = value[0] << 8 | value[1], value[2]
    raw = value[4:]
    width = 4 if family == 1 else 16
    padded = raw + bytes(width - len(raw))
    address = ipaddress.IPv4Address(padded) if family == 1 else ipaddress.IPv6Address(padded)
    return ClientSubnet(family, source, address, raw)


# ---------------------------------------------------------------- replies


@dataclass(slots=True)
class Reply:
    """What the authority decided, before encoding."""

    rcode: Rcode = Rcode.NOERROR
    authoritative: bool = True
    answer: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)
    scope: int = 0  # ECS SCOPE PREFIX-LENGTH to echo (0: the answer fits every client)
    steered: bool = False  # the answer depends on where the client is
    network: bytes = b""  # ... the client's network it was decided for (``Location.key``)
    personal: bool = False  # ... for one client network alone (its avoidances): never kept
    chosen: tuple[tuple[str, str], ...] = ()  # (service, target) of each steered choice


def reply_limit(payload: int | None, server_payload: int, tcp: bool) -> int:
    """How large a reply may be: over UDP the client's EDNS buffer (``payload``; None
    without EDNS), capped by ours, at least 512; over TCP anything."""
    if tcp:
        return 65535
    if payload is None:
        return 512
    return max(512, min(payload, server_payload))


def render(query: Query, reply: Reply, server_payload: int, limit: int
           ) -> tuple[bytes, bool]:
    """The reply to ``query`` in at most ``limit`` bytes, and whether it is whole.

    The question is copied as the query spelled it; every name the answer repeats points
    at it (so it takes that spelling too). Sections go in order: if the answer or the
    authority section does not fit, the reply is empty with TC=1 (RFC 1035, RFC 2181
    §9); additional records are optional, and as many as fit are sent, with TC=1 only
    when a referral's in-domain glue is left out (RFC 9471). OPT (with the ECS echo) is
    on every reply to a query that had one."""
    opt = _opt(query, reply, server_payload)
    writer = Writer(query, limit - len(opt))
    if not all(writer.add(r) for r in (*reply.answer, *reply.authority)):
        writer = Writer(query, limit)
        return writer.finish(reply, (0, 0, 0), opt, tc=True), False
    kept = [r for r in reply.additional if writer.add(r)]
    counts = (len(reply.answer), len(reply.authority), len(kept))
    if len(kept) == len(reply.additional):
        return writer.finish(reply, counts, opt, tc=False), True
    cuts = [ns.owner for ns in reply.authority if ns.rtype == Type.NS] \
        if not reply.answer else []
    lost = any(r not in kept and any(r.owner[-len(c):] == c for c in cuts)
               for r in reply.additional)
    return writer.finish(reply, counts, opt, tc=lost), False


class Writer:
    """A reply being written: the header (filled in last), the question as the query
    spelled it, then records while they fit in ``limit`` bytes, names compressed against
    every name written before (compared in lower case, as the records' names are).
    After dnspython's ``Renderer``."""

    def __init__(self, query: Query, limit: int) -> None:
        self.query = query
        self.limit = limit
        self.out = bytearray(_HEADER.size)
        self.names: dict[tuple[bytes, ...], int] = {}
        at = _HEADER.size
        folded = query.name
        for i, label in enumerate(query.labels):  # the question, as spelled
            self.names[folded[i:]] = at
            at += len(label) + 1
        self.out += b"".join(bytes((len(label),)) + label for label in query.labels)
        self.out += b"\0" + _QFIXED.pack(query.qtype, query.qclass)

    def add(self, record: Record) -> bool:
        """Write ``record`` if it fits; leave everything as it was if not."""
        mark, known = len(self.out), len(self.names)
        self._name(record.owner)
        self.out += _RRFIXED.pack(record.rtype, record.rclass, record.ttl, 0)
        start = len(self.out)
        for part in record.rdata:
            if isinstance(part, bytes):
                self.out += part
            else:
                self._name(part)
        size = len(self.out) - start
        if len(self.out) > self.limit or size > 0xFFFF:
            del self.out[mark:]
            for name in list(self.names)[known:]:
                del self.names[name]
            return False
        struct.pack_into("!H", self.out, start - 2, size)
        return True

    def _name(self, name: tuple[bytes, ...]) -> None:
        out, names = self.out, self.names
        for i in range(len(name)):
            at = names.get(name[i:])
            if at is not None:
                out += struct.pack("!H", 0xC000 | at)
                return
            if len(out) < 0x4000:
                names[name[i:]] = len(out)
            out.append(len(name[i]))
            out += name[i]
        out.append(0)

    def finish(self, reply: Reply, counts: tuple[int, int, int], opt: bytes, tc: bool
               ) -> bytes:
        query = self.query
        flags = QR | (query.flags & (0x7800 | RD | CD)) | (int(reply.rcode) & 0xF)
        flags |= (AA if reply.authoritative else 0) | (TC if tc else 0)
        an, ns, ar = counts
        _HEADER.pack_into(self.out, 0, query.id, flags, 1, an, ns, ar + (1 if opt else 0))
        return bytes(self.out + opt)


def opt_record(payload: int, rcode: int, do: bool, options: bytes = b"",
               co: bool = False) -> bytes:
    """Our OPT record: the root owner, our UDP payload, the upper bits of the rcode,
    version 0, the DO and CO bits as the query had them, and ``options``."""
    flags = (0x8000 if do else 0) | (0x4000 if co else 0)
    return b"\0" + struct.pack("!HHBBHH", Type.OPT, payload, rcode >> 4, 0, flags,
                                len(options)) + options


def _opt(query: Query, reply: Reply, server_payload: int) -> bytes:
    if query.edns is None:
        return b""
    subnet = query.edns.subnet
    echo = subnet.echo(reply.scope) if subnet is not None else None  # scope may pass source
    options = b"" if echo is None else struct.pack("!HH", Option.ECS, len(echo)) + echo
    return opt_record(server_payload, int(reply.rcode), query.edns.do, options, query.edns.co)


def question(data: bytes) -> bytes:
    """The question of ``data`` as sent (name, type, class), or b"" when unreadable."""
    with contextlib.suppress(ValueError, IndexError, struct.error):
        end = name_end(data, _HEADER.size) + _QFIXED.size
        if end <= len(data):
            return data[_HEADER.size:end]
    return b""


def error_reply(data: bytes, rcode: Rcode, server_payload: int, tc: bool = False) -> bytes:
    """An error reply to ``data``: the header, and, whatever made the query unusable, its
    question and an OPT record (our payload, the DO bit copied, no options) whenever the
    query had them and they can be read, so a resolver never takes an error for a lack
    of EDNS support (RFC 6891 §7)."""
    qid, flags, qd = struct.unpack_from("!HHH", data)
    query = (flags >> 11) & 0xF == Opcode.QUERY
    # CD is defined for QUERY only (RFC 4035 3.2.2): under another opcode it is not echoed
    flags = (flags & (0x7800 | RD | (CD if query else 0))) | QR | (int(rcode) & 0xF) \
        | (TC if tc else 0)
    asked = question(data) if qd == 1 else b""
    if not query and asked[-4:-2] != b"\x00\x06":
        asked = b""  # NOTIFY and UPDATE name their zone by an SOA question; other shapes
        # under another opcode are not ours to repeat (a parser would reject the reply)
    at = _opt_rdata(data)
    opt = b"" if at is None else opt_record(server_payload, int(rcode), bool(data[at - 2] & 0x80))
    return _HEADER.pack(qid, flags, 1 if asked else 0, 0, 0, 1 if opt else 0) + asked + opt


# ---------------------------------------------------------------- EDNS options in place


def _opt_rdata(message: bytes) -> int | None:
    """The offset of the OPT record's RDLENGTH in ``message``, or None (no OPT, or not
    a message that can be walked)."""
    try:
        qd, an, ns, ar = struct.unpack_from("!4H", message, 4)
        i = 12
        for n in range(qd + an + ns + ar):
            i = name_end(message, i, pointers=True)
            if n < qd:
                i += 4
                continue
            rtype, rdlength = struct.unpack_from("!H6xH", message, i)
            if rtype == Type.OPT and n >= qd + an + ns:
                return i + 8
            i += 10 + rdlength
    except (ValueError, IndexError, struct.error):
        return None
    return None


def find_option(message: bytes, code: int) -> bytes | None:
    """The data of EDNS option ``code`` in ``message``, or None when it has none."""
    at = _opt_rdata(message)
    if at is None:
        return None
    end = at + 2 + struct.unpack_from("!H", message, at)[0]
    if end > len(message):
        return None  # the OPT record runs past the end: the strict reader says FORMERR
    i = at + 2
    while i + 4 <= end:
        found, size = struct.unpack_from("!HH", message, i)
        if found == code:
            return message[i + 4:i + 4 + size]
        i += 4 + size
    return None


def add_option(message: bytes, code: int, data: bytes) -> bytes:
    """``message`` with one more option in its OPT record (unchanged without one). The
    OPT record must be the last record, as every reply we write has it."""
    at = _opt_rdata(message)
    if at is None or at + 2 + struct.unpack_from("!H", message, at)[0] != len(message):
        return message
    size = struct.unpack_from("!H", message, at)[0] + 4 + len(data)
    return (message[:at] + struct.pack("!H", size) + message[at + 2:]
            + struct.pack("!HH", code, len(data)) + data)
