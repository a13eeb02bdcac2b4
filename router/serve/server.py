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
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import structlog
from aiohttp import web

from router import __version__
from router.core.asn import AsnDb
from router.core.audience import Rules
from router.core.config import Config, unchanged_zones
from router.core.fleet import View
from router.core.geo import STALE_DAYS, Database, GeoError, Locator
from router.core.health import Board, Key, Status
from router.core.runtime import Reload, Runtime, Signing, StateView
from router.dns import dnssec
from router.dns.authority import Authority
from router.dns.cookies import Secrets
from router.dns.dnstap import Tap
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
from router.watch.files import FileWatch, off_loop, stamp
from router.watch.inventory import Inventory
from router.watch.monitor import Monitor
from router.watch.tasks import cancel

log = structlog.get_logger("router.serve")

D = TypeVar("D", bound=Database)
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
        self.asn_watch: FileWatch | None = None  # --asn-db, likewise
        self.nofile = raise_nofile()  # the descriptor limit, raised to the hard one
        self.cookies = Secrets(settings.cookie_secret, settings.cookie_secret_previous)
        # RRL buckets outlive a reload (a new Authority): a flood must not reset them
        self.rrl = Limiter(settings.rrl, settings.workers) if settings.rrl else None
        self.tasks: set[asyncio.Task[None]] = set()  # background work of the listeners

    async def startup(self) -> None:
        s = self.settings
        config = self.given or await self.zones()
        runtime = self.runtime = Runtime(config, Locator(s.geoip), Board(), probing=s.probe,
                                         readings=self, asn_db=_asn_db(s.asn_db))
        self.source = self.make_source(runtime)
        self.dispatch = Dispatch(self._authority(config), self._tap(runtime))
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
            listener = DnsListener(self.dispatch, s.tcp_max, s.tcp_idle, s.tcp_per_client,
                                   backlog=s.backlog)
            await listener.start_on(udp, tcp)
            self.dns.append(listener)
        runtime.ready = True
        dns = [fmt(listener.address) for listener in self.dns]
        await self.source.ready(dns, listening["http"])
        self._announce(dns, listening)
        settle_memory()
        for db in (runtime.locator, runtime.asn_db):
            if db is not None and db.age_days(time.time()) > STALE_DAYS:
                _log_db(f"{db.FACT}_old", db)

    def _announce(self, dns: list[str], listening: dict[str, list[str]]) -> None:
        assert self.runtime is not None
        runtime, config = self.runtime, self.runtime.config
        log.info("worker_ready" if self.fed else "ready", version=__version__, dns=dns, **listening,
                 zones=[z.origin for z in config.zones], services=len(config.services),
                 probing=self.settings.probe, **runtime.locator.facts(time.time()),
                 down=[f"{k[0]}/{k[1]}" for k, h in runtime.board.snapshot.health.items()
                       if h.status is Status.DOWN])

    async def install(self, config: Config) -> str | None:
        assert self.runtime is not None
        if config == self.runtime.config:  # nothing to build: switch() keeps all as it is
            self.switch(config)
            return None
        asn = self.runtime.asn_db  # rules by AS read the whole ASN database: off the loop
        self.switch(config, await off_loop(lambda: Rules(config, asn), GEOIP_READ, "rules"))
        return None

    def switch(self, config: Config, rules: Rules | None = None) -> None:
        """Serve ``config``. What it did not change keeps its caches: all of them when it
        is equal to the config in force, else the answers of unchanged zones (and the
        redirector keeps the decisions of unchanged services)."""
        assert self.runtime is not None and self.dispatch is not None
        old = self.runtime.config
        if config == old:
            self.runtime.config_loaded = time.time()
            return
        self.runtime.install(config, rules)  # first: the new authority takes its rules
        before = self.dispatch.authority
        before.keep_time()  # a key event passed unseen: its answers go, not carried over
        authority = self._authority(config, before.key_states)
        if authority.cache is not None and before.cache is not None:
            authority.cache.carry(before.cache, unchanged_zones(old, config))
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
        geoip, asn = await self._reload_geoip(), await self._reload_asn_db()
        return geoip and asn and tls and zones

    async def _reload_geoip(self) -> bool:
        """``--geoip`` again, if the file changed (``_reread``)."""
        ok, locator = await self._reread(self.settings.geoip, self.geoip_watch, Locator)
        if locator is not None:
            assert self.runtime is not None
            old, self.runtime.locator = self.runtime.locator, locator
            self._swapped(old, locator)
        return ok

    async def _reload_asn_db(self) -> bool:
        """``--asn-db`` again, if the file changed (``_reread``)."""
        ok, db = await self._reread(self.settings.asn_db, self.asn_watch, AsnDb)
        if db is not None:
            runtime = self.runtime
            assert runtime is not None and runtime.asn_db is not None
            config = runtime.config  # the rules by AS, matched against the new networks
            rules = await off_loop(lambda: Rules(config, db), GEOIP_READ, "rules")
            if runtime.config is not config:  # a reload came meanwhile: its rules, again
                rules = Rules(runtime.config, db)
            old, runtime.asn_db, runtime.rules = runtime.asn_db, db, rules
            self._swapped(old, db)
        return ok

    async def _reread(self, path: Path | None, watch: FileWatch | None,
                      opened: Callable[[Path], D]) -> tuple[bool, D | None]:
        """A database file again, if it changed, opened in a thread (bounded): (whether
        all is well, the new one: None when the file is the same, or none, or it does not
        open, which is logged and leaves the old one in service)."""
        if path is None or watch is None or stamp(path) == watch.loaded:
            return True, None  # the embedded database, or the same file: caches stay
        try:
            return True, await watch.reread(lambda: opened(path), GEOIP_READ)
        except (GeoError, TimeoutError) as e:
            kind = "geoip" if opened is Locator else "asn_db"
            log.error(f"{kind}_reload_failed", file=str(path), error=str(e) or "timed out",
                      keeping="the previous database")
            return False, None

    def _swapped(self, old: Database, new: Database) -> None:
        """A database swapped in whole: what was derived from the old one (the answer
        cache, the redirector's memos) is made afresh."""
        assert self.runtime is not None and self.dispatch is not None
        self.dispatch.authority = self._authority(self.runtime.config)  # a new answer cache
        old.close()
        _log_db(f"{new.FACT}_loaded", new)

    def record(self, outcome: Reload) -> None:
        if self.runtime is not None:
            self.runtime.last_reload = outcome

    async def shutdown(self) -> None:
        for listener in self.dns:
            listener.close()
        for watch in (self.certificate.watch if self.certificate else None, self.geoip_watch,
                      self.asn_watch):
            if watch is not None:
                await watch.stop()
        await cancel(self.tasks)
        if not await self.drain(self._drain()):
            log.warning("drain_skipped", open_dns_tcp=sum(len(d.pool.open) for d in self.dns))
        if self.dns and self.dispatch is not None and self.dispatch.authority.cache is not None:
            log.info("dns_cache", **self.dispatch.authority.cache.counters())  # if it served
        if self.dispatch is not None and self.dispatch.tap is not None:
            await self.dispatch.tap.close()
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
        now = time.time()
        return [dnssec.signing(z.zone.origin, s, now) for z in zones if (s := z.signer) is not None]

    def caches(self) -> dict[str, Mapping[str, int]]:
        """Every bounded table of this process: GeoIP's, the clients that come back
        (``core.retries``), the places whose fleet region the snapshot in force knows
        (a new snapshot starts anew), the DNS face's (the authority in force: a reload
        starts new ones, and new counts), the listeners', the redirector's."""
        found: dict[str, Mapping[str, int]] = {}
        if self.runtime is not None:
            found.update(self.runtime.locator.caches())
            found.update(self.runtime.retries.caches())
            found["region_places"] = self.runtime.board.snapshot.places.counters()
        if self.dispatch is not None:
            found.update(self.dispatch.authority.caches())
        if self.dns:
            found["dns_udp_senders"] = _summed(d.udp_senders() for d in self.dns)
        if self.http:
            found.update(self.http[0].app[REDIRECTOR].caches())
        return found

    def _monitor(self, runtime: Runtime) -> Source:
        made = monitor(self.settings, runtime.board, runtime.stats, lambda: runtime.config)
        retries = runtime.retries  # the avoidances this node begins and learns (a fleet)
        retries.journal = made.tell
        made.learned = lambda news: retries.learn(news, time.monotonic())
        return made

    def _authority(self, config: Config,
                   key_states: dict[str, dict[int, str]] | None = None) -> Authority:
        assert self.runtime is not None
        board = self.runtime.board
        return Authority(ZoneTable(config), self.runtime.locator, lambda: board.snapshot,
                         self.settings.edns_payload, stats=self.runtime.stats,
                         cache_size=self.settings.dns_cache, nsid=self.settings.nsid,
                         cookies=self.cookies, rrl=self.rrl, rules=self.runtime.rules,
                         decision_sample=self.settings.decision_log_sample,
                         key_states=key_states, retries=self.runtime.retries)

    async def _start_http(self, runtime: Runtime, sockets: Sockets) -> dict[str, list[str]]:
        """The public app on the HTTP sockets; with admin sockets, the pages go there."""
        s = self.settings
        public = create_app(runtime, HttpSettings(s.trusted_proxies, s.access_log, s.beacon),
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
                self.http.append(await self._serve_app(app, cap, runtime, socks))
        if self.certificate is not None:
            self.certificate.watch.start()
        if s.geoip is not None:
            self.geoip_watch = FileWatch((s.geoip,), self._reload_geoip, GEOIP_WATCH_EVERY)
            self.geoip_watch.start()
        if s.asn_db is not None:
            self.asn_watch = FileWatch((s.asn_db,), self._reload_asn_db, GEOIP_WATCH_EVERY)
            self.asn_watch.start()
        log.info("http_limits", open_files=self.nofile, http_max=limit,
                 keepalive=s.keepalive, max_headers=MAX_HEADERS,
                 max_header_bytes=MAX_HEADER_BYTES, backlog=s.backlog,
                 tls_handshake_timeout=s.tls_handshake_timeout,
                 header_budget_mib=s.header_budget >> 20)
        return {"http": _addresses(sockets.http), "https": _addresses(sockets.https),
                "admin": _addresses(sockets.admin)}


    def _tap(self, runtime: Runtime) -> Tap | None:
        """Where sampled DNS answers go (``--dnstap``), its writer started; None: nowhere."""
        s = self.settings
        if s.dnstap is None:
            return None
        tap = Tap(s.dnstap, s.dnstap_sample, runtime.stats, s.nsid)
        tap.start()
        return tap

    async def _serve_app(self, app: web.Application, cap: int, runtime: Runtime,
                         socks: list[tuple[socket.socket, ssl.SSLContext | None]]
                         ) -> web.AppRunner:
        """``app`` on ``socks`` (each with its TLS context or None), ``cap`` connections."""
        s = self.settings
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=s.drain_timeout,
                               keepalive_timeout=s.keepalive, max_headers=MAX_HEADERS,
                               max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES)
        await runner.setup()
        assert runner.server is not None
        capped = Cap(runner.server, cap, runtime.stats, s.tls_handshake_timeout,
                     s.header_budget)
        self.tasks.add(asyncio.create_task(capped.give_back(), name="give back"))
        for sock, context in socks:
            await CappedSite(runner, sock, capped, ssl_context=context,
                             backlog=s.backlog).start()
        return runner


def _asn_db(path: Path | None) -> AsnDb | None:
    return AsnDb(path) if path is not None else None


def _log_db(event: str, db: Database) -> None:
    facts = db.facts(time.time())
    if facts[f"{db.FACT}_stale"]:
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
