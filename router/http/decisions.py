"""Decisions remembered per client network, so that a hot redirect is a dict lookup.

A decision depends on the service, the client's GeoIP network, everything the health
snapshot knows (its ``generation``), everything the availability ledger knows (its
``generation``), and for a catalog-listed file, the file. That tuple is the key: when
any part moves, the old entries are simply never asked for again, and they age out of
the bounded memo. Each entry also remembers the redirects built from it, per path and
query, so the URL encoding is done once. Pure: the clock is passed in.

Client networks that come to the same outcome (the same targets in the same order, for
the same service, generations and file) share one entry (``remember``): a redirect or a
Metalink document depends on that order only. So the memo holds a key per network but
few decisions, and 65,536 networks cost about 10 MB, not the 200 MB that as many full
decisions (every candidate with its reasons) took. The entry's ``decision`` is the first
of its outcome: what only one client's decision can say (distances, costs: ``?mirrorlist``)
is decided afresh.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from router.core.memo import Memo
from router.core.steering import Decision
from router.http.routes import Redirect, Route, redirect_for

# (service, client network key, health generation, availability generation, file or None,
# an HTTPS client kept from http:// mirrors)
Key = tuple[str, bytes, int, int, str | None, bool]
DEFAULT_SIZE = 65536
REDIRECTS_PER_ENTRY = 64


@dataclass(slots=True)
class Entry:
    decision: Decision
    stamp: float  # when it was made, or when its file's due checks were last started
    # the path (with its query, if any) → the redirect built for it (None: nowhere)
    redirects: Memo[str | tuple[str, str], tuple[Redirect | None]] = field(
        default_factory=lambda: Memo(REDIRECTS_PER_ENTRY))

    def redirect(self, route: Route, query: str) -> Redirect | None:
        """``paths.redirect_for`` for this decision, built once per (path, query)."""
        key = (route.rest, query) if query else route.rest
        redirects = self.redirects
        found = redirects.fresh.get(key) or redirects.from_aged(key)
        if found is None:
            found = redirects.put(key, (redirect_for(route, self.decision, query),))
        return found[0]


class DecisionCache(Memo[Key, Entry]):
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        super().__init__(size)
        # (service, state, file, target ids in order) → the entry of that outcome
        self.outcomes: Memo[tuple[object, ...], Entry] = Memo(size)

    def remember(self, key: Key, decision: Decision, now: float) -> Entry:
        """``put(key, Entry(decision, now))``, sharing the entry of an equal outcome."""
        return self.put(key, self.shared(key, decision, now))

    def known(self, key: Key, order: tuple[str, ...]) -> Entry | None:
        """The entry of the outcome ``order`` (target ids, ranked) for ``key``'s service,
        state and file, if a decision with that outcome was made."""
        return self.outcomes.get((key[0], *key[2:], *order))

    def shared(self, key: Key, decision: Decision, now: float) -> Entry:
        """The entry of ``decision``'s outcome (made now if it is the first)."""
        outcome = (key[0], *key[2:], *(c.target.id for c in decision.ranked))
        entry = self.outcomes.get(outcome)
        if entry is None:
            entry = self.outcomes.put(outcome, Entry(decision, now))
        return entry

    def clear(self) -> None:
        super().clear()
        self.outcomes.clear()

    def keep_services(self, names: Collection[str]) -> None:
        """Forget the decisions of every service not in ``names`` (a reload changed it)."""
        self.retain(lambda key: key[0] in names)
        self.outcomes.retain(lambda k: k[0] in names)
