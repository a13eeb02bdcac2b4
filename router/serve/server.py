"""Wires the router together: load, probe, listen, reload on SIGHUP, drain on SIGTERM.

Lifecycle (after uvicorn's ``Server``): ``startup()`` binds every socket first (so a
busy port fails fast), serves ``/healthz`` and a not-yet-ready ``/readyz``, runs the
first probe round, then starts answering DNS and logs ``ready``. Signal handlers only
set events; the main loop acts on them. ``shutdown()`` stops the listeners, stops the
probes, and drains open connections with a timeout.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from aiohttp import web

from router import __version__
from router.core.config import Config, ConfigError, load
from router.core.geo import GeoError, Locator
from router.core.health import Board, Status
from router.core.runtime import Runtime, StateView
from router.dns.authority import DEFAULT_PAYLOAD, Authority
from router.dns.cache import DEFAULT_SIZE
from router.dns.listener import Address, Dispatch, DnsListener, bind
from router.dns.zone import ZoneTable
from router.http.app import HttpSettings, create_app
from router.http.client import IPNetwork
from router.watch.inventory import Inventory
from router.watch.monitor import Monitor

if TYPE_CHECKING:
    from router.serve.supervisor import Feed

log = structlog.get_logger("router.serve.server")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every ``serve`` option, validated once by the CLI."""

    zones: Path = Path("zones")
    dns: tuple[Address, ...] = (("127.0.0.1", 5300),)
    http: tuple[Address, ...] = (("127.0.0.1", 8300),)
    geoip: Path | None = None
    probe: bool = True
    edns_payload: int = DEFAULT_PAYLOAD
    tcp_idle: float = 10.0
    tcp_max: int = 512
    rcvbuf: int | None = None
    dns_cache: int = DEFAULT_SIZE  # encoded answers kept (0: none)
    drain_timeout: float = 5.0
    trusted_proxies: tuple[IPNetwork, ...] = ()
    access_log: bool = False
    state: Path | None = None  # the operator's state file (overrides), watched
    ca_file: Path | None = None  # extra CAs for checking HTTPS mirrors


@dataclass(frozen=True, slots=True)
class Sockets:
    """Sockets bound by someone else (the supervisor of ``--workers``)."""

    dns: tuple[tuple[socket.socket, socket.socket], ...]  # (UDP, TCP) per DNS address
    http: tuple[socket.socket, ...]


class Source(Protocol):
    """What feeds the Board: a ``Monitor`` here, or a supervisor's snapshots (workers)."""

    @property
    def state(self) -> StateView | None: ...

    async def start(self) -> None: ...
    async def ready(self, dns: list[str], http: list[str]) -> None: ...
    def reconfigure(self, config: Config) -> None: ...
    async def close(self) -> None: ...


