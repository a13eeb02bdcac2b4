"""The redirector: ``GET <prefix><path>`` → ``302`` to the nearest healthy mirror's copy.

The handler only extracts the client and the path, asks the core (``paths`` and
``steering.rank``), and encodes the answer: ``Location``, ``Cache-Control: private,
no-store``, and RFC 6249 ``Link: rel=duplicate`` alternatives. ``?mirrorlist`` shows the
same decision as HTML or JSON instead. For a service with a catalog, ``downloads`` adds
the listing, Metalink, ``Digest`` and 404 for unlisted files, and the decision waits a
little for the inventory's availability checks.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import structlog
from aiohttp import web

from router.core.audience import Placer, scope
from router.core.catalog import CatalogFile
from router.core.config import Config, Service
from router.core.geo import Location
from router.core.ip import IPAddress, IPNetwork
from router.core.memo import Memo, Recall
from router.core.retries import network_of, shown
from router.core.runtime import Runtime
from router.core.scoring import Lineup
from router.core.steering import (
    Decision,
    FileChecker,
    Want,
    decision,
    kept_lineup,
    worth_waiting_for,
)
from router.core.steering import decide as steer
from router.errors import RouterError
from router.http import downloads, pages
from router.http import routes as paths
from router.http.client import Proxies
from router.http.decisions import DecisionCache, Entry, Key
from router.http.keys import CLIENT, COUNTRY, TARGET

log = structlog.get_logger("router.http")

RECHECK = 1.0  # seconds: how often a cached listed file still starts its due checks
NOWHERE = Location.of(ipaddress.ip_network("0.0.0.0/0"))
EMPTY: Mapping[str, str] = MappingProxyType({})
METALINK_HEAD = 10  # mirrors a redirect's Metalink lists, of a service of 64 targets or more
LINEUPS = 4096  # (service, generations, kind of client, secure): line-ups for new places
RECENT = 2048  # clients remembered (their headers: the location), the most recent


class NotRouted(RouterError):
    """No service's ``http_prefix`` covers the path (HTTP 404)."""


class Missing(RouterError):
    """Every target that could serve the path is known to lack it (HTTP 404, or the
    service's ``missing_status``): a client moves on (the go command to its next
    GOPROXY entry), where a 503 would stop it."""

    def __init__(self, path: str, status: int) -> None:
        super().__init__(path)
        self.status = status


