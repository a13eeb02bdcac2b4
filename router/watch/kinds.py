"""The kinds of health check, each a ``core.checks.Checker`` made on the prober's session:
the one table the prober, ``probe`` and a fleet's observers find a check in."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp

from router.core.checks import Checker
from router.core.config import Kind
from router.watch.check import HttpChecker

KINDS: Mapping[Kind, Callable[[aiohttp.ClientSession], Checker]] = {
    Kind.HTTP: HttpChecker,
    Kind.ADDRESSES: HttpChecker,  # the same GET, at the probe's address (``probes()``)
}


def checkers(session: aiohttp.ClientSession) -> dict[Kind, Checker]:
    """A checker of every kind, sharing ``session`` (its connector, CA and User-Agent)."""
    return {kind: make(session) for kind, make in KINDS.items()}
