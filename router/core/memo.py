"""A bounded memo: a dict that forgets its oldest entries first, and counts its hits.

Used where a pure result is asked for again and again with the same inputs (a client's
location, a path's route, a decision per client network). Bounded, so that inputs an
outsider chooses (addresses, paths) cannot grow memory without limit.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Generic, TypeVar

K = TypeVar("K")
P = TypeVar("P")
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[K, V] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: K, value: V) -> V:
        if key not in self._entries and len(self._entries) >= self.size:
            # The oldest eighth goes, into a new dict. Dropping a dict's first key one at
            # a time (``next(iter(d))``) walks every slot deleted before it: O(n) each
            # time, a sixth of the cost of a redirector seeing ever new clients. An
            # OrderedDict would cost 13 MB more for the redirector's two memos.
            drop = max(1, self.size // 8)
            self._entries = dict(islice(self._entries.items(), drop, None))
            self.evictions += drop
        self._entries[key] = value
        return value

    def clear(self) -> None:
        self._entries.clear()

    def retain(self, keep: Callable[[K], bool]) -> None:
        """Forget every entry whose key ``keep`` refuses (a reload that changed a part)."""
        self._entries = {k: v for k, v in self._entries.items() if keep(k)}

    def counters(self) -> dict[str, int]:
        """For ``/metrics``: lookups that hit and missed, entries forgotten, entries held."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "size": len(self._entries)}

    def __len__(self) -> int:
        return len(self._entries)


class Recall(Generic[K, P, V]):
    """Decisions remembered per client network (``key``), or per client *place* (point
    and country: ``place``) when they did not depend on the network: a ranking that did
    not hash on the client's network (no spread among near-equal targets) is the same
    for every network there, so a new client in a known place costs its GeoIP lookup and
    a dict lookup. The place is asked first. Both the DNS and the HTTP face use it."""

    def __init__(self, networks: Memo[K, V], places: Memo[P, V]) -> None:
        self.networks = networks
        self.places = places

    def get(self, key: K, place: P) -> V | None:
        return self.places.get(place) or self.networks.get(key)

    def put(self, key: K, place: P, by_network: bool, value: V) -> V:
        """Remember ``value`` for this network (``by_network``: it hashed on it), else
        for every network at this place."""
        return self.networks.put(key, value) if by_network else self.places.put(place, value)

