"""A check that fails for a reason of our own (no descriptor, a starved loop) is
"unknown": it never moves a target's state."""

from __future__ import annotations

import asyncio
import errno
import time

import aiohttp
from aiohttp.client_reqrep import ConnectionKey

from router.core.config import HealthCheck
from router.core.health import Health, Result, Status, observe
from router.watch.check import _ours, check_once, new_session

CHECK = HealthCheck(timeout=0.2, fall=1)


def test_a_local_failure_leaves_the_targets_state_alone():
    up = Health(status=Status.UP, successes=5)
    local = Result(False, 0.0, "Too many open files", local=True)
    assert observe(up, local, CHECK) == up
    assert local.verdict == "unknown"
    assert observe(up, Result(False, 0.0, "refused"), CHECK).status is not Status.UP


def test_out_of_descriptors_is_ours_however_aiohttp_wraps_it():
    key = ConnectionKey("mirror", 80, False, True, None, None, None)
    wrapped = aiohttp.ClientConnectorError(key, OSError(errno.EMFILE, "Too many open files"))
    assert _ours(wrapped)
    assert _ours(OSError(errno.ENOBUFS, "No buffer space available"))
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(errno.ECONNREFUSED, "no"))
    assert not _ours(refused)


def test_a_timeout_noticed_late_is_the_loops_not_the_mirrors(farm):
    """A slow mirror times out; the same timeout, noticed a second late because the
    loop was blocked, is unknown."""
    slow = farm.mirror("slow-for-local-failures")
    slow.delay = 3.0
    url = slow.base + "/health"

    async def check(block: float) -> Result:
        async with new_session() as session:
            if block:
                asyncio.get_running_loop().call_later(0.05, time.sleep, block)
            return await check_once(session, url, CHECK)

    plain = asyncio.run(check(0))
    assert not plain.ok and not plain.local and plain.error.startswith("timeout")
    starved = asyncio.run(check(1.5))
    assert not starved.ok and starved.local and "too busy" in starved.error


def test_a_timeout_while_the_loop_ran_late_is_the_loops_even_when_noticed_on_time(farm):
    """The loop blocked for 0.3 s of a 1 s check, the timeout noticed on time: before,
    only a timeout noticed past 1.5 x its time was ours, and a 10,000-target round
    marked 64 healthy targets down; now the loop's lateness meanwhile is looked at."""
    slow = farm.mirror("slow-while-the-loop-is-late")
    slow.delay = 3.0
    url = slow.base + "/health"
    check = HealthCheck(timeout=1.0, fall=1)

    async def run(block: float) -> Result:
        async with new_session() as session:
            if block:
                asyncio.get_running_loop().call_later(0.3, time.sleep, block)
            return await check_once(session, url, check)

    assert not asyncio.run(run(0)).local
    late = asyncio.run(run(0.4))
    assert not late.ok and late.local and "loop ran" in late.error, late


def test_a_check_that_waited_for_a_connection_slot_of_ours_is_not_the_mirrors(farm):
    """Checks beyond the session's 64 connections wait for a slot; a timeout spent
    mostly waiting says nothing of the mirror."""
    slow = farm.mirror("slow-with-a-queue")
    slow.delay = 3.0
    url = slow.base + "/health"
    check = HealthCheck(timeout=1.0, fall=1)

    async def run() -> list[Result]:
        async with new_session() as session:
            return await asyncio.gather(*(check_once(session, url, check) for _ in range(80)))

    results = asyncio.run(run())
    assert all(not r.ok for r in results)
    queued = [r for r in results if r.local]
    assert len(queued) >= 80 - 64 and all("connection slot" in r.error for r in queued)
    assert sum(1 for r in results if not r.local) >= 60  # those that reached it: its own
