"""The inventory: fetches catalogs and HEADs mirrors for files, feeding the ``Ledger``.

The I/O half of per-file availability (``router.core.availability`` is the pure half):

- one loop per service with a ``catalog``: fetch the list at start and every ``refresh``;
  a failed fetch keeps the last good copy and is logged (``catalog_failed``), and while
  there is no good copy at all it is tried again within ``RETRY`` seconds. After every
  good fetch the **freshness probe** HEADs the newest stable release's files on every
  mirror, skipping results that are not yet due;
- ``check()``: one HEAD of one file on one mirror, shared by every request that wants it
  while it runs, at most ``availability_checks`` at once per mirror;
- ``settle()``: what a request calls: rank, start the checks that are due, wait at most
  ``availability_wait`` for those that could change the winner, rank again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import structlog

from router.core import mutable
from router.core.availability import Freshness, Ledger, Outcome, judge
from router.core.catalog import (
    MUTABLE_KINDS,
    Catalog,
    CatalogError,
    CatalogFile,
    CatalogFormat,
    parse_go,
)
from router.core.config import Config, Service, Target
from router.core.steering import Decision, worth_waiting_for
from router.errors import RouterError
from router.watch.check import tls_context, user_agent
from router.watch.fleetfiles import FleetFiles
from router.watch.sizes import Sizes
from router.watch.tasks import cancel
from router.watch.verifier import Owns, Verifier

log = structlog.get_logger("router.watch.inventory")

CATALOG_LIMIT = 64 * 1024 * 1024  # bytes: a larger release list is refused
RETRY = 30.0  # seconds: retry within this while a service has no good catalog at all
QUEUE_LIMIT = 512  # checks waiting for one mirror; past this, new ones are not started
FRESHNESS_TURN = 60.0  # seconds a fleet's freshness probe may hold its lock
PARSERS: dict[CatalogFormat, Callable[[bytes], Catalog]] = {CatalogFormat.GO: parse_go}

CheckKey = tuple[str, str, str]  # (service, target, file name)


class FetchError(RouterError):
    """The catalog could not be fetched."""


async def fetch(session: aiohttp.ClientSession, url: str, timeout: float) -> bytes:
    """GET ``url``: the body of a 200, at most ``CATALOG_LIMIT`` bytes."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                raise FetchError(f"HTTP {resp.status}")
            body = await resp.content.read(CATALOG_LIMIT + 1)
    except TimeoutError:
        raise FetchError(f"timeout after {timeout:g}s") from None
    except (aiohttp.ClientError, OSError, ValueError) as e:
        raise FetchError(str(e) or type(e).__name__) from None
    if len(body) > CATALOG_LIMIT:
        raise FetchError(f"larger than {CATALOG_LIMIT} bytes")
    return body


