"""Decisions remembered per client network, so that a hot redirect is a dict lookup.

A decision depends on the service, the client's GeoIP network, everything the health
snapshot knows (its ``generation``), everything the availability ledger knows (its
``generation``), and for a catalog-listed file, the file. That tuple is the key: when
any part moves, the old entries are simply never asked for again, and they age out of
the bounded memo. Each entry also remembers the redirects built from it, per path and
query, so the URL encoding is done once. Pure: the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from router.memo import Memo
from router.paths import Redirect, Route, redirect_for
from router.steering import Decision

# (service, client network key, health generation, availability generation, file or None)
Key = tuple[str, bytes, int, int, str | None]
DEFAULT_SIZE = 65536
REDIRECTS_PER_ENTRY = 64


@dataclass(slots=True)
class Entry:
    decision: Decision
    stamp: float  # when it was made, or when its file's due checks were last started
    redirects: dict[tuple[str, str], Redirect | None] = field(default_factory=dict)

    def redirect(self, route: Route, query: str) -> Redirect | None:
        """``paths.redirect_for`` for this decision, built once per (path, query)."""
        key = (route.rest, query)
        if key in self.redirects:
            return self.redirects[key]
        found = redirect_for(route, self.decision, query)
        if len(self.redirects) < REDIRECTS_PER_ENTRY:
            self.redirects[key] = found
        return found


class DecisionCache(Memo[Key, Entry]):
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        super().__init__(size)
