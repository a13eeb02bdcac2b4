"""File results shared by a fleet, so that a file is HEADed once per TTL for the whole
fleet, not once per node; and the corrupt copies content verification found (``mark``,
``marks``: every node excludes them).

Before a HEAD the inventory asks ``known()``: a result some node wrote that is not yet
due is taken as it is. Otherwise the node takes the file's lock (``SET NX`` with a TTL)
and HEADs; a node that finds the lock taken waits, bounded by the lock's TTL, for the
holder's result (and HEADs itself if none comes: the holder may have died). ``learned()``
writes a result and frees the lock, in the background. ``turn()`` is the freshness
probe's lock: one node probes after a catalog refresh, the others wait for their turn
and then find the results in the store.

With the store away every call gives up at once (``Link.due``), and the node checks for
itself as it would alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator

import structlog

from router.core import fleet as f
from router.core.availability import Corruption, Outcome, recheck_after
from router.core.config import FleetConfig, Service
from router.watch.store import Link, StoreDown, value

log = structlog.get_logger("router.fleet")

POLL = 0.1  # seconds between looks for another node's result
LOCK_SLACK = 2.0  # seconds a HEAD's lock outlives its timeout


class FleetFiles:
    def __init__(self, config: FleetConfig, link: Link | None = None) -> None:
        self.link = link or Link(config)
        self.node = config.node
        self.skew = 0.0  # the store's clock less ours
        self._tasks: set[asyncio.Task[None]] = set()

    async def known(self, service: Service, target: str, file: str
                    ) -> tuple[Outcome, float] | None:
        """A result not yet due, from the store (maybe after waiting for another node's
        HEAD of it), in this node's clock; None: HEAD it here."""
        if not self.link.due():
            return None
        keys, lock = self.link.keys, self._lock(service, target, file)
        wait = service.health.timeout + LOCK_SLACK
        try:
            pipe = self.link.client.pipeline(transaction=False)
            pipe.time()
            pipe.hget(keys.files(service.name, target), file)
            pipe.set(lock, self.node, nx=True, px=int(wait * 1000))
            stamp, raw, mine = await self.link.call(pipe)
            self.skew = stamp[0] + stamp[1] / 1e6 - time.time()
            found = self._fresh(service, file, value(raw, None))
            if found is not None or mine:
                if found is not None and mine:
                    await self._unlock(lock)
                return found
            return await self._await_other(service, target, file, wait)
        except StoreDown:
            return None

    async def _await_other(self, service: Service, target: str, file: str, wait: float
                           ) -> tuple[Outcome, float] | None:
        deadline = time.monotonic() + wait
        keys, lock = self.link.keys, self._lock(service, target, file)
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            pipe = self.link.client.pipeline(transaction=False)
            pipe.hget(keys.files(service.name, target), file)
            pipe.exists(lock)
            raw, held = await self.link.call(pipe)
            found = self._fresh(service, file, value(raw, None))
            if found is not None or not held:
                return found
        return None

    def _fresh(self, service: Service, file: str, raw: bytes | None
               ) -> tuple[Outcome, float] | None:
        if raw is None:
            return None
        try:
            outcome, at = f.load_file(raw)
        except f.BadValue as e:
            log.error("fleet_bad_value", key="file result", value=raw[:200].decode(
                errors="replace"), error=str(e), effect="ignored: the file is checked here")
            return None
        local = at - self.skew
        if local + recheck_after(service, file, outcome.state) <= time.time():
            return None
        return outcome, local

    def learned(self, service: Service, target: str, file: str, outcome: Outcome,
                at: float) -> None:
        """Write a HEAD's result for the fleet, and free the file's lock (background)."""
        if not self.link.due():
            return
        task = asyncio.get_running_loop().create_task(
            self._write(service, target, file, outcome, at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, service: Service, target: str, file: str, outcome: Outcome,
                     at: float) -> None:
        key = self.link.keys.files(service.name, target)
        pipe = self.link.client.pipeline(transaction=False)
        pipe.hset(key, file, f.dump_file(outcome, round(at + self.skew, 3)))
        longest = max(service.checks.ttl, service.checks.negative_ttl)
        pipe.pexpire(key, int(longest * 2000))
        pipe.delete(self._lock(service, target, file))
        with contextlib.suppress(StoreDown):
            await self.link.call(pipe)

    @contextlib.asynccontextmanager
    async def turn(self, what: str, seconds: float) -> AsyncIterator[bool]:
        """Hold the fleet-wide lock ``what`` (waiting at most ``seconds`` for it); yields
        whether it was had. Given up at once while the store is away."""
        lock, token = self.link.keys.lock(what), secrets.token_hex(8)
        had = await self._take(lock, token, seconds)
        try:
            yield had
        finally:
            if had:
                await self._unlock(lock)

    async def _take(self, lock: str, token: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.link.due():
            pipe = self.link.client.pipeline(transaction=False)
            pipe.set(lock, f"{self.node} {token}", nx=True, px=int(seconds * 1000))
            try:
                if (await self.link.call(pipe))[0]:
                    return True
            except StoreDown:
                return False
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL * 5)
        return False

    async def _unlock(self, lock: str) -> None:
        pipe = self.link.client.pipeline(transaction=False)
        pipe.delete(lock)
        with contextlib.suppress(StoreDown):
            await self.link.call(pipe)

    async def mark(self, service: Service, target: str, file: str,
                   corruption: Corruption | None) -> None:
        """Tell the fleet a copy is corrupt (or, None, no longer)."""
        key, field = self.link.keys.marks(service.name), f"{target}/{file}"
        pipe = self.link.client.pipeline(transaction=False)
        if corruption is None:
            pipe.hdel(key, field)
        else:
            pipe.hset(key, field, json.dumps([corruption.expected, corruption.got,
                                              corruption.at]))
        with contextlib.suppress(StoreDown):
            await self.link.call(pipe)

    async def marks(self, service: Service) -> list[tuple[str, str, Corruption]] | None:
        """The fleet's corrupt copies of a service: (target, file, what was found); a
        value that does not read is left out (and logged). None: the store is away."""
        if not self.link.due():
            return None
        pipe = self.link.client.pipeline(transaction=False)
        pipe.hgetall(self.link.keys.marks(service.name))
        try:
            (raw,) = await self.link.call(pipe)
        except StoreDown:
            return None
        found: list[tuple[str, str, Corruption]] = []
        held: dict[bytes, bytes] = value(raw, {}) or {}
        for field, raw_value in held.items():
            target, _, file = bytes(field).decode(errors="replace").partition("/")
            text = bytes(raw_value).decode(errors="replace")
            try:
                expected, got, at = json.loads(text)
                found.append((target, file, Corruption(str(expected), str(got), float(at))))
            except (ValueError, TypeError):
                log.error("fleet_bad_value", key=f"corrupt {target}/{file}", value=text[:200],
                          effect="ignored")
        return found

    def _lock(self, service: Service, target: str, file: str) -> str:
        return self.link.keys.lock(f"head:{service.name}/{target}/{file}")

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.close()
