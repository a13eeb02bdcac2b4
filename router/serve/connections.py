"""A cap on open HTTP client connections, around aiohttp (which has none).

aiohttp bounds what one connection may do: its keep-alive timer starts at connect and is
not restarted by bytes, only by a whole request, so a client trickling headers
(slowloris) is closed like an idle one after ``--keepalive`` seconds; header lines and
counts are capped (``MAX_HEADERS`` x ``MAX_HEADER_BYTES``). What it lacks is a bound on
how many connections are open at once. ``CappedSite`` is aiohttp's ``SockSite`` with
its protocol factory wrapped: past ``limit`` open connections, the one that has waited
longest for a request (an idle keep-alive, a slow sender) is closed to admit the new
one; when every connection is in the middle of a response, the new one is closed at
once. Either way it is counted in ``Stats.errors`` (``http_connection_evicted``,
``http_connection_refused``).

Unfinished request heads are bounded in all (``--header-budget``, 128 MiB by default):
the bytes a connection has sent of a request whose head is not yet whole are counted,
and past the budget the connections that began theirs longest ago are closed (counted
as ``http_header_budget``); each is already bounded by ``MAX_HEADERS`` lines, so this
caps what many connections at once can hold (an unfinished head costs about twice its
bytes in RSS).

Memory held for connections (header buffers) is freed when they close, but the C heap
keeps it from the system; ``Cap.give_back()`` asks libc to return it (``malloc_trim``)
every ``TRIM_EVERY`` seconds in which at least ``TRIM_AFTER`` connections closed, so a
flood of giant unfinished headers leaves no lasting mark on RSS.

A TLS connection counts from ``accept`` too. aiohttp (through ``create_server(ssl=…)``)
sees a TLS connection only once its handshake is done, so a flood of connections that
never send a ClientHello would hold descriptors the cap never saw. Here an HTTPS listener
is a plain one whose connections start as ``Handshake``: counted against the cap and
evictable (the oldest first, before any idle connection) from ``accept``, at most
``HANDSHAKES_PER_ADDRESS`` unfinished from one address (a /64 for IPv6; past it that
address's oldest is closed), given ``--tls-handshake-timeout`` seconds, and then upgraded
in place (``loop.start_tls``) and handed to aiohttp's protocol.

The limit defaults to what the file-descriptor budget leaves (``budget()``): the soft
``RLIMIT_NOFILE`` (raised to the hard one at start), less a reserve for the health
checks, catalog fetches, file checks and DNS-over-TCP connections, so that a flood of
clients can never make the router's own checks fail with ``Too many open files``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import ipaddress
import resource
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from router.core.stats import Stats

log = structlog.get_logger("router.serve")

RESERVE = 256  # descriptors kept for our own outgoing connections, files and listeners
ADMIN_LIMIT = 64  # connections to the admin listener (a scraper or two, an operator)
TRIM_AFTER = 64  # connections closed since the last look before memory is handed back
TRIM_EVERY = 2.0  # seconds between looks
TRIM_QUIET = 10.0  # seconds after which any closed connection is enough to hand memory back
HEADER_BUDGET = 128 << 20  # bytes of unfinished request heads, all connections together
HANDSHAKES_PER_ADDRESS = 64  # unfinished TLS handshakes from one address (IPv6: one /64)


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as nginx and most servers do);
    the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def budget(nofile: int, dns_tcp: int) -> int:
    """HTTP client connections that ``nofile`` descriptors allow, after the reserve and
    ``dns_tcp`` DNS-over-TCP connections (at least 16)."""
    return max(16, nofile - RESERVE - dns_tcp)


class Refuse(asyncio.Protocol):
    """A connection admitted only to be closed: every slot is busy answering."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class Cap:
    """The open-connection bound of one aiohttp ``web.Server`` (all its sites): the
    connections aiohttp holds and the TLS handshakes not yet handed to it."""

    def __init__(self, server: web.Server, limit: int, stats: Stats,
                 handshake_timeout: float = 5.0, header_budget: int = HEADER_BUDGET) -> None:
        self.server = server
        self.limit = limit
        self.stats = stats
        self.handshake_timeout = handshake_timeout
        self.accepted = 0  # connections admitted, ever
        self.handshakes: dict[Handshake, None] = {}  # unfinished, oldest first
        self.header_budget = header_budget
        self.heads: dict[RequestHandler, int] = {}  # unfinished request heads' bytes, oldest first
        self.head_bytes = 0  # their sum
        self._counted = _counting(self)
        self.by_address: Counter[str] = Counter()  # unfinished handshakes per address

    def open(self) -> int:
        """Connections counted against the limit."""
        return len(self.server._connections) + len(self.handshakes)

    async def give_back(self) -> None:
        """Forever: once connections closed (many at once, or any in the last
        ``TRIM_QUIET`` seconds), collect what they left (the collector's young generation
        is large, so a burst's cycles can wait long for it) and hand the freed memory
        back to the system."""
        seen, held, closed = 0, 0, 0  # accepted and open at the last look; closed since
        last = time.monotonic()
        while True:
            await asyncio.sleep(TRIM_EVERY)
            accepted, open_ = self.accepted, self.open()
            closed += max(0, (accepted - seen) - (open_ - held))
            seen, held = accepted, open_
            now = time.monotonic()
            if closed >= TRIM_AFTER or (closed and now - last >= TRIM_QUIET):
                found = gc.collect()
                log.debug("memory_given_back", connections=open_, closed=closed,
                          collected=found, trimmed=_trim())
                closed, last = 0, now

    def _room(self) -> bool:
        """Make room for one more connection if the cap is reached: close the oldest
        unfinished handshake, else the connection that has waited longest for a request.
        False: every connection is in the middle of a response."""
        if self.open() < self.limit:
            return True
        if self.handshakes:
            next(iter(self.handshakes)).close("tls_handshake_evicted")
            return True
        open_ = self.server._connections  # handler -> transport, oldest first
        idle = next((h for h in open_ if _waiting(h)), None)
        if idle is None:
            self.stats.errors["http_connection_refused"] += 1
            return False
        idle.force_close()
        open_.pop(idle, None)  # closed: not counted while its close completes
        self.stats.errors["http_connection_evicted"] += 1
        return True

    def protocol(self) -> asyncio.Protocol:
        """aiohttp's protocol factory, after making room if the cap is reached."""
        return self._admitted(self.handler)

    def handler(self) -> RequestHandler:
        """aiohttp's protocol for one connection, whose refusals of malformed requests
        (aiohttp answers them before any handler of ours runs) are counted too."""
        handler = self.server()
        handler.__class__ = self._counted
        return handler

    def tls(self, context: ssl.SSLContext) -> asyncio.Protocol:
        """The protocol factory of an HTTPS listener: a ``Handshake`` with ``context``,
        after making room if the cap is reached."""
        return self._admitted(lambda: Handshake(self, context))

    def _admitted(self, make: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """``make()`` once there is room for one more connection, else a ``Refuse``."""
        if not self._room():
            return Refuse()
        self.accepted += 1
        return make()

    def head(self, handler: RequestHandler, received: int, finished: bool) -> None:
        """``handler`` received ``received`` bytes of a request head (``finished``: a
        head came whole, so what it held is gone); past the budget, the heads begun
        longest ago are closed."""
        if finished:
            self.forget(handler)
            return
        self.heads[handler] = self.heads.get(handler, 0) + received  # keeps its place
        self.head_bytes += received
        while self.head_bytes > self.header_budget and self.heads:
            oldest = next(iter(self.heads))
            self.head_bytes -= self.heads.pop(oldest)
            oldest.force_close()
            if oldest.transport is not None:
                oldest.transport.close()
            self.stats.errors["http_header_budget"] += 1

    def forget(self, handler: RequestHandler) -> None:
        self.head_bytes -= self.heads.pop(handler, 0)

    def release(self, handshake: Handshake) -> None:
        """``handshake`` is over (handed on, failed or closed): no longer counted."""
        if self.handshakes.pop(handshake, False) is None:
            self.by_address[handshake.address] -= 1
            if self.by_address[handshake.address] <= 0:
                del self.by_address[handshake.address]


class Handshake(asyncio.Protocol):
    """A TLS connection from ``accept`` until its handshake is done: counted by its
    ``Cap`` and closed if not done ``handshake_timeout`` seconds after accept. Its first
    bytes (the ClientHello) start the upgrade (``loop.start_tls``); they are handed to
    the TLS protocol before it reads more, and the connection is then handed to
    aiohttp's protocol with any bytes that arrived between the two."""

    def __init__(self, cap: Cap, context: ssl.SSLContext) -> None:
        self.cap = cap
        self.context = context
        self.address = ""
        self.transport: asyncio.Transport | None = None  # None: closed by us, or handed on
        self.hello: bytes | None = None  # the first bytes, read before start_tls
        self.early: list[bytes] = []  # decrypted before the hand-over
        self.ended = False  # the client closed its side before the hand-over
        self.lost = False  # the connection closed before the hand-over
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.address = _address_key(transport.get_extra_info("peername"))
        cap = self.cap
        cap.handshakes[self] = None
        cap.by_address[self.address] += 1
        if cap.by_address[self.address] > HANDSHAKES_PER_ADDRESS:
            oldest = next(h for h in cap.handshakes if h.address == self.address)
            oldest.close("tls_handshakes_per_address")
        if self.transport is not None:  # not the one just closed
            self.timer = asyncio.get_running_loop().call_later(
                cap.handshake_timeout, self.close, "tls_handshake_timeout")

    def data_received(self, data: bytes) -> None:
        if self.hello is not None:  # from the TLS protocol: after the handshake
            self.early.append(data)
        elif self.transport is not None:
            self.hello = data
            self.transport.pause_reading()
            self.task = asyncio.ensure_future(self._upgrade(self.transport))

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        # runs once start_tls has put its protocol in place, before it resumes reading
        loop.call_soon(self._hand_hello, transport)
        try:
            secured = await loop.start_tls(transport, self, self.context, server_side=True,
                                           ssl_handshake_timeout=self.cap.handshake_timeout)
        except (OSError, ssl.SSLError, ConnectionError, RuntimeError, TimeoutError):
            if self.transport is not None:  # not closed by us: the client's failure
                self.cap.stats.errors["tls_handshake_failed"] += 1
                self._forget()
            transport.abort()
            return
        if secured is None or self.transport is None or self.lost:
            return
        self._forget()
        handler = self.cap.handler()
        secured.set_protocol(handler)
        handler.connection_made(secured)
        for data in self.early:
            handler.data_received(data)
        if self.ended:
            handler.eof_received()
        self.early.clear()

    def _hand_hello(self, transport: asyncio.Transport) -> None:
        """The bytes read before start_tls, to the TLS protocol that replaced this one."""
        tls: Any = transport.get_protocol()
        data = memoryview(self.hello or b"")
        while tls is not self and data and not transport.is_closing():
            buffer = tls.get_buffer(len(data))
            n = min(len(buffer), len(data))
            buffer[:n] = data[:n]
            tls.buffer_updated(n)
            data = data[n:]

    def _forget(self) -> None:
        """No longer counted, no longer timed: handed on or closed."""
        self.cap.release(self)
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def close(self, reason: str) -> None:
        """Close this connection (to make room, or at the timeout), counted as ``reason``."""
        transport = self.transport
        if transport is None:
            return
        self._forget()
        self.cap.stats.errors[reason] += 1
        transport.abort()

    def eof_received(self) -> bool | None:
        if self.hello is None:
            return None  # gone before saying hello: the transport closes
        self.ended = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.transport is not None:
            self._forget()


def _address_key(peer: Any) -> str:
    """Whose connection this is, for the per-address cap: the IPv4 address, or the /64."""
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network((address, 64), strict=False))
    return str(address)


