"""DNS over UDP and TCP (RFC 7766) on asyncio: thin protocols around ``Authority.handle``.

UDP and TCP share one address and port. TCP messages are length-prefixed; a connection
may carry many queries, is closed after ``idle_timeout`` of silence, and the number of
open connections is bounded (new ones past the bound are closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import socket
import struct
import termios
import time
from typing import cast

import structlog

from router.core.dnsparams import Option
from router.core.ip import HostPort, IPAddress
from router.core.memo import Sweep
from router.dns import wire
from router.dns.authority import Authority
from router.dns.dnstap import Tap

log = structlog.get_logger("router.dns")

CLOSE_WAIT = 2.0  # seconds a stopping listener waits for its TCP connections
MESSAGE_TIMEOUT = 5.0  # seconds a DNS message begun over TCP may take to arrive whole
SLOW_MESSAGE = 0.5  # seconds: a message still arriving after this may lose its slot
FRESH = 2.0  # seconds a new connection that has sent nothing yet is not taken for idle
SNDBUF = 64 * 1024  # send buffer of a DNS-over-TCP connection (the kernel doubles it)
SENDERS = 65536  # UDP senders whose address objects are kept



class Dispatch:
    """Holds the current ``Authority``; a reload swaps it without touching the sockets.
    ``tap``: where sampled answers go (``--dnstap``), if anywhere."""

    def __init__(self, authority: Authority, tap: Tap | None = None) -> None:
        self.authority = authority
        self.tap = tap


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self.transport: asyncio.DatagramTransport | None = None
        # senders' addresses as text → as addresses (bounded: senders are chosen by others)
        self.peers: Sweep[str | int, IPAddress] = Sweep(SENDERS)
        self.local = (b"", 0)  # this socket's address (packed) and port: for dnstap
        self._known = self.peers.fresh  # its one dict (a Sweep never replaces it)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass
        self.local = _local(transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        peer = self._known.get(addr[0])
        if peer is None:
            peer = self._peer(addr[0])
        reply = self.dispatch.authority.handle(data, peer, False)
        if reply is not None:
            self.transport.sendto(reply, addr)  # type: ignore[union-attr]
            tap = self.dispatch.tap
            if tap is not None:
                tap.seen(data, reply, peer, int(addr[1]), False, self.local)

    def _peer(self, host: str | int) -> IPAddress:
        self.peers.misses += 1
        return self.peers.put(host, ipaddress.ip_address(str(host).partition("%")[0]))

    def error_received(self, exc: Exception) -> None:
        log.debug("dns_udp_error", error=str(exc))  # e.g. ICMP port unreachable: harmless


class TcpProtocol(asyncio.Protocol):
    """One DNS-over-TCP connection: length-prefixed messages, pipelined in order.

    RFC 7766 §6.2.3: the idle timer starts over only when a whole message has come in, and
    a message begun must be complete within ``message_timeout``; a client dripping bytes
    holds its connection no longer than that."""

    def __init__(self, pool: TcpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.peer: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        self.port = 0
        self.local: tuple[bytes, int] | None = None  # our address and port, for dnstap
        self.timer: asyncio.TimerHandle | None = None
        # time.monotonic(), not loop.time(): uvloop's clock is cached per loop turn in
        # milliseconds, and ties would make "the longest idle" an arbitrary one
        self.idle_since = 0.0  # when its last whole message came (or it connected)
        self.begun = 0.0  # when the message still arriving began
        self.connected = 0.0  # when it connected
        self.spoke = False  # a whole message has come
        self.stalled: asyncio.TimerHandle | None = None  # replies unread since (pause_writing)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        host = transport.get_extra_info("peername")[0]
        self.peer = ipaddress.ip_address(host.partition("%")[0])
        self.port = int(transport.get_extra_info("peername")[1])
        self.connected = time.monotonic()
        if not self.pool.admit(self):
            transport.abort()
            return
        self._wait(self.pool.idle_timeout)

    def data_received(self, data: bytes) -> None:
        started = not self.buffer
        self.buffer += data
        whole = False
        while len(self.buffer) >= 2:
            (size,) = struct.unpack_from("!H", self.buffer)
            if len(self.buffer) < 2 + size:
                break
            message = bytes(self.buffer[2:2 + size])
            del self.buffer[:2 + size]
            whole = self.spoke = True
            if not self._answer(message):
                return
        if self.buffer and (started or whole):  # a message begun: it has so long to finish
            self.begun = time.monotonic()
            self._wait(self.pool.message_timeout)
        elif whole:
            self._wait(self.pool.idle_timeout)

    def _answer(self, message: bytes) -> bool:
        assert self.transport is not None and self.peer is not None
        reply = self.pool.dispatch.authority.handle(message, self.peer, tcp=True)
        if reply is None:  # not even a header: nothing sensible to say; hang up
            self.transport.close()
            return False
        if wire.find_option(message, Option.KEEPALIVE) == b"":  # RFC 7828: say how long
            reply = wire.add_option(reply, Option.KEEPALIVE, self.pool.keepalive_option)
        self.transport.write(struct.pack("!H", len(reply)) + reply)
        tap = self.pool.dispatch.tap
        if tap is not None:
            if self.local is None:  # once per connection, and only when tapping
                self.local = _local(self.transport)
            tap.seen(message, reply, self.peer, self.port, True, self.local)
        return True

    @property
    def idle(self) -> bool:
        """Between messages (none begun), so closing it loses nothing."""
        return not self.buffer

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()  # the client is not reading: stop taking queries
        # and if it does not read within the message timeout, it goes (its unread
        # replies dropped: a reset, so no orphan socket keeps them in the kernel)
        if self.stalled is None:
            self.stalled = asyncio.get_running_loop().call_later(
                self.pool.message_timeout, self._unread)

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None

    def _unread(self) -> None:
        self.pool.dispatch.authority.stats.errors["dns_tcp_unread_closed"] += 1
        if self.transport is not None:
            _reset(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.timer, self.stalled):
            if timer is not None:
                timer.cancel()
        self.pool.release(self)

    def _wait(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        if seconds == self.pool.idle_timeout and not self.buffer:
            self.idle_since = time.monotonic()
        self.timer = loop.call_later(seconds, self.close)

    def close(self) -> None:
        """Close it; with replies still unsent (ours, or the kernel's: a client that
        does not read), at once: a reset, as a socket closed with data the client never
        reads would linger in the kernel as an orphan, holding it."""
        if self.transport is not None:
            if self.transport.get_write_buffer_size() or _unsent(self.transport):
                self.pool.dispatch.authority.stats.errors["dns_tcp_unread_closed"] += 1
                _reset(self.transport)
            else:
                self.transport.close()


def _local(transport: asyncio.BaseTransport) -> tuple[bytes, int]:
    """A socket's own address (packed) and port, as dnstap records the server's."""
    name = transport.get_extra_info("sockname")
    try:
        return ipaddress.ip_address(name[0].partition("%")[0]).packed, int(name[1])
    except (TypeError, ValueError, IndexError):
        return b"", 0


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes the kernel holds that the peer has not acknowledged (``SIOCOUTQ``); 0 when
    it cannot tell."""
    sock = transport.get_extra_info("socket")
    try:
        found = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, AttributeError, ValueError):
        return 0
    return int(struct.unpack("i", found)[0])


