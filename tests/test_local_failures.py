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
