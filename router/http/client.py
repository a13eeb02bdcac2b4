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
from typing import NamedTuple

from router.core.ip import IPAddress, IPNetwork
from router.core.memo import Memo


def dotted_quad(text: str) -> int | None:
    """A plain dotted quad as its integer, read by the C library's ``inet_pton`` (as
    strict as ``ipaddress``: four decimal octets, no leading zeros); None: anything else."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        return None


def parse(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``, with a plain dotted quad read by ``dotted_quad``:
    the module's octet-by-octet parser was a third of the cost of a new HTTP client.
    Anything else (IPv6, or not an address) goes to ``ipaddress`` and its ``ValueError``."""
    value = dotted_quad(text)
    return ipaddress.IPv4Address(value) if value is not None else ipaddress.ip_address(text)


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


PEERS = 4096  # socket peers whose trust is remembered (``Proxies``)


def peer_of(text: str, trusted: Sequence[IPNetwork]) -> tuple[IPAddress | None, bool]:
    """The socket peer's address, and whether it is a trusted proxy."""
    addr = parse_ip(text)
    return addr, addr is not None and bool(trusted) and is_trusted(addr, trusted)


def is_trusted(addr: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def client_address(peer: str | None, trusted: Sequence[IPNetwork],
                   forwarded: Iterable[Mapping[str, str]], x_forwarded_for: Iterable[str],
                   known: tuple[IPAddress | None, bool] | None = None) -> IPAddress | None:
    """The client's address (None only when even the peer is unknown). ``known``: what
    ``peer_of`` says of the peer, when the caller knows it already."""
    if known is None:
        known = peer_of(peer, trusted) if peer else (None, False)
    current, trusted_peer = known
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


class Client(NamedTuple):
    """Who sent a request: its address as text, as an integer, and the IP version."""

    text: str
    value: int
    version: int

    @classmethod
    def of(cls, address: IPAddress) -> Client:
        return cls(str(address), int(address), address.version)


class Proxies:
    """The trusted proxies (``--trusted-proxy``), and who a request's client is behind
    them: ``client_address`` for every case, the socket peer remembered, and the common
    case behind a proxy (one ``X-Forwarded-For`` that ends in a dotted quad) read
    without an address object."""

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self.trusted = tuple(trusted)
        self._v4 = tuple((int(n.network_address), int(n.broadcast_address))
                         for n in self.trusted if n.version == 4)
        # peer → (its address, whether it is a trusted proxy, it as a client): the same
        # few proxies ask again and again (bounded: peers are chosen by others)
        self.peers: Memo[str | None, tuple[IPAddress | None, bool, Client | None]] = \
            Memo(2 * PEERS)  # the PEERS most recent

    def trusts(self, peer: str | None) -> bool:
        """Whether the socket peer is one of the trusted proxies."""
        return self._peer(peer)[1]

    def client(self, peer: str | None, forwarded: Iterable[Mapping[str, str]] | None,
               x_forwarded_for: Sequence[str]) -> Client | None:
        """The client (None only when even the peer is unknown). ``forwarded``: the
        request's parsed ``Forwarded`` header, None when it has none."""
        address, trusted, itself = self._peer(peer)
        if not trusted or (forwarded is None and not x_forwarded_for):
            return itself
        if forwarded is None and len(x_forwarded_for) == 1:
            hop = x_forwarded_for[0].rpartition(",")[2].strip()
            value = dotted_quad(hop)
            if value is not None:
                for lo, hi in self._v4:
                    if lo <= value <= hi:
                        break  # a trusted hop: the general path walks on
                else:
                    return Client(hop, value, 4)
        found = client_address(peer, self.trusted, forwarded or (), x_forwarded_for,
                               (address, trusted))
        return Client.of(found) if found is not None else None

    def secure(self, peer: str | None, forwarded: Iterable[Mapping[str, str]],
               x_forwarded_proto: Iterable[str]) -> bool:
        """Whether a trusted proxy says the client came over HTTPS (``X-Forwarded-Proto``
        or ``Forwarded: proto=``; any hop that saw https counts: never downgrade)."""
        if not self._peer(peer)[1]:
            return False
        said = [p.strip().lower() for header in x_forwarded_proto for p in header.split(",")]
        said += [hop.get("proto", "").lower() for hop in forwarded]
        return "https" in said

    def _peer(self, peer: str | None) -> tuple[IPAddress | None, bool, Client | None]:
        peers = self.peers
        known = peers.fresh.get(peer) or peers.from_aged(peer)
        if known is None:
            address, trusted = peer_of(peer, self.trusted) if peer else (None, False)
            known = peers.put(peer, (address, trusted, Client.of(address) if address else None))
        return known