def _reset(transport: asyncio.Transport) -> None:
    """Close with a reset (``SO_LINGER`` 0): what the kernel still holds to send is
    dropped, where a plain close would keep it as an orphan until the peer reads."""
    with contextlib.suppress(OSError, AttributeError):
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                      struct.pack("ii", 1, 0))
    transport.abort()


class TcpPool:
    """The open TCP connections, bounded in number and per client address. When full, the
    connection idle the longest makes room for a new one (RFC 7766 §6.2.3); a client that
    holds ``per_client`` connections gets no more."""

    def __init__(self, dispatch: Dispatch, max_connections: int, idle_timeout: float,
                 message_timeout: float | None = None, per_client: int | None = None) -> None:
        self.dispatch = dispatch
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.message_timeout = min(idle_timeout, MESSAGE_TIMEOUT) \
            if message_timeout is None else message_timeout
        self.per_client = per_client or max(4, max_connections // 8)
        # RFC 7828: the idle timeout, in units of 100 ms, for clients that ask for it
        self.keepalive_option = struct.pack("!H", min(0xFFFF, round(idle_timeout * 10)))
        self.open: set[TcpProtocol] = set()
        self._by_client: dict[object, int] = {}

    def admit(self, conn: TcpProtocol) -> bool:
        if self._by_client.get(conn.peer, 0) >= self.per_client:
            return False
        if len(self.open) >= self.max_connections:
            oldest = self._making_room()
            if oldest is None:
                return False
            self.release(oldest)  # counted out now; it closes on the next loop turn
            oldest.close()
        self.open.add(conn)
        self._by_client[conn.peer] = self._by_client.get(conn.peer, 0) + 1
        return True

    def _making_room(self) -> TcpProtocol | None:
        """The connection to close for a new one: the longest idle (a new one that has
        not spoken yet counts only after ``FRESH`` seconds); else the one whose message
        has been arriving longest, if for over ``SLOW_MESSAGE`` (a whole query comes in
        one segment: one dripped in a byte at a time is a worse use of a slot than a new
        client); else the oldest new one; else none."""
        now = time.monotonic()
        # a new connection that has not spoken yet is not idle for its first FRESH
        # seconds: else drippers holding the pool would make each new client the first out
        idle = [c for c in self.open if c.idle and (c.spoke or now - c.connected > FRESH)]
        if idle:
            return min(idle, key=lambda c: c.idle_since)
        slowest = min((c for c in self.open if not c.idle), key=lambda c: c.begun,
                      default=None)
        if slowest is not None and now - slowest.begun > SLOW_MESSAGE:
            return slowest
        return min((c for c in self.open if c.idle), key=lambda c: c.connected, default=None)

    def release(self, conn: TcpProtocol) -> None:
        if conn in self.open:
            self.open.discard(conn)
            left = self._by_client.get(conn.peer, 1) - 1
            if left:
                self._by_client[conn.peer] = left
            else:
                self._by_client.pop(conn.peer, None)

    def close_all(self) -> None:
        for conn in list(self.open):
            conn.close()


def bind(host: str, port: int, reuse_port: bool = False,
         rcvbuf: int | None = None, backlog: int = 1024) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same address and port (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _attempt in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for sock in (udp, tcp):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if rcvbuf:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            _bind(udp, (host, port), "UDP")
            _bind(tcp, (host, udp.getsockname()[1]), "TCP")
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)  # connections inherit it
            tcp.listen(backlog)
        except OSError:
            udp.close()
            tcp.close()
            if port == 0:
                continue  # the UDP port was free but its TCP twin was not: try another
            raise
        udp.setblocking(False)
        tcp.setblocking(False)
        if rcvbuf:  # once, for the pair that was kept
            granted = udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux
            log.info("udp_receive_buffer", address=f"{host}:{udp.getsockname()[1]}",
                     asked=rcvbuf, granted=granted, capped=granted < rcvbuf)
        return udp, tcp
    raise OSError(f"no free port on {host} for both UDP and TCP")


def _bind(sock: socket.socket, address: HostPort, kind: str) -> None:
    """``sock.bind``, with an error that says which of the two sockets it was."""
    try:
        sock.bind(address)
    except OSError as e:
        raise OSError(e.errno, f"{kind}: {e.strerror}") from None


class DnsListener:
    """UDP and TCP on one address; ``address`` is the bound (host, port)."""

    def __init__(self, dispatch: Dispatch, max_tcp: int = 512, idle_timeout: float = 10.0,
                 per_client: int | None = None, backlog: int = 1024) -> None:
        self.dispatch = dispatch
        self.backlog = backlog
        self.pool = TcpPool(dispatch, max_tcp, idle_timeout, per_client=per_client)
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.address: HostPort = ("", 0)
        self.protocol: UdpProtocol | None = None

    async def start_on(self, udp_sock: socket.socket, tcp_sock: socket.socket) -> HostPort:
        """Serve on sockets from ``bind()`` (bound early, so a busy port fails fast)."""
        loop = asyncio.get_running_loop()
        self.address = udp_sock.getsockname()[:2]
        self.udp, self.protocol = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(self.dispatch), sock=udp_sock)
        self.tcp = await loop.create_server(lambda: TcpProtocol(self.pool), sock=tcp_sock,
                                            backlog=self.backlog)
        return self.address

    def udp_senders(self) -> dict[str, int]:
        """The UDP senders' table (``core.memo``): its counters."""
        return self.protocol.peers.counters() if self.protocol is not None else {}

    def close(self) -> None:
        """Stop taking queries: UDP closed, no new TCP connections, open ones closed."""
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
            self.pool.close_all()

    async def wait_closed(self) -> None:
        """Until the TCP connections are gone (at most ``CLOSE_WAIT`` seconds)."""
        if self.tcp is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.tcp.wait_closed(), CLOSE_WAIT)
