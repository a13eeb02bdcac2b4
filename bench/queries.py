"""The bench's queries in wire form: go.example.com A, plain or with an ECS /24 option."""

from __future__ import annotations

import ipaddress
import random
import struct

from router.core.geo import SPECIAL

QUERY = "go.example.com"


def subnets(count: int, seed: int = 6) -> list[int]:
    """``count`` distinct routable IPv4 /24s (as integers), the same ones for the same seed."""
    rnd = random.Random(seed)
    special = [n for n in SPECIAL if n.version == 4]
    chosen: dict[int, None] = {}  # in the order drawn
    while len(chosen) < count:
        net = rnd.randrange(1 << 24, 224 << 24) & ~0xFF
        if net in chosen or any(ipaddress.IPv4Address(net) in n for n in special):
            continue
        chosen[net] = None
    return list(chosen)


def ecs_queries(count: int, seed: int = 6) -> bytes:
    """``count`` queries (TCP framing, for dnsperf -B), each with its own routable /24."""
    out = bytearray()
    for i, net in enumerate(subnets(count, seed), 1):
        query = wire_query(i & 0xFFFF, ecs=net.to_bytes(4, "big")[:3])
        out += struct.pack("!H", len(query)) + query
    return bytes(out)


def wire_query(qid: int, ecs: bytes | None = None) -> bytes:
    """go.example.com A, RD clear; with ``ecs`` (3 octets) an EDNS0 ECS /24 option."""
    name = b"".join(bytes([len(p)]) + p.encode() for p in QUERY.split(".")) + b"\0"
    question = name + struct.pack("!HH", 1, 1)
    if ecs is None:
        return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + question
    option = struct.pack("!HHHBB", 8, 7, 1, 24, 0) + ecs
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(option)) + option
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1) + question + opt


def unframe(framed: bytes) -> list[bytes]:
    """The messages of a TCP-framed stream (two octets of length before each)."""
    out, at = [], 0
    while at < len(framed):
        size = int.from_bytes(framed[at:at + 2], "big")
        out.append(framed[at + 2:at + 2 + size])
        at += 2 + size
    return out
