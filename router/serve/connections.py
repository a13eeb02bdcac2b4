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

Memory held for connections (header buffers) is freed when they close, but the C heap
keeps it from the system; ``Cap.give_back()`` asks libc to return it (``malloc_trim``)
every ``TRIM_EVERY`` seconds in which at least ``TRIM_AFTER`` connections closed, so a
flood of giant unfinished headers leaves no lasting mark on RSS.

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
import resource
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from router.core.stats import Stats

log = structlog.get_logger("router.serve")

RESERVE = 256  # descriptors kept for our own outgoing connections, files and listeners
ADMIN_LIMIT = 64  # connections to the admin listener (a scraper or two, an operator)
TRIM_AFTER = 64  # connections closed since the last look before memory is handed back
TRIM_EVERY = 2.0  # seconds between looks


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
    """The open-connection bound of one aiohttp ``web.Server`` (all its sites)."""

    def __init__(self, server: web.Server, limit: int, stats: Stats) -> None:
        self.server = server
        self.limit = limit
        self.stats = stats
        self.accepted = 0  # connections admitted, ever

    async def give_back(self) -> None:
        """Forever: hand freed memory back to the system once many connections closed."""
        seen, held = 0, 0  # accepted and open at the last look
        while True:
            await asyncio.sleep(TRIM_EVERY)
            accepted, open_ = self.accepted, len(self.server._connections)
            if (accepted - seen) - (open_ - held) >= TRIM_AFTER:  # closed since the last look
                log.debug("memory_given_back", connections=open_, trimmed=_trim())
            seen, held = accepted, open_

    def protocol(self) -> asyncio.Protocol:
        """aiohttp's protocol factory, after making room if the cap is reached."""
        open_ = self.server._connections  # handler -> transport, oldest first
        if len(open_) >= self.limit:
            idle = next((h for h in open_ if _waiting(h)), None)
            if idle is None:
                self.stats.errors["http_connection_refused"] += 1
                return Refuse()
            idle.force_close()
            open_.pop(idle, None)  # closed: not counted while its close completes
            self.stats.errors["http_connection_evicted"] += 1
        self.accepted += 1
        return self.server()


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
        self._server = await loop.create_server(
            self._cap.protocol, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog)