class Server:
    def __init__(self, settings: Settings, *, sockets: Sockets | None = None,
                 feed: Callable[[Runtime], Feed] | None = None) -> None:
        self.settings = settings
        self.sockets = sockets
        self.feed = feed
        self.stop = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.runtime: Runtime | None = None
        self.dispatch: Dispatch | None = None
        self.source: Source | None = None
        self.inventory: Inventory | None = None  # catalogs and file checks (not --no-probe)
        self.dns: list[DnsListener] = []
        self.http: web.AppRunner | None = None

    async def run(self) -> int:
        self._install_signals()
        try:
            await self.startup()
        except (ConfigError, GeoError, OSError) as e:
            log.error("startup_failed", error=str(e))
            await self.shutdown()
            return 1
        await self.main_loop()
        await self.shutdown()
        return 0

    async def startup(self) -> None:
        s = self.settings
        config = load(s.zones)
        runtime = self.runtime = Runtime(config, Locator(s.geoip), Board(), probing=s.probe)
        self.source = self._source(runtime)
        runtime.state = self.source.state
        self.dispatch = Dispatch(self._authority(config))
        runtime.caches["dns"] = self._dns_cache_counters
        dns_socks = self.sockets.dns if self.sockets else [_bind_dns(h, p, s) for h, p in s.dns]
        if s.probe:  # a worker's catalogs come from its supervisor (router.serve.supervisor)
            self.inventory = Inventory(runtime.ledger, catalogs=self.feed is None)
        http_addrs = await self._start_http(runtime)
        log.info("listening", http=[fmt(a) for a in http_addrs], ready=False)
        await asyncio.gather(self.source.start(), self._first_catalogs(config))
        for udp, tcp in dns_socks:
            listener = DnsListener(self.dispatch, s.tcp_max, s.tcp_idle)
            await listener.start_on(udp, tcp)
            self.dns.append(listener)
        runtime.ready = True
        dns_addrs = [fmt(listener.address) for listener in self.dns]
        await self.source.ready(dns_addrs, [fmt(a) for a in http_addrs])
        log.info("worker_ready" if self.feed else "ready", version=__version__,
                 dns=dns_addrs, http=[fmt(a) for a in http_addrs],
                 zones=[z.origin for z in config.zones],
                 services=len(config.services), probing=s.probe,
                 geoip=runtime.locator.description,
                 down=[f"{k[0]}/{k[1]}" for k, h in runtime.board.snapshot.health.items()
                       if h.status is Status.DOWN])

    async def main_loop(self) -> None:
        await serve_until_stopped(self.stop, self.reload_requested, self.reload)

    def reload(self) -> bool:
        """Load the zones again; on any problem keep serving the old config."""
        assert self.runtime is not None and self.dispatch is not None
        try:
            config = load(self.settings.zones)
            authority = self._authority(config)
        except ConfigError as e:
            log.error("reload_failed", problems=[str(p) for p in e.problems],
                      keeping="the previous config")
            return False
        self.runtime.install(config)
        self.dispatch.authority = authority
        if self.source is not None:
            self.source.reconfigure(config)
        if self.inventory is not None:
            self.inventory.reconfigure(config)
        else:
            self.runtime.ledger.retain(config)
        log.info("reloaded", zones=[z.origin for z in config.zones],
                 services=len(config.services))
        return True

    async def shutdown(self) -> None:
        for listener in self.dns:
            await listener.stop()
        if self.dispatch is not None and self.dispatch.authority.cache is not None:
            log.info("dns_cache", **self.dispatch.authority.cache.counters())
        if self.http is not None:
            await self.http.cleanup()
        if self.source is not None:
            await self.source.close()
        if self.inventory is not None:
            await self.inventory.close()
        if self.runtime is not None:
            self.runtime.locator.close()
        log.info("stopped")

    def _dns_cache_counters(self) -> dict[str, int]:
        """The answer cache's counters (a reload starts a new cache, and new counts)."""
        cache = self.dispatch.authority.cache if self.dispatch is not None else None
        return cache.counters() if cache is not None else {}

    def _source(self, runtime: Runtime) -> Source:
        if self.feed is not None:
            return self.feed(runtime)
        s = self.settings
        return Monitor(runtime.board, runtime.stats, lambda: runtime.config, probe=s.probe,
                       state=s.state, ca_file=s.ca_file)

    def _authority(self, config: Config) -> Authority:
        assert self.runtime is not None
        board = self.runtime.board
        return Authority(ZoneTable(config), self.runtime.locator, lambda: board.snapshot,
                         self.settings.edns_payload, stats=self.runtime.stats,
                         cache_size=self.settings.dns_cache)

    async def _start_http(self, runtime: Runtime) -> list[Address]:
        if not self.settings.http and not (self.sockets and self.sockets.http):
            return []
        app = create_app(runtime, HttpSettings(self.settings.trusted_proxies,
                                               self.settings.access_log),
                         inventory=self.inventory)
        self.http = web.AppRunner(app, access_log=None,
                                  shutdown_timeout=self.settings.drain_timeout)
        await self.http.setup()
        bound = []
        socks = self.sockets.http if self.sockets else [
            bind_http(host, port) for host, port in self.settings.http]
        for sock in socks:
            await web.SockSite(self.http, sock).start()
            bound.append(sock.getsockname()[:2])
        return bound

    async def _first_catalogs(self, config: Config) -> None:
        """Fetch every catalog once before ready (--no-probe: none; nothing is contacted)."""
        if self.inventory is None:
            return
        await self.inventory.start(config)
        await self.inventory.first_fetch()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)


def _bind_dns(host: str, port: int, s: Settings) -> tuple[socket.socket, socket.socket]:
    return bind(host, port, rcvbuf=s.rcvbuf)


def bind_http(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve_until_stopped(stop: asyncio.Event, reload_requested: asyncio.Event,
                              reload: Callable[[], object]) -> None:
    """Until ``stop`` is set, call ``reload()`` each time ``reload_requested`` is (SIGHUP)."""
    while not stop.is_set():
        stopped = asyncio.ensure_future(stop.wait())
        asked = asyncio.ensure_future(reload_requested.wait())
        await asyncio.wait({stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        asked.cancel()
        if reload_requested.is_set() and not stop.is_set():
            reload_requested.clear()
            reload()


def fmt(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT, on uvloop when it is installed."""
    return run_loop(Server(settings).run())


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed, else on the stdlib loop."""
    try:
        import uvloop
    except ImportError:  # not on Linux: the stdlib loop works too
        return asyncio.run(main)
    return uvloop.run(main)
