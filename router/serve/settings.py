"""What ``serve`` was asked to do, validated once (``Settings``), and the listening
sockets it binds before anything else (so a busy port fails fast)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from router.core.config import FleetConfig, RrlConfig
from router.core.ip import HostPort, IPNetwork
from router.dns.authority import DEFAULT_PAYLOAD
from router.dns.cache import DEFAULT_SIZE
from router.dns.cookies import new_secret
from router.dns.dnstap import Destination
from router.dns.listener import bind as bind_dns
from router.errors import RouterError
from router.serve.connections import HEADER_BUDGET

T = TypeVar("T")
BACKLOG = 1024  # listen() backlog of the HTTP and DNS-over-TCP sockets
# The kernel's default UDP receive buffer (208 KB) drops queries at 200 outstanding: ask
# for 4 MiB (Linux grants up to net.core.rmem_max; the log says what it granted).
RCVBUF = 4 << 20
# HTTP: a keep-alive connection idle this long is closed (aiohttp's default is an hour),
# and a request may carry at most this many header lines of at most this many bytes
# (aiohttp's defaults, 128 x 8 KiB, let a connection hold about a megabyte of headers).
KEEPALIVE = 15.0
TLS_HANDSHAKE_TIMEOUT = 5.0  # seconds from accept to a finished TLS handshake
MAX_HEADERS = 40
MAX_HEADER_BYTES = 4096


class ListenError(RouterError):
    """A listen address cannot be had: says which listener, where, and what to do."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every ``serve`` option, validated once by the CLI."""

    zones: Path = Path("zones")
    dns: tuple[HostPort, ...] = (("127.0.0.1", 5300),)
    http: tuple[HostPort, ...] = (("127.0.0.1", 8300),)
    admin: tuple[HostPort, ...] = ()  # health, metrics and status, off the public listeners
    https: tuple[HostPort, ...] = ()  # the redirector over TLS (tls_cert, tls_key)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    geoip: Path | None = None
    asn_db: Path | None = None  # an ASN database, for rules by AS (router.core.asn)
    probe: bool = True
    edns_payload: int = DEFAULT_PAYLOAD
    tcp_idle: float = 10.0
    tcp_max: int = 512
    tcp_per_client: int | None = None  # None: max(4, tcp_max / 8)
    rcvbuf: int = RCVBUF  # the DNS UDP receive buffer asked for (the kernel may cap it)
    dns_cache: int = DEFAULT_SIZE  # encoded answers kept (0: none)
    drain_timeout: float = 5.0
    trusted_proxies: tuple[IPNetwork, ...] = ()
    keepalive: float = KEEPALIVE  # seconds an idle HTTP keep-alive connection stays open
    http_max: int | None = None  # open HTTP client connections (None: the fd budget's)
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT
    header_budget: int = HEADER_BUDGET  # bytes of unfinished request heads, in all
    dnstap: Destination | None = None  # where sampled DNS answers go (--dnstap)
    dnstap_sample: float = 1.0
    decision_log_sample: float = 0.0  # steered DNS answers logged with their reason
    backlog: int = BACKLOG  # of every TCP listener
    access_log: bool = False
    beacon: bool = False  # POST /report (router.http.beacon)
    nsid: str | None = None  # this node's name in NSID and id.server (off when None)
    rrl: RrlConfig | None = None  # response rate limiting (off when None)
    workers: int = 1  # processes answering: each applies 1/workers of the RRL rates
    # DNS cookies' current secret (16 bytes): drawn when the settings are made, so every
    # worker, which gets these settings, has the same one; and the previous one
    cookie_secret: bytes = field(default_factory=new_secret)
    cookie_secret_previous: bytes | None = None
    state: Path | None = None  # the operator's state file (overrides), watched
    ca_file: Path | None = None  # extra CAs for checking HTTPS mirrors
    fleet: FleetConfig | None = None  # share health, overrides and file checks (None: alone)


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where to listen: DNS (UDP and TCP), HTTP, admin."""

    dns: tuple[HostPort, ...]
    http: tuple[HostPort, ...]
    admin: tuple[HostPort, ...] = ()
    https: tuple[HostPort, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Addresses:
        return cls(settings.dns, settings.http, settings.admin, settings.https)

    def named(self) -> tuple[tuple[str, tuple[HostPort, ...]], ...]:
        """(listener, its addresses): how errors name them."""
        return (("DNS", self.dns), ("HTTP", self.http), ("admin", self.admin),
                ("HTTPS", self.https))


@dataclass(frozen=True, slots=True)
class Sockets:
    """One serving process's bound sockets: (UDP, TCP) per DNS address, HTTP, admin,
    HTTPS."""

    dns: tuple[tuple[socket.socket, socket.socket], ...]
    http: tuple[socket.socket, ...]
    admin: tuple[socket.socket, ...] = ()
    https: tuple[socket.socket, ...] = ()

    @classmethod
    def bind(cls, settings: Settings, addresses: Addresses, reuse_port: bool = False) -> Sockets:
        """Every socket, or ``ListenError`` naming the one that could not be had."""
        bound: list[socket.socket] = []
        try:
            def dns(host: str, port: int) -> tuple[socket.socket, socket.socket]:
                pair = bind_dns(host, port, reuse_port=reuse_port, rcvbuf=settings.rcvbuf,
                                backlog=settings.backlog)
                bound.extend(pair)
                return pair

            def http(host: str, port: int) -> socket.socket:
                bound.append(sock := bind_http(host, port, reuse_port))
                return sock

            return cls(tuple(_named("DNS", a, dns) for a in addresses.dns),
                       tuple(_named("HTTP", a, http) for a in addresses.http),
                       tuple(_named("admin", a, http) for a in addresses.admin),
                       tuple(_named("HTTPS", a, http) for a in addresses.https))
        except ListenError:
            for sock in bound:
                sock.close()
            raise

    def all(self) -> tuple[socket.socket, ...]:
        return (*(s for pair in self.dns for s in pair), *self.http, *self.admin, *self.https)

    def addresses(self) -> Addresses:
        """Where these sockets listen (a port 0 resolved to the one the kernel gave)."""
        return Addresses(tuple(_host_port(udp) for udp, _tcp in self.dns),
                         tuple(_host_port(s) for s in self.http),
                         tuple(_host_port(s) for s in self.admin),
                         tuple(_host_port(s) for s in self.https))

    def close(self) -> None:
        for sock in self.all():
            sock.close()


def bind_http(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:  # [::]:8300 beside 0.0.0.0:8300, as DNS does
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _named(listener: str, address: HostPort, bind: Callable[[str, int], T]) -> T:
    try:
        return bind(*address)
    except OSError as e:
        raise ListenError(f"{listener} {fmt(address)}: {e.strerror or e}{_hint(e, address)}"
                          ) from None


def _hint(e: OSError, address: HostPort) -> str:
    if e.errno == errno.EACCES and address[1] < 1024:
        return ("; a port below 1024 needs CAP_NET_BIND_SERVICE: the systemd unit grants it "
                "(AmbientCapabilities=); elsewhere run it under systemd-run -p "
                "AmbientCapabilities=CAP_NET_BIND_SERVICE, or listen above 1023 and "
                "redirect port 53 there (nftables): not setcap on the Python binary, "
                "which gives every Python program the privilege")
    if e.errno == errno.EADDRINUSE:
        return "; another program listens there (or another mirror-router)"
    if e.errno == errno.EADDRNOTAVAIL:
        return "; no interface of this machine has that address"
    return ""


def claim(addresses: Addresses) -> list[socket.socket]:
    """Make every fixed listen address ours alone, for as long as this process lives.

    Our own workers share their ports through SO_REUSEPORT, which the kernel would grant
    a second mirror-router (same user) as well: the two would then split the traffic,
    each with its own config. So the process that binds (the server, or the supervisor)
    first takes one abstract UNIX socket per address, named for it: a second instance
    finds the name taken and refuses to start. The kernel lets the name go when this
    process ends, however it ends. Port 0 (any free port) needs none.
    """
    held: list[socket.socket] = []
    for listener, group in addresses.named():
        for host, port in group:
            if port == 0:
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(f"\0mirror-router {listener} {fmt((host, port))}")
            except OSError:
                sock.close()
                for other in held:
                    other.close()
                raise ListenError(f"{listener} {fmt((host, port))}: another mirror-router "
                                  "already serves this address") from None
            held.append(sock)
    return held


def _host_port(sock: socket.socket) -> HostPort:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def fmt(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """``127.0.0.1:5300``, ``[::1]:5300``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
