"""A bounded memo: a dict that forgets its oldest entries first, and counts its hits.

Used where a pure result is asked for again and again with the same inputs (a client's
location, a path's route, a decision per client network). Bounded, so that inputs an
outsider chooses (addresses, paths) cannot grow memory without limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
P = TypeVar("P")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """At most ``size`` entries, in two halves: new entries go to the newer half; when it
    is full it becomes the older half and the old older half is forgotten, whole. An
    entry found in the older half is put again, so what is asked for stays. Forgetting
    costs nothing per entry: the memo used to copy its newest seven eighths into a new
    dict whenever it filled (rehashing every key: a tenth of a redirect for a new
    client), and dropping a dict's first key one at a time walks every slot deleted
    before it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[K, V] = {}  # the newer half
        self._older: dict[K, V] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is None:
            value = self._older.get(key)
            if value is None:
                self.misses += 1
                return None
            self.put(key, value)
        self.hits += 1
        return value

    def put(self, key: K, value: V) -> V:
        if len(self._entries) >= max(1, self.size // 2) and key not in self._entries:
            self.evictions += len(self._older)
            self._older, self._entries = self._entries, {}
        self._entries[key] = value
        return value

    def clear(self) -> None:
        self._entries, self._older = {}, {}

    def retain(self, keep: Callable[[K], bool]) -> None:
        """Forget every entry whose key ``keep`` refuses (a reload that changed a part)."""
        self._entries = {k: v for k, v in self._entries.items() if keep(k)}
        self._older = {k: v for k, v in self._older.items() if keep(k)}

    def counters(self) -> dict[str, int]:
        """For ``/metrics``: lookups that hit and missed, entries forgotten, entries held."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "size": len(self)}

    def __len__(self) -> int:
        return len(self._entries) + len(self._older)


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

