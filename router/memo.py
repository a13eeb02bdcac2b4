"""A bounded memo: a dict that forgets its oldest entries first, and counts its hits.

Used where a pure result is asked for again and again with the same inputs (a client's
location, a path's route, a decision per client network). Bounded, so that inputs an
outsider chooses (addresses, paths) cannot grow memory without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        # An OrderedDict, not a dict: dropping a plain dict's first key again and again
        # (``next(iter(d))``) walks over every slot deleted before it, O(n) per eviction:
        # that took a sixth of the time of a redirector seeing ever new clients.
        self._entries: OrderedDict[K, V] = OrderedDict()
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
            self._entries.popitem(last=False)  # the oldest
            self.evictions += 1
        self._entries[key] = value
        return value

    def clear(self) -> None:
        self._entries.clear()

    def counters(self) -> dict[str, int]:
        """For ``/metrics``: lookups that hit and missed, entries forgotten, entries held."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "size": len(self._entries)}

    def __len__(self) -> int:
        return len(self._entries)
