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
        self._outcomes: dict[tuple[object, ...], Entry] = {}

    def remember(self, key: Key, decision: Decision, now: float) -> Entry:
        """``put(key, Entry(decision, now))``, sharing the entry of an equal outcome."""
        return self.put(key, self.shared(key, decision, now))

    def known(self, key: Key, order: tuple[str, ...]) -> Entry | None:
        """The entry of the outcome ``order`` (target ids, ranked) for ``key``'s service,
        state and file, if a decision with that outcome was made."""
        return self._outcomes.get((key[0], *key[2:], *order))

    def shared(self, key: Key, decision: Decision, now: float) -> Entry:
        """The entry of ``decision``'s outcome (made now if it is the first)."""
        outcome = (key[0], *key[2:], *(c.target.id for c in decision.ranked))
        entry = self._outcomes.get(outcome)
        if entry is None:
            if len(self._outcomes) >= self.size:
                self._outcomes.clear()  # old generations' outcomes: forget them all
            entry = self._outcomes[outcome] = Entry(decision, now)
        return entry

    def clear(self) -> None:
        super().clear()
        self._outcomes.clear()

    def keep_services(self, names: Collection[str]) -> None:
        """Forget the decisions of every service not in ``names`` (a reload changed it)."""
        self.retain(lambda key: key[0] in names)
        self._outcomes = {k: e for k, e in self._outcomes.items() if k[0] in names}
