"""A query as the answer cache sees it: read straight from the bytes, in one pass.

``peek()`` finds what an answer depends on (the question with its name case-folded, the
header bits that are copied into a reply, the EDNS shape) and where the parts that are
patched into a cached answer are: the name as spelled, and the Client Subnet option.
It accepts only the common shapes (one question, no answer or authority records, no
additional record or exactly one OPT record, last) and returns None for anything else,
which then takes the strict path (``wire.parse``, ``wire.render``).

It is lenient where a cache hit proves the point: the name is walked without checking
label types or length, because an answer is only ever stored under a question that
``wire.parse`` accepted (and ``AnswerCache.store`` checks that both found the same
name), and a well-formed name delimits itself, so a walk that went astray yields a
question that no answer is stored under. The ECS option is only located here; the cache
checks it with ``wire.read_subnet`` (once per distinct value) before it uses a stored
answer. Pure: no sockets, no state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

QUESTION = 12  # the question starts right after the header
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_NO_ADDITIONAL, _ONE_ADDITIONAL = b"\x00\x00", b"\x00\x01"
_OPT = struct.Struct("!BHHxBHH")  # owner (0: "."), TYPE, CLASS (payload), TTL, RDLENGTH
_OPTION = struct.Struct("!HH")
_OPT_TYPE, _ECS = 41, 8

# The shape bits of a cache key: what of the query, besides the question, is in a reply.
COPIED_FLAGS = 0x0110  # RD and CD are copied into the reply's header
EDNS = 0x10000  # an OPT record is present (so the reply has one)
DO = 0x20000  # DNSSEC OK, copied into the reply's OPT
ECS = 0x40000  # a Client Subnet option is present (so the reply echoes one)
CO = 0x80000  # Compact answers OK (RFC 9824): a signed zone's denials differ
VERSION_SHIFT = 24  # the EDNS version (above 0: BADVERS)

_SCOPE = [bytes((n,)) for n in range(256)]

Base = tuple[bytes, int]  # (case-folded question with TYPE and CLASS, shape bits)


@dataclass(slots=True)  # not frozen: built for every query, and frozen costs ~1 us
class Peek:
    base: Base
    name_end: int  # just past the query name
    folded: bool  # the name was already in lower case
    payload: int | None  # the EDNS UDP buffer size (None: no EDNS)
    ecs: int  # offset of the Client Subnet option (-1: none)
    ecs_end: int


def peek(data: bytes) -> Peek | None:
    """Read a query's cache key and patch points, or None to leave it to the strict path."""
    if len(data) < QUESTION + 5 or data[2] & 0xF8 or data[4:10] != _ONE_QUESTION:
        return None  # a response, an opcode other than QUERY, or not one question
    try:
        i = QUESTION
        while size := data[i]:
            i += size + 1
    except IndexError:
        return None
    name_end, qend = i + 1, i + 5
    name = data[QUESTION:name_end]
    folded = name.lower()
    flags = ((data[2] << 8) | data[3]) & COPIED_FLAGS
    additional = data[10:12]
    if additional == _NO_ADDITIONAL and qend == len(data):
        edns: _Edns | None = (flags, None, -1, -1)
    elif additional == _ONE_ADDITIONAL:
        edns = _opt(data, qend, flags)
    else:
        edns = None
    if edns is None:
        return None
    shape, payload, ecs, ecs_end = edns
    return Peek((folded + data[name_end:qend], shape), name_end, folded == name, payload,
                ecs, ecs_end)


_Edns = tuple[int, int | None, int, int]  # shape bits, payload, ECS option start and end


def _opt(data: bytes, at: int, shape: int) -> _Edns | None:
    """The OPT record at ``at`` (the last thing in the packet) and its ECS option."""
    end, size = at + 11, len(data)
    if size < end:
        return None
    owner, rtype, payload, version, flags, rdlength = _OPT.unpack_from(data, at)
    if owner or rtype != _OPT_TYPE or size != end + rdlength:
        return None
    shape |= EDNS | (DO if flags & 0x8000 else 0) | (CO if flags & 0x4000 else 0) \
        | version << VERSION_SHIFT
    ecs = ecs_end = -1
    offset = end
    while offset < size:
        if offset + 4 > size:
            return None
        code, length = _OPTION.unpack_from(data, offset)
        option_end = offset + 4 + length
        if option_end > size:
            return None
        if code == _ECS:
            if ecs >= 0:
                return None  # two Client Subnet options: FORMERR, on the strict path
            ecs, ecs_end, shape = offset, option_end, shape | ECS
        offset = option_end
    return shape, payload, ecs, ecs_end


def echo(value: bytes, scope: int) -> bytes:
    """The OPT RDATA of a reply to a query with the ECS option ``value``, at ``scope``.

    (Our OPT carries no other option, so its RDLENGTH is this option's size.)
    """
    return ((len(value) + 4).to_bytes(2, "big") + b"\x00\x08" + len(value).to_bytes(2, "big")
            + value[:3] + _SCOPE[scope] + value[4:])


def recase(reply: bytes, data: bytes, name_end: int) -> bytes:
    """``reply`` with the question name spelled as in ``data`` (the query).

    Every later name that is compressed into the question takes that spelling too.
    """
    return reply[:QUESTION] + data[QUESTION:name_end] + reply[name_end:]