def _counting(cap: Cap) -> type[RequestHandler]:
    """aiohttp's ``RequestHandler`` whose error responses other than 500 (the 400s of a
    malformed request; a 500 is counted where it is raised) go to ``http_responses``,
    and whose unfinished request heads are counted against ``cap``'s budget."""
    stats = cap.stats

    class Counted(RequestHandler):
        __slots__ = ()

        def data_received(self, data: bytes) -> None:
            parsed = self._request_count
            super().data_received(data)
            finished = self._request_count > parsed
            if finished or not self._request_in_progress:
                cap.head(self, len(data), finished)

        def connection_lost(self, exc: BaseException | None) -> None:
            cap.forget(self)
            super().connection_lost(exc)

        def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                         message: str | None = None) -> web.StreamResponse:
            if status != 500:
                stats.http_responses[status] += 1
            try:
                return super().handle_error(request, status, exc, message)
            finally:
                if exc is not None:  # logged: its frames would hold the read buffers
                    exc.__traceback__ = None

    return Counted


def _trim() -> bool:
    """glibc's ``malloc_trim(0)``: free heap pages back to the system (False: no glibc)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


@functools.cache
def _malloc_trim() -> Any:
    """libc's ``malloc_trim``, looked up once (``find_library`` runs ``ldconfig``)."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def _waiting(handler: RequestHandler) -> bool:
    """Whether ``handler`` is between requests (idle, or a request still arriving)."""
    waiter: Any = getattr(handler, "_waiter", None)
    return waiter is not None and not waiter.done() and \
        not getattr(handler, "_request_in_progress", False)


class CappedSite(web.SockSite):
    """``web.SockSite`` whose connections go through ``cap`` first."""

    __slots__ = ("_cap",)

    def __init__(self, runner: web.BaseRunner, sock: Any, cap: Cap, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._cap = cap

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        context = self._ssl_context
        factory = self._cap.protocol if context is None else \
            functools.partial(self._cap.tls, context)
        self._server = await loop.create_server(factory, sock=self._sock,
                                                backlog=self._backlog)
