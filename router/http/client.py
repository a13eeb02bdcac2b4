"""Who is the client? The socket peer, unless that peer is a trusted proxy.

For a trusted peer, the RFC 7239 ``Forwarded`` header (or, without it, ``X-Forwarded-For``)
is walked from the right, skipping trusted proxies; the first hop that is not one is the
client. A client that is not behind a trusted proxy cannot move itself anywhere by
sending these headers: they are not even read.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from router.core.ip import IPAddress, IPNetwork


def parse(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``, with a plain dotted quad read by the C library's
    ``inet_pton`` (as strict: four decimal octets, no leading zeros): the module's
    octet-by-octet parser was a third of the cost of a new HTTP client. Anything else
    (IPv6, or not an address) goes to ``ipaddress`` and its ``ValueError``."""
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return ipaddress.ip_address(text)


def parse_ip(text: str) -> IPAddress | None:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:443`` or ``2001:db8::1`` → address."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        addr = parse(text.partition("%")[0])
    except ValueError:
        return None  # "unknown", "_hidden" (RFC 7239 obfuscated identifiers), garbage
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@lru_cache(maxsize=4096)
def peer_of(text: str, trusted: tuple[IPNetwork, ...]) -> tuple[IPAddress | None, bool]:
    """The socket peer's address, and whether it is a trusted proxy: the same few proxies
    ask again and again, so both are remembered (bounded: peers are chosen by others)."""
    addr = parse_ip(text)
    return addr, addr is not None and bool(trusted) and is_trusted(addr, trusted)


def from_proxy(text: str | None, trusted: tuple[IPNetwork, ...]) -> bool:
    """Whether the socket peer is one of the trusted proxies."""
    return text is not None and peer_of(text, trusted)[1]


def is_trusted(addr: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def client_address(peer: str | None, trusted: Sequence[IPNetwork],
                   forwarded: Iterable[Mapping[str, str]], x_forwarded_for: Iterable[str]
                   ) -> IPAddress | None:
    """The client's address (None only when even the peer is unknown)."""
    current, trusted_peer = peer_of(peer, tuple(trusted)) if peer else (None, False)
    if current is None or not trusted_peer:
        return current
    hops = [h["for"] for h in forwarded if "for" in h]
    if not hops:
        hops = [part for header in x_forwarded_for for part in header.split(",")]
    for hop in reversed(hops):
        addr = parse_ip(hop)
        if addr is None:
            return current  # the proxy we trust could not name the client: stop there
        current = addr
        if not is_trusted(addr, trusted):
            return addr
    return current
