"""Content verification: mirrors' copies fetched whole and hashed, within a budget.

For each service with ``verify``, every ``every`` seconds (jittered) each target that
this node verifies gets one file it is known to have, chosen at random among those its
budget can pay for (``core.verify``), fetched whole and hashed (SHA-256), and compared
with the reference: the catalog's digest, or for a path the catalog does not list (a
module version's ``.mod``, ``.info``, ``.zip``), the digest of the origin's copy, fetched
once and kept. A mismatch marks the (target, file) corrupt in the ledger
(``Ledger.verified``): it is never chosen for that file again until a later verification
passes; ``corrupt_after`` marks make the whole target corrupt for the service. A fetch
that fails is unknown, never corrupt.

In a fleet the first of a target's observers (rendezvous over the live nodes) verifies
it, so the budget holds for the whole fleet; marks are shared through the store and
read by every node each round.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog

from router.core import verify as v
from router.core.availability import Ledger
from router.core.catalog import CatalogFile
from router.core.config import Config, Service, Target
from router.core.health import Key
from router.core.memo import Memo
from router.watch.fleetfiles import FleetFiles
from router.watch.tasks import cancel, reconcile

log = structlog.get_logger("router.watch.verifier")

CHUNK = 64 * 1024
SLOWEST = 256 * 1024  # bytes a second: a fetch may take its size at this rate (+ timeout)
ORIGIN_DIGESTS = 4096  # origin copies' digests kept (paths without a catalog digest)
JITTER = 0.1


@dataclass(frozen=True, slots=True)
class Fetched:
    """A copy fetched whole: its SHA-256 (None: not had whole) and the bytes it cost."""

    sha256: str | None
    spent: int
    error: str = ""


async def fetch_hash(session: aiohttp.ClientSession, url: str, limit: float, size: int | None,
                     timeout: float) -> Fetched:
    """GET ``url`` and hash the body as it comes, at most ``limit`` bytes (more: not had
    whole); a body of another length than ``size`` is had whole all the same (its hash
    tells)."""
    digest, spent = hashlib.sha256(), 0
    budget = timeout + (size or limit) / SLOWEST
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=budget)) as resp:
            if resp.status != 200:
                return Fetched(None, 0, f"HTTP {resp.status}")
            async for chunk in resp.content.iter_chunked(CHUNK):
                spent += len(chunk)
                if spent > limit:
                    return Fetched(None, spent, f"larger than the {int(limit)} bytes left")
                digest.update(chunk)
    except TimeoutError:
        return Fetched(None, spent, f"timeout after {budget:.0f}s")
    except (aiohttp.ClientError, OSError, ValueError) as e:
        return Fetched(None, spent, (str(e) or type(e).__name__)[:200])
    return Fetched(digest.hexdigest(), spent)


Owns = Callable[[Key], bool]  # whether this node verifies a target (a fleet's rendezvous)


class Verifier:
    def __init__(self, ledger: Ledger, session: Callable[[], aiohttp.ClientSession | None], *,
                 shared: FleetFiles | None = None, owns: Owns | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None
                 ) -> None:
        self.ledger = ledger
        self.session = session
        self.shared = shared
        self.owns = owns or (lambda _key: True)
        self.clock = clock
        self.rng = rng or random.Random()
        self.budgets: dict[Key, v.Budget] = {}
        self.spent: dict[Key, int] = {}  # bytes fetched per target (the metrics' counter)
        self._origin: Memo[tuple[str, str], str] = Memo(ORIGIN_DIGESTS)
        self._loops: dict[str, tuple[asyncio.Task[None], Service]] = {}

    def reconfigure(self, config: Config) -> None:
        """A loop per service with ``verify``, started, kept or replaced (on reload)."""
        wanted = {s.name: s for s in config.services if s.verify is not None}
        reconcile(self._loops, wanted, lambda name, service: asyncio.create_task(
            self._loop(service), name=f"verify {name}"))

    async def close(self) -> None:
        await cancel(t for t, _s in self._loops.values())
        self._loops.clear()

    async def _loop(self, service: Service) -> None:
        assert service.verify is not None
        while True:
            await asyncio.sleep(service.verify.every * (1 - JITTER * self.rng.random()))
            await self._marks(service)
            mine = [t for t in service.targets if t.enabled and t.url is not None
                    and t.id not in service.origins and self.owns((service.name, t.id))]
            await asyncio.gather(*(self.once(service, t) for t in mine))

    async def once(self, service: Service, target: Target) -> None:
        """One verification of ``target``: a file chosen, fetched whole, judged."""
        assert service.verify is not None
        key, now = (service.name, target.id), self.clock()
        budget = self.budgets.get(key)
        if budget is None:
            budget = self.budgets[key] = v.Budget.of(service.verify, now)
        left = budget.left(now)
        file = v.choose(self._candidates(service, target), left, self.rng)
        session = self.session()
        if file is None or session is None:
            return
        expected = await self._reference(service, file, session)
        if expected is None:
            return
        got = await fetch_hash(session, target.url_for(file.name), left, file.size,
                               service.health.timeout)
        budget.spend(got.spent)
        self.spent[key] = self.spent.get(key, 0) + got.spent
        if got.sha256 is None:
            log.debug("verify_unknown", service=service.name, target=target.id,
                      file=file.name, reason=got.error)
            return
        await self._judged(service, target, file.name, expected, got.sha256)

    async def _judged(self, service: Service, target: Target, name: str, expected: str,
                      got: str) -> None:
        before = name in self.ledger.corrupt(service.name, target.id)
        barred = target.id in self.ledger.barred(service.name)
        self.ledger.verified(service, target.id, name, expected, got, self.clock())
        if not barred and target.id in self.ledger.barred(service.name):
            log.warning("target_corrupt", service=service.name, target=target.id,
                        corrupt_files=len(self.ledger.corrupt(service.name, target.id)),
                        effect="excluded from every redirect of the service")
        if got != expected:
            log.warning("file_corrupt", service=service.name, target=target.id, file=name,
                        expected_sha256=expected, got_sha256=got,
                        effect="not chosen for this file until a verification passes")
        elif before:
            log.info("file_verified", service=service.name, target=target.id, file=name)
        if self.shared is not None and (before or got != expected):
            found = self.ledger.corrupt(service.name, target.id).get(name)
            await self.shared.mark(service, target.id, name, found)

    def _candidates(self, service: Service, target: Target) -> list[CatalogFile]:
        """What ``target`` is known to have and a reference can be had for."""
        catalog = self.ledger.catalog(service.name)
        out = []
        for name in self.ledger.present(service.name, target.id):
            listed = catalog.lookup(name) if catalog is not None else None
            if listed is not None and listed.sha256:
                out.append(listed)
            elif listed is None and service.origins and service.checked(name):
                out.append(CatalogFile(name, ""))
        return out

    async def _reference(self, service: Service, file: CatalogFile,
                         session: aiohttp.ClientSession) -> str | None:
        """The SHA-256 a copy must have: the catalog's, else the origin's copy's."""
        if file.sha256:
            return file.sha256
        key = (service.name, file.name)
        known = self._origin.get(key)
        if known is not None:
            return known
        for origin in (t for t in service.targets if t.id in service.origins and t.url):
            got = await fetch_hash(session, origin.url_for(file.name), float(2**31), None,
                                   service.health.timeout)
            if got.sha256 is not None:
                return self._origin.put(key, got.sha256)
        return None

    async def _marks(self, service: Service) -> None:
        """What the fleet found: every node's ledger holds the fleet's corrupt marks, no
        more, no fewer (a mark another node cleared is cleared here too)."""
        found = await self.shared.marks(service) if self.shared is not None else None
        if found is None:
            return
        fleet = {(target, name): c for target, name, c in found}
        for t in service.targets:
            for name, c in self.ledger.corrupt(service.name, t.id).items():
                if (t.id, name) not in fleet:
                    self.ledger.verified(service, t.id, name, c.expected, c.expected,
                                         self.clock())
        for (target, name), c in fleet.items():
            if service.target(target) is not None and \
                    name not in self.ledger.corrupt(service.name, target):
                self.ledger.verified(service, target, name, c.expected, c.got, c.at)