class Unavailable(RouterError):
    """No target can serve the request now (HTTP 503 with ``Retry-After``)."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Redirector:
    """The redirector's handler, with what it reads bound once (no per-request lookups).

    ``client()`` is also what the status page uses to mark its viewer on the map.
    """

    def __init__(self, runtime: Runtime, trusted: tuple[IPNetwork, ...],
                 inventory: FileChecker | None, *, access_log: bool = False) -> None:
        self.runtime = runtime
        self.telling = access_log  # the client and the target put on the request for it
        self.proxies = Proxies(trusted)
        self.inventory = inventory
        # (peer, Forwarded, X-Forwarded-For...) → (the client's address, its location):
        # a client that comes back soon (a CI farm, a burst of files) skips the parse
        # and the walk. Small, so that ever-new clients churn a table that stays cached.
        self.clients: Memo[tuple[str | None, ...], tuple[str | None, Location]] = Memo(RECENT)
        # (service, health generation, country) → the line-up a new place is ranked from
        self.lineups: Memo[tuple[object, ...], Lineup] = Memo(LINEUPS)
        self.decisions = DecisionCache()  # per client network, see router.http.decisions
        self.places: Memo[tuple[object, ...], Entry] = Memo(65536)  # per client place
        self.recall = Recall(self.decisions, self.places)
        # decisions for networks that avoid mirrors (core.retries), by (key, avoided)
        self.avoided: Memo[tuple[Key, frozenset[str]], Entry] = Memo(4096)
        self.addresses: Memo[str, bytes] = Memo(RECENT)  # an address's client network
        self.warned = False  # forwarding headers from an untrusted peer (logged once)
        self.config: Config = runtime.config  # what routes and decisions were made from
        self.locator = runtime.locator  # what client locations were found with
        self.asn_db = runtime.asn_db  # ... and the networks of the ASes rules name
        self.rules = runtime.rules  # who each target may serve, routes
        self.placer = Placer(self.locator, self.rules, self.asn_db, narrow=False)
        self.routes = paths.Routes(self.config)
        self.sized = _sized(self.config)

    def caches(self) -> dict[str, dict[str, int]]:
        """Every bounded table of the redirector (for /metrics)."""
        return {"http_clients": self.clients.counters(),
                "http_decisions": self.decisions.counters(),
                "http_outcomes": self.decisions.outcomes.counters(),
                "http_places": self.places.counters(),
                "http_lineups": self.lineups.counters(),
                "http_peers": self.proxies.peers.counters(),
                "http_routes": self.routes.resolved.counters(),
                "http_avoided": self.avoided.counters(),
                "http_addresses": self.addresses.counters()}

    def _stale(self) -> bool:
        """Whether the runtime has a config or database this redirector did not follow."""
        runtime = self.runtime
        return runtime.config is not self.config or runtime.locator is not self.locator \
            or runtime.rules is not self.rules

    def follow(self) -> None:
        """The runtime has a new config, rules or database (a reload): route, locate and
        decide afresh, as far as each changed. A new config keeps the decisions of the
        services it did not change; a new database forgets every client and decision."""
        runtime = self.runtime
        self.avoided.clear()  # few, and made afresh in a request each
        if runtime.locator is not self.locator or runtime.asn_db is not self.asn_db:
            self.locator, self.asn_db = runtime.locator, runtime.asn_db
            self.clients.clear()
            self.decisions.clear()
            self.places.clear()
            self.lineups.clear()
        if runtime.config is not self.config:
            old, self.config = self.config, runtime.config
            self.routes = paths.Routes(self.config)
            self.sized = _sized(self.config)
            same = {s.name for s in self.config.services if old.service(s.name) == s}
            self.decisions.keep_services(same)
            self.places.retain(lambda key: key[0] in same)
            self.lineups.retain(lambda key: key[0] in same)
        if runtime.rules is not self.rules:
            self.rules = runtime.rules
            self.clients.clear()  # their rules, and so their networks, may have changed
        self.placer = Placer(self.locator, self.rules, self.asn_db, narrow=False)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        runtime = self.runtime
        raw_path, _, raw_query = request.raw_path.partition("?")
        if self._stale():
            self.follow()
        route = self.routes.resolve(raw_path, request.headers.get("Host"))
        if route is None:
            raise NotRouted(raw_path)
        if not runtime.ready:
            raise Unavailable("starting: the first probe round is not done", 1)
        if route.service.retries is not None:
            avoid = self._came_back(request, route, raw_path, counted=not raw_query)
            if avoid:
                return await self._asked(request, route, raw_query, avoid)
        if raw_query or route.checked is not None or route.service.catalog is not None:
            return await self._asked(request, route, raw_query)
        # the common case: a path of a service with no files to check, no query
        return self._redirect(request, route, self._remembered(
            request, route.service, route.guarded and self._secure(request)), "")

    async def _asked(self, request: web.Request, route: paths.Route, raw_query: str,
                     avoid: frozenset[str] = frozenset()) -> web.StreamResponse:
        """A request with a query, or for a file a catalog lists or the service declares
        immutable, or from a network that avoids some mirrors (``avoid``, decided afresh):
        the listing, a Metalink, a ``.sha256``, the mirror list, or the redirect once the
        file's availability checks have settled."""
        runtime, service = self.runtime, route.service
        catalog = runtime.ledger.catalog(service.name) if service.catalog else None
        query: Mapping[str, str] = request.query if raw_query else EMPTY  # parsed if any
        if catalog is not None and not route.rest and query.get("mode") == "json":
            return downloads.listing(catalog, query.get("include") == "all")
        item = downloads.asked(route, catalog, request.headers.get("Accept", "")
                               if catalog is not None else "")
        if item.form is downloads.Form.SHA256 and item.file is not None:
            return downloads.sha256(item.file)
        if "mirrorlist" in query:  # this client's own figures: decided afresh
            entry = await self._decide(request, item.route, item.file, remember=False,
                                       avoid=avoid)
            return _mirrorlist(request, self.described(
                request.path, item, entry.decision, self.client(request)[0]))
        entry = await self._decide(request, item.route, item.file, avoid=avoid)
        if paths.refused(entry.decision, item.listed):  # an immutable or changing path
            raise Missing(item.route.rest, service.missing_status)
        if item.form is downloads.Form.METALINK:
            return downloads.metalink_response(item, entry.decision)
        passed = paths.check_query(raw_query) if service.pass_query and raw_query else ""
        return self._redirect(request, item.route, entry, passed,
                              downloads.file_headers(item) if item.file is not None else (),
                              item.file.size if item.file is not None else None)

    def _redirect(self, request: web.Request, route: paths.Route, entry: Entry, query: str,
                  more: Sequence[tuple[str, str]] = (), size: int | None = None
                  ) -> web.Response:
        """The 302 of ``entry``'s decision for ``route`` (and ``more`` headers: a listed
        file's ``Digest`` and ``describedby``), counted; 503 when no mirror can serve."""
        found = entry.redirect(route, query)
        if found is None:
            raise Unavailable("no mirror can serve this now",
                              max(1, math.ceil(route.service.health.interval)))
        stats = self.runtime.stats
        stats.http_chosen[found.counted] += 1
        stats.countries[request.get(COUNTRY, "--")] += 1
        if size is None and route.service.name in self.sized and self.inventory is not None:
            size = self.inventory.size_of(route.service, route.rest, found.location)
        if size:
            stats.http_bytes[found.counted] += size
        if route.service.retries is not None and request.method == "GET":
            self._sent(request, route, found.target.id)
        if self.telling:
            request[TARGET] = found.target.id
        headers = (*found.headers, *more) if more else found.headers
        return web.Response(status=302, headers=headers)

    def _keys(self, service: Service, client: Location, file: CatalogFile | None,
              secure: bool) -> tuple[Key, tuple[object, ...]]:
        """What a decision is remembered by: per client network and state (``Key``), and
        per client place and state."""
        runtime = self.runtime
        key = (service.name, client.key, runtime.board.snapshot.generation,
               runtime.ledger.generation, file.name if file is not None else None, secure)
        return key, (key[0], client.point, client.country, client.effect, *key[2:])

    def _secure(self, request: web.Request) -> bool:
        """Whether the client came over HTTPS: to us, or to a trusted proxy in front."""
        if request.secure:
            return True
        headers = request.headers
        return self.proxies.secure(request.remote, request.forwarded,
                                   headers.getall("X-Forwarded-Proto", ()))

    def _remembered(self, request: web.Request, service: Service, secure: bool) -> Entry:
        """The decision for a request with no file to check: remembered per client place,
        or per client network when the ranking hashed on it (``router.http.decisions``);
        a new place's outcome found from the line-up, when a decision with that outcome
        was made already."""
        client = self.client(request)[1]
        key, place = self._keys(service, client, None, secure)
        entry = self.recall.get(key, place)
        if entry is not None:
            return entry
        lineup = self._lineup(service, client, key)
        # many targets: rank only the head a redirect and its Metalink show (core.nearest)
        head = max(METALINK_HEAD, 1 + service.link_alternates) \
            if lineup.located is not None else None
        costed = lineup.costs(client.point, head)
        order = lineup.order(costed)
        if order is not None and head is not None:
            order = order[:head]
        entry = self.decisions.known(key, order) if order is not None else None
        if entry is not None:
            return self.recall.put(key, place, False, entry)
        made = decision(lineup, client, costed, head)
        return self.recall.put(key, place, made.hashed,
                               self.decisions.shared(key, made, time.monotonic()))

    async def _decide(self, request: web.Request, route: paths.Route,
                      file: CatalogFile | None, remember: bool = True,
                      avoid: frozenset[str] = frozenset()) -> Entry:
        """The decision for a file; for a listed one, after the availability checks settle.

        Remembered as ``_remembered()`` says (not with ``remember=False``); a hit on a
        listed file still starts its due re-checks, at most once a second.
        """
        service, inventory = route.service, self.inventory
        secure = route.guarded and self._secure(request)
        if file is None and remember and not avoid:
            return self._remembered(request, service, secure)
        client = self.client(request)[1]
        key, place = self._keys(service, client, file, secure)
        want = Want.SECURE_URL if secure else Want.URL
        if avoid:
            return await self._avoiding(service, client, file, (key, avoid), remember, want)
        now = time.monotonic()
        entry = self.recall.get(key, place) if remember else None
        if entry is not None:
            if file is not None and inventory is not None and now - entry.stamp > RECHECK:
                entry.stamp = now
                inventory.check_due(service, file)
            return entry
        made, remember = await self._settled(service, client, file, remember, want)
        if not remember:
            return Entry(made, now)
        return self.recall.put(key, place, made.hashed, self.decisions.shared(key, made, now))

    async def _avoiding(self, service: Service, client: Location, file: CatalogFile | None,
                        key: tuple[Key, frozenset[str]], remember: bool, want: Want) -> Entry:
        """The decision for a network that avoids some mirrors: kept per (network, what
        it avoids), apart from the shared caches (its outcome is its own)."""
        found = self.avoided.get(key) if remember else None
        if found is not None:
            return found
        made, keep = await self._settled(service, client, file, remember, want, key[1])
        entry = Entry(made, time.monotonic())
        return self.avoided.put(key, entry) if keep else entry

    async def _settled(self, service: Service, client: Location, file: CatalogFile | None,
                       remember: bool, want: Want, avoid: frozenset[str] = frozenset()
                       ) -> tuple[Decision, bool]:
        """A decision made afresh; for a listed file, once the availability checks settle.
        Not to be remembered while checks that could change it are still out."""
        runtime, inventory = self.runtime, self.inventory

        def decide() -> Decision:
            files = runtime.ledger.view(service, file) if file is not None else None
            return steer(runtime.board.snapshot, service, client, want, files=files,
                         barred=runtime.ledger.barred(service.name),
                         scope=scope(self.rules, service, client), avoided=avoid)

        if file is None or inventory is None:
            return decide(), remember
        made = await inventory.settle(service, file, decide)
        return made, remember and not worth_waiting_for(made)

    def _came_back(self, request: web.Request, route: paths.Route, path: str,
                   counted: bool) -> frozenset[str]:
        """The mirrors the client's network avoids now (``core.retries``), after counting
        this request (a GET of a file, ``counted``) as a retry if it is one."""
        address = self.client(request)[0]
        if address is None:
            return frozenset()
        now = time.monotonic()
        retries, service = self.runtime.retries, route.service
        policy = service.retries
        assert policy is not None
        if counted and request.method == "GET":
            avoided = retries.asked(service.name, address, path, now, policy)
            if avoided is not None:
                network = self._network(address)
                if retries.avoid(service.name, network, avoided, now + policy.avoid_for, now):
                    log.info("client_avoids", service=service.name, target=avoided,
                             network=shown(network), path=path, seconds=policy.avoid_for)
        return self._avoided(service, address, now)

    def _avoided(self, service: Service, address: str, now: float) -> frozenset[str]:
        """The mirrors of ``service`` the network of ``address`` avoids now."""
        retries = self.runtime.retries
        if service.retries is None or not retries.avoiding:  # no network to find
            return frozenset()
        return retries.avoided(service.name, self._network(address), now)

    def _sent(self, request: web.Request, route: paths.Route, target: str) -> None:
        address = self.client(request)[0]
        if address is not None:
            self.runtime.retries.sent(route.service.name, address,
                                      request.raw_path.partition("?")[0], target,
                                      time.monotonic())

    def _network(self, address: str) -> bytes:
        """A client address's client network (``core.retries``)."""
        found = self.addresses.get(address)
        if found is None:
            value = ipaddress.ip_address(address)
            found = self.addresses.put(address, network_of(int(value), value.version))
        return found

    def _lineup(self, service: Service, client: Location, key: Key) -> Lineup:
        """The targets lined up for clients of ``client``'s country (no file asked for),
        kept per service, health generation and country: a new place is ranked from it
        (``Lineup.order`` finds the outcome a decision was made with already)."""
        return kept_lineup(  # per service, generations, secure and kind of client
            self.lineups, (key[0], key[2], key[3], key[5]), self.runtime.board.snapshot,
            service, client, self.rules,
            Want.SECURE_URL if key[5] else Want.URL,
            barred=self.runtime.ledger.barred(service.name))

    def described(self, path: str, item: downloads.Asked, decision: Decision,
                  address: str | None) -> dict[str, Any]:
        """A path's decision as plain data, with each mirror's knowledge of the file: the
        one shape of ``?mirrorlist=json``, the admin listener's ``/explain`` and
        ``explain --json``."""
        data = downloads.described(path, item, decision, address)
        if item.file is not None:
            _add_availability(self.runtime, item.route, data, item.file)
        return data

    async def explain(self, path: str, host: str | None, address: IPAddress,
                      secure: bool = False) -> dict[str, Any]:
        """What a GET of ``path`` from ``address`` is answered now, decided as ``handle``
        decides it (health, latency, overrides, the fleet's verdicts, the catalog, the
        per-file checks, settled as a request waits for them, and the mirrors the
        address's network avoids), and not remembered."""
        if self._stale():
            self.follow()
        route = self.routes.match(paths.clean(path), host)
        if route is None:
            raise NotRouted(path)
        service = route.service
        catalog = self.runtime.ledger.catalog(service.name) if service.catalog else None
        item = downloads.asked(route, catalog, "")
        client = self.placer.locate(address)
        want = Want.SECURE_URL if route.guarded and secure else Want.URL
        avoid = self._avoided(service, str(address), time.monotonic())
        made, _ = await self._settled(service, client, item.file, False, want, avoid)
        return self.described(path, item, made, str(address))

    def client(self, request: web.Request) -> tuple[str | None, Location]:
        """The client's address and location, the recent ones remembered (``RECENT``)."""
        headers = request.headers
        peer, forwarded_text = request.remote, headers.get("Forwarded")
        hops = headers.getall("X-Forwarded-For", ())
        key = (peer, forwarded_text, *hops)
        known = self.clients.get(key)
        if known is None:
            known = self.clients.put(key, self._find(request, forwarded_text, hops))
        if self.telling and known[0] is not None:
            request[CLIENT] = known[0]
        request[COUNTRY] = known[1].country or "--"
        return known

    def _find(self, request: web.Request, forwarded_text: str | None,
              hops: Sequence[str]) -> tuple[str | None, Location]:
        """The client's address and location: the address read (``http.client``), the
        GeoIP tree walked (``Locator.at``)."""
        if self._stale():
            self.follow()  # a page asked first, after a reload
        peer, proxies = request.remote, self.proxies
        forwarded = request.forwarded if forwarded_text is not None else None
        if (forwarded or hops) and not self.warned and not proxies.trusts(peer):
            self.warned = True  # once: the headers of an untrusted peer are never read
            log.warning("forwarded_from_untrusted_peer", peer=peer,
                        hint="a proxy in front is probably missing from trusted_proxies "
                             "(--trusted-proxy): every client is placed where it is")
        client = proxies.client(peer, forwarded, hops)
        if client is None:
            return None, NOWHERE
        return client.text, self.placer.at(client.value, client.version)


def _mirrorlist(request: web.Request, data: dict[str, Any]) -> web.Response:
    wants_json = (request.query.get("mirrorlist") == "json"
                  or "application/json" in request.headers.get("Accept", ""))
    headers = {"Cache-Control": "private, no-store"}
    if wants_json:
        return web.Response(text=json.dumps(data, indent=2), content_type="application/json",
                            headers=headers)
    return web.Response(text=pages.mirrorlist(data), content_type="text/html", headers=headers)


def _add_availability(runtime: Runtime, route: paths.Route, data: dict[str, Any],
                      file: CatalogFile) -> None:
    """Per mirror, the file's availability and the mirror's freshness."""
    service = route.service
    for row in data["candidates"]:
        row.update(runtime.ledger.describe(service, row["id"], file))


def _sized(config: Config) -> frozenset[str]:
    """The services whose load counts bytes (a target with a capacity in mbps): a file
    no catalog lists has its size learned by a HEAD (``FileChecker.size_of``)."""
    return frozenset(s.name for s in config.services
                     if any(t.capacity is not None and t.capacity.mbps for t in s.targets))