async def head(session: aiohttp.ClientSession, url: str, file: CatalogFile,
               timeout: float) -> Outcome:
    """HEAD ``url`` (following up to 3 redirects) and judge the answer against ``file``."""
    try:
        async with session.head(url, allow_redirects=True, max_redirects=3,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return judge(file, resp.status, resp.content_length)
    except TimeoutError:
        return judge(file, None, None, f"timeout after {timeout:g}s")
    except (aiohttp.ClientError, OSError, ValueError) as e:
        return judge(file, None, None, (str(e) or type(e).__name__)[:200])


class Inventory:
    """Keeps the ledger's catalogs and per-file availability up to date."""

    def __init__(self, ledger: Ledger, *, catalogs: bool = True,
                 ca_file: Path | None = None, node: str | None = None,
                 shared: FleetFiles | None = None, owns: Owns | None = None) -> None:
        self.ledger = ledger
        self.node = node  # a fleet's node: named in the User-Agent
        self.shared = shared  # a fleet's file results: each file HEADed once per TTL
        self.catalogs = catalogs  # False in a worker: its supervisor fetches and probes
        self.ca_file = ca_file  # HTTPS mirrors are verified as the health checks do
        self._session: aiohttp.ClientSession | None = None
        self._services: dict[str, Service] = {}
        self._loops: dict[str, tuple[asyncio.Task[None], object]] = {}
        self._first: dict[str, asyncio.Event] = {}
        self._inflight: dict[CheckKey, asyncio.Task[None]] = {}
        self._gates: dict[tuple[str, str], tuple[asyncio.Semaphore, int]] = {}
        self._queued: dict[tuple[str, str], int] = {}
        self._probes: set[asyncio.Task[None]] = set()  # freshness probes under way
        # content verification (``verify``): where the catalogs are, once per machine
        self.verifier = Verifier(ledger, lambda: self._session, shared=shared, owns=owns) \
            if catalogs else None
        self.sizes = Sizes(lambda: self._session)  # of files no catalog lists (load)

    async def start(self, config: Config) -> None:
        connector = aiohttp.TCPConnector(limit=256, ssl=tls_context(self.ca_file))
        self._session = aiohttp.ClientSession(connector=connector,
                                              headers={"User-Agent": user_agent(self.node)})
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Start, keep or stop catalog loops to match ``config`` (on start and reload)."""
        self.ledger.retain(config)
        self._services = {s.name: s for s in config.services if s.catalog is not None}
        for name, (task, spec) in list(self._loops.items()):
            service = self._services.get(name)
            if service is None or service.catalog != spec:
                task.cancel()
                del self._loops[name]
        if self.verifier is not None:
            self.verifier.reconfigure(config)
        for name, service in self._services.items():
            if name not in self._loops and self.catalogs:
                self._first[name] = asyncio.Event()
                task = asyncio.create_task(self._catalog_loop(name), name=f"catalog {name}")
                self._loops[name] = (task, service.catalog)

    async def first_fetch(self) -> None:
        """Wait until every catalog has been fetched once (or failed), within its timeout."""
        pending = [e.wait() for e in self._first.values() if not e.is_set()]
        if pending:
            longest = max(s.catalog.timeout for s in self._services.values() if s.catalog)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), longest + 1.0)

    async def close(self) -> None:
        if self.verifier is not None:
            await self.verifier.close()
        await self.sizes.close()
        await cancel([*(t for t, _spec in self._loops.values()), *self._inflight.values(),
                      *self._probes])
        self._loops.clear()
        if self._session is not None:
            await self._session.close()
        if self.shared is not None:
            await self.shared.close()

    # ---------------------------------------------------------------- requests

    def size_of(self, service: Service, path: str, url: str) -> int | None:
        """A file's size no catalog lists, once a HEAD of ``url`` told it (``Sizes``)."""
        return self.sizes.size_of(service, path, url)

    async def settle(self, service: Service, file: CatalogFile,
                     decide: Callable[[], Decision]) -> Decision:
        """Decide; wait at most ``availability_wait`` for checks that could change it."""
        decision = decide()
        self.check_due(service, file)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + service.checks.wait
        while True:
            waiting = [task for tid in worth_waiting_for(decision)
                       if (task := self._inflight.get((service.name, tid, file.name)))]
            left = deadline - loop.time()
            if not waiting or left <= 0:
                return decision
            await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            decision = decide()

    def check_due(self, service: Service, file: CatalogFile) -> None:
        """Start, in the background, every check of ``file`` that has come due: a HEAD
        per target, or for a changing answer's subject, one round that reads it from
        every target at once (``compare``)."""
        if file.kind in MUTABLE_KINDS:
            self.compare(service, file)
            return
        for t in service.targets:
            self.check(service, t.id, file)

    def compare(self, service: Service, file: CatalogFile) -> None:
        """Read a changing answer's subject (a module's version list) from every target
        and judge each against the freshest (``core.mutable``), when any is due. One
        round at a time per subject; each due target's check waits on it."""
        now = time.time()
        due = [t.id for t in service.targets if t.enabled and t.url is not None
               and self.ledger.is_due(service, t.id, file, now)]
        keys = [(service.name, tid, file.name) for tid in due]
        if not due or self._session is None or any(k in self._inflight for k in keys):
            return
        task = asyncio.create_task(self._compare(service, file))
        for key in keys:
            self._inflight[key] = task
        task.add_done_callback(lambda _t: [self._inflight.pop(k, None) for k in keys])

    def check(self, service: Service, target_id: str, file: CatalogFile) -> None:
        """Check ``file`` on a target if it is due and not already being checked."""
        key = (service.name, target_id, file.name)
        target = service.target(target_id)
        if (key in self._inflight or target is None or target.url is None
                or not target.enabled or self._session is None
                or not self.ledger.is_due(service, target_id, file, time.time())):
            return
        mirror = (service.name, target_id)
        if self._queued.get(mirror, 0) >= QUEUE_LIMIT:
            return
        self._queued[mirror] = self._queued.get(mirror, 0) + 1
        task = asyncio.create_task(self._check(service, target, file))
        self._inflight[key] = task
        task.add_done_callback(lambda _t: self._done(key))

    def _done(self, key: CheckKey) -> None:
        self._inflight.pop(key, None)
        mirror = key[:2]
        self._queued[mirror] = self._queued.get(mirror, 1) - 1

    async def _check(self, service: Service, target: Target, file: CatalogFile) -> None:
        assert self._session is not None
        shared = self.shared
        known = await shared.known(service, target.id, file.name) if shared else None
        if known is not None:  # another node of the fleet checked it
            outcome, at = known
        else:
            async with self._gate(service, target):
                outcome = await head(self._session, target.url_for(file.name), file,
                                     service.health.timeout)
            at = time.time()
            if shared is not None:
                shared.learned(service, target.id, file.name, outcome, at)
        before = self.ledger.freshness(service, target.id)
        self.ledger.record(service, target.id, file, outcome, at)
        after = self.ledger.freshness(service, target.id)
        if after is not before and after is not Freshness.UNKNOWN:
            log.info("mirror_freshness", service=service.name, target=target.id,
                     old=before.value, new=after.value)

    async def _compare(self, service: Service, file: CatalogFile) -> None:
        """One round for a subject: what the fleet knows already, else every target's
        answer (the origins' too: they are the reference), judged together; recorded."""
        checked = [t for t in service.targets if t.enabled and t.url is not None]
        mirrors = [t.id for t in checked if t.id not in service.origins]
        outcomes = await self._shared_outcomes(service, mirrors, file)
        if outcomes is None:
            answers = await asyncio.gather(*(self._read(service, t, file) for t in checked))
            at = time.time()
            judged = mutable.judge(file.kind, dict(zip((t.id for t in checked), answers,
                                                       strict=True)), service.origins)
            outcomes = {tid: (judged[tid], at) for tid in mirrors}
            if self.shared is not None:
                for tid, (outcome, when) in outcomes.items():
                    self.shared.learned(service, tid, file.name, outcome, when)
        for tid, (outcome, when) in outcomes.items():
            if self.ledger.record(service, tid, file, outcome, when):
                log.info("mirror_answer", service=service.name, target=tid, path=file.name,
                         state=outcome.state.value if outcome.state else "unknown",
                         detail=outcome.detail)

    async def _shared_outcomes(self, service: Service, mirrors: list[str], file: CatalogFile
                               ) -> dict[str, tuple[Outcome, float]] | None:
        """Every mirror's verdict on a subject, when the fleet has them all (one node
        compares; the others wait, bounded, for its results); None: compare here."""
        if self.shared is None:
            return None
        known = await asyncio.gather(*(self.shared.known(service, tid, file.name)
                                       for tid in mirrors))
        if any(k is None for k in known):
            return None
        return {tid: k for tid, k in zip(mirrors, known, strict=True) if k is not None}

    async def _read(self, service: Service, target: Target, file: CatalogFile
                    ) -> mutable.Answer:
        """GET a subject from a target (its first ``BODY_LIMIT`` bytes), in its gate."""
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=service.health.timeout)
        try:
            async with self._gate(service, target), self._session.get(
                    target.url_for(file.name), timeout=timeout) as resp:
                return mutable.Answer(resp.status, await resp.content.read(mutable.BODY_LIMIT))
        except TimeoutError:
            return mutable.Answer(None, error=f"timeout after {service.health.timeout:g}s")
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return mutable.Answer(None, error=(str(e) or type(e).__name__)[:200])

    def _gate(self, service: Service, target: Target) -> asyncio.Semaphore:
        key, limit = (service.name, target.id), service.checks.per_mirror
        gate = self._gates.get(key)
        if gate is None or gate[1] != limit:
            gate = self._gates[key] = (asyncio.Semaphore(limit), limit)
        return gate[0]

    # ---------------------------------------------------------------- catalogs

    async def _catalog_loop(self, name: str) -> None:
        while True:
            service = self._services[name]
            ok = await self._refresh(service)
            self._first[name].set()
            spec = service.catalog
            assert spec is not None
            good = ok or self.ledger.catalog(name) is not None
            await asyncio.sleep(spec.refresh if good else min(spec.refresh, RETRY))

    async def _refresh(self, service: Service) -> bool:
        spec = service.catalog
        assert spec is not None and self._session is not None
        try:
            catalog = PARSERS[spec.format](await fetch(self._session, spec.url, spec.timeout))
        except (FetchError, CatalogError) as e:
            held = self.ledger.catalog(service.name)
            log.warning("catalog_failed", service=service.name, url=spec.url, error=str(e),
                        keeping="the last good copy" if held else "no catalog yet")
            return False
        changed = self.ledger.install(service, catalog)
        newest = catalog.newest_stable
        log.info("catalog", service=service.name, changed=changed,
                 releases=len(catalog.releases), files=len(catalog.files),
                 newest=newest.version if newest else None)
        task = asyncio.create_task(self._freshness(service), name=f"freshness {service.name}")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)
        return True

    async def _freshness(self, service: Service) -> None:
        """HEAD the newest stable release's files on every mirror, where due. In a fleet
        one node at a time does it (a lock with a TTL): the first HEADs, the others then
        find its results in the store."""
        turn = self.shared.turn(f"freshness:{service.name}", FRESHNESS_TURN) \
            if self.shared is not None else contextlib.nullcontext(True)
        async with turn:
            for target_id, file in list(self.ledger.freshness_plan(service, time.time())):
                self.check(service, target_id, file)
            started = [t for k, t in self._inflight.items() if k[0] == service.name]
            if started:
                await asyncio.wait(started, timeout=FRESHNESS_TURN)
