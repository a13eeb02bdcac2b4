"""One serving process: load, probe, listen, reload on SIGHUP, drain on SIGTERM.

``startup()`` binds every socket first (so a busy port fails fast), serves ``/healthz``
and a not-yet-ready ``/readyz``, runs the first round (probes and catalogs), then starts
answering DNS and logs ``ready``. The same class serves alone or as one of the
``--workers`` (``router.serve.worker``), where the board is fed by the supervisor's
snapshots instead of a prober of its own (the ``Source``), the config is the
supervisor's (given, never read from disk), and the sockets are bound only once the
first snapshot is in (``bind``): the kernel never hands a query to a worker not reading.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable, Mapping

import structlog
from aiohttp import web

from router import __version__
from router.core.config import Config, unchanged_zones
from router.core.fleet import View
from router.core.geo import STALE_DAYS, GeoError, Locator
from router.core.health import Board, Key, Status
from router.core.runtime import Reload, Runtime, Signing, StateView
from router.dns.authority import Authority
from router.dns.cookies import Secrets
from router.dns.listener import Dispatch, DnsListener
from router.dns.rrl import Limiter
from router.dns.zone import ZoneTable
from router.http.app import REDIRECTOR, HttpSettings, create_admin_app, create_app
from router.serve.connections import ADMIN_LIMIT, Cap, CappedSite, budget, raise_nofile
from router.serve.lifecycle import Lifecycle, Source, first_round, run_loop, settle_memory
from router.serve.settings import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    Addresses,
    Settings,
    Sockets,
    claim,
    fmt,
)
from router.serve.tls import Certificate, certificate_files
from router.serve.watching import inventory, monitor
from router.watch.files import FileWatch, stamp
from router.watch.inventory import Inventory
from router.watch.monitor import Monitor
from router.watch.tasks import cancel

log = structlog.get_logger("router.serve")

GEOIP_READ = 30.0  # seconds a new GeoIP database may take to open (in a thread)
GEOIP_WATCH_EVERY = 5.0  # seconds between looks at the --geoip file


class Server(Lifecycle):
    def __init__(self, settings: Settings, *, sockets: Sockets | None = None,
                 source: Callable[[Runtime], Source] | None = None,
                 config: Config | None = None, bind: Callable[[], Sockets] | None = None
                 ) -> None:
        super().__init__(settings)
        self.sockets = sockets  # bound by the supervisor (a worker), else by startup()
        self.given = config  # a worker's: the supervisor's config, not the zone folder's
        self.bind_late = bind  # a worker's: bind its sockets once the first round is done
        self.fed = source is not None  # a worker: the supervisor probes and fetches
        self.make_source = source or self._monitor
        self.runtime: Runtime | None = None
        self.dispatch: Dispatch | None = None
        self.source: Source | None = None
        self.inventory: Inventory | None = None  # catalogs and file checks (not --no-probe)
        self.dns: list[DnsListener] = []
        self.http: list[web.AppRunner] = []  # the public app's, then the admin app's
        self.certificate: Certificate | None = None  # HTTPS, renewed in place
        self.geoip_watch: FileWatch | None = None  # --geoip, replaced in place
        self.nofile = raise_nofile()  # the descriptor limit, raised to the hard one
        self.cookies = Secrets(settings.cookie_secret, settings.cookie_secret_previous)
        # RRL buckets outlive a reload (a new Authority): a flood must not reset them
        self.rrl = Limiter(settings.rrl, settings.workers) if settings.rrl else None
        self.tasks: set[asyncio.Task[None]] = set()  # background work of the listeners

    async def startup(self) -> None:
        s = self.settings
        config = self.given or await self.zones()
        runtime = self.runtime = Runtime(config, Locator(s.geoip), Board(), probing=s.probe,
                                         readings=self)
        self.source = self.make_source(runtime)
        self.dispatch = Dispatch(self._authority(config))
        if s.https:  # a bad certificate fails here, before anything listens
            self.certificate = Certificate(*certificate_files(s))
        if self.sockets is None and not self.fed:  # a worker's claims are its supervisor's
            self.claims = claim(Addresses.of(s))
        sockets = self.sockets
        if sockets is None and self.bind_late is None:
            sockets = Sockets.bind(s, Addresses.of(s))
        if s.probe:  # a worker's catalogs come from its supervisor
            self.inventory = inventory(s, runtime.ledger, catalogs=not self.fed,
                                       owns=self._verifies)
        if sockets is not None:
            listening = await self._start_http(runtime, sockets)
            log.info("listening", **listening, ready=False)
        await first_round(self.source, self.inventory, config)
        if sockets is None:  # a worker: it joins its ports now that it can serve
            assert self.bind_late is not None
            sockets = self.bind_late()
            listening = await self._start_http(runtime, sockets)
        for udp, tcp in sockets.dns:
            listener = DnsListener(self.dispatch, s.tcp_max, s.tcp_idle, s.tcp_per_client)
            await listener.start_on(udp, tcp)
            self.dns.append(listener)
        runtime.ready = True
        dns = [fmt(listener.address) for listener in self.dns]
        await self.source.ready(dns, listening["http"])
        self._announce(dns, listening)
        settle_memory()
        if runtime.locator.age_days(time.time()) > STALE_DAYS:
            _log_geoip("geoip_old", runtime.locator)

    def _announce(self, dns: list[str], listening: dict[str, list[str]]) -> None:
        assert self.runtime is not None
        runtime, config = self.runtime, self.runtime.config
        log.info("worker_ready" if self.fed else "ready", version=__version__, dns=dns, **listening,
                 zones=[z.origin for z in config.zones], services=len(config.services),
                 probing=self.settings.probe, **runtime.locator.facts(time.time()),
                 down=[f"{k[0]}/{k[1]}" for k, h in runtime.board.snapshot.health.items()
                       if h.status is Status.DOWN])

    async def install(self, config: Config) -> str | None:
        self.switch(config)
        return None

    def switch(self, config: Config) -> None:
        """Serve ``config``. What it did not change keeps its caches: all of them when it
        is equal to the config in force, else the answers of unchanged zones (and the
        redirector keeps the decisions of unchanged services)."""
        assert self.runtime is not None and self.dispatch is not None
        old = self.runtime.config
        if config == old:
            self.runtime.config_loaded = time.time()
            return
        authority = self._authority(config)
        if authority.cache is not None and self.dispatch.authority.cache is not None:
            authority.cache.carry(self.dispatch.authority.cache, unchanged_zones(old, config))
        self.runtime.install(config)
        self.dispatch.authority = authority
        if self.source is not None:
            self.source.reconfigure(config)
        if self.inventory is not None:
            self.inventory.reconfigure(config)
        else:
            self.runtime.ledger.retain(config)

    async def reload(self) -> bool:
        """The zones, the certificate and the GeoIP database: each kept when its new
        version does not load."""
        zones = True if self.fed else await super().reload()  # a worker's: from its supervisor
        tls = await self.certificate.reload() if self.certificate else True
        return await self._reload_geoip() and tls and zones

    async def _reload_geoip(self) -> bool:
        """``--geoip`` again, if the file changed: opened in a thread (bounded), swapped in
        whole, and what was derived from the old one (answer caches) dropped."""
        path = self.settings.geoip
        if path is None or self.geoip_watch is None or \
                stamp(path) == self.geoip_watch.loaded:
            return True  # the embedded database, or the same file: every cache stays
        try:
            locator = await self.geoip_watch.reread(lambda: Locator(path), GEOIP_READ)
        except (GeoError, TimeoutError) as e:
            log.error("geoip_reload_failed", file=str(path), error=str(e) or "timed out",
                      keeping="the previous database")
            return False
        self._use(locator)
        return True

    def _use(self, locator: Locator) -> None:
        assert self.runtime is not None and self.dispatch is not None
        old, self.runtime.locator = self.runtime.locator, locator
        self.dispatch.authority = self._authority(self.runtime.config)  # a new answer cache
        old.close()
        _log_geoip("geoip_loaded", locator)

    def record(self, outcome: Reload) -> None:
        if self.runtime is not None:
            self.runtime.last_reload = outcome

    async def shutdown(self) -> None:
        for listener in self.dns:
            listener.close()
        for watch in (self.certificate.watch if self.certificate else None, self.geoip_watch):
            if watch is not None:
                await watch.stop()
        await cancel(self.tasks)
        if not await self.drain(self._drain()):
            log.warning("drain_skipped", open_dns_tcp=sum(len(d.pool.open) for d in self.dns))
        if self.dispatch is not None and self.dispatch.authority.cache is not None:
            log.info("dns_cache", **self.dispatch.authority.cache.counters())
        if self.source is not None:
            await self.source.close()
        if self.inventory is not None:
            await self.inventory.close()
        if self.runtime is not None:
            self.runtime.locator.close()
        log.info("stopped")

    async def _drain(self) -> None:
        """Open DNS-over-TCP connections and HTTP requests in progress finish (bounded)."""
        await asyncio.gather(*(listener.wait_closed() for listener in self.dns),
                             *(runner.cleanup() for runner in self.http))

    def _verifies(self, key: Key) -> bool:
        """Whether this process verifies ``key``'s copies (in a fleet: one node each)."""
        source = self.source
        return source.verifies(key) if isinstance(source, Monitor) else False

    # ---------------------------------------------------------------- the Runtime's readings

    @property
    def state(self) -> StateView | None:
        return self.source.state if self.source is not None else None

    def fleet(self) -> View | None:
        return self.source.fleet_view() if self.source is not None else None

    def signing(self) -> list[Signing]:
        """Every signed zone's key and signature counts (this process's)."""
        zones = self.dispatch.authority.table.zones if self.dispatch is not None else []
        return [Signing(z.zone.origin, str(s.key.path), s.key.name, s.key.tag, s.key.created,
                        s.cache.misses, s.cache.hits)
                for z in zones if (s := z.signer) is not None]

    def caches(self) -> dict[str, Mapping[str, int]]:
        """Every bounded table of this process: GeoIP's, the DNS face's (the authority in
        force: a reload starts new ones, and new counts), the listeners', the
        redirector's."""
        found: dict[str, Mapping[str, int]] = {}
        if self.runtime is not None:
            found.update(self.runtime.locator.caches())
        if self.dispatch is not None:
            found.update(self.dispatch.authority.caches())
        if self.dns:
            found["dns_udp_senders"] = _summed(d.udp_senders() for d in self.dns)
        if self.http:
            found.update(self.http[0].app[REDIRECTOR].caches())
        return found

    def _monitor(self, runtime: Runtime) -> Source:
        return monitor(self.settings, runtime.board, runtime.stats, lambda: runtime.config)

    def _authority(self, config: Config) -> Authority:
        assert self.runtime is not None
        board = self.runtime.board
        return Authority(ZoneTable(config), self.runtime.locator, lambda: board.snapshot,
                         self.settings.edns_payload, stats=self.runtime.stats,
                         cache_size=self.settings.dns_cache, nsid=self.settings.nsid,
                         cookies=self.cookies, rrl=self.rrl)

    async def _start_http(self, runtime: Runtime, sockets: Sockets) -> dict[str, list[str]]:
        """The public app on the HTTP sockets; with admin sockets, the pages go there."""
        s = self.settings
        public = create_app(runtime, HttpSettings(s.trusted_proxies, s.access_log),
                            inventory=self.inventory, admin=not sockets.admin)
        tls = self.certificate.context if self.certificate is not None else None
        limit = s.http_max or budget(self.nofile, s.tcp_max * len(sockets.dns))
        apps = [(public, limit, [*((x, None) for x in sockets.http),
                                 *((x, tls) for x in sockets.https)])]
        if sockets.admin:
            apps.append((create_admin_app(public), ADMIN_LIMIT,
                         [(x, None) for x in sockets.admin]))
        for app, cap, socks in apps:
            if socks:
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=s.drain_timeout,
                                       keepalive_timeout=s.keepalive, max_headers=MAX_HEADERS,
                                       max_line_size=MAX_HEADER_BYTES,
                                       max_field_size=MAX_HEADER_BYTES)
                await runner.setup()
                assert runner.server is not None
                capped = Cap(runner.server, cap, runtime.stats)
                self.tasks.add(asyncio.create_task(capped.give_back(), name="give back"))
                for sock, context in socks:
                    await CappedSite(runner, sock, capped, ssl_context=context,
                                     backlog=s.backlog).start()
                self.http.append(runner)
        if self.certificate is not None:
            self.certificate.watch.start()
        if s.geoip is not None:
            self.geoip_watch = FileWatch((s.geoip,), self._reload_geoip, GEOIP_WATCH_EVERY)
            self.geoip_watch.start()
        log.info("http_limits", open_files=self.nofile, http_max=limit,
                 keepalive=s.keepalive, max_headers=MAX_HEADERS,
                 max_header_bytes=MAX_HEADER_BYTES, backlog=s.backlog)
        return {"http": _addresses(sockets.http), "https": _addresses(sockets.https),
                "admin": _addresses(sockets.admin)}


def _log_geoip(event: str, locator: Locator) -> None:
    facts = locator.facts(time.time())
    if facts["geoip_stale"]:
        log.warning(event, **facts, hint=f"older than {STALE_DAYS} days: update it (README: "
                    "Keeping GeoIP current) and SIGHUP, or it will be read when it changes")
    else:
        log.info(event, **facts)


def _addresses(socks: tuple[socket.socket, ...]) -> list[str]:
    return [fmt(sock.getsockname()) for sock in socks]


def run(settings: Settings) -> int:
    """Run one serving process until SIGTERM/SIGINT, on uvloop when it is installed."""
    return run_loop(Server(settings).run())


def _summed(counters: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Several tables' counters as one (the DNS listeners' senders)."""
    total: dict[str, int] = {}
    for each in counters:
        for figure, n in each.items():
            total[figure] = total.get(figure, 0) + n
    return total
