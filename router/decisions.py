"""Decisions remembered per client network, so that a hot redirect is a dict lookup.

A decision depends on the service, the client's GeoIP network, everything the health
snapshot knows (its ``generation``), everything the availability ledger knows (its
``generation``), and for a catalog-listed file, the file. That tuple is the key: when
any part moves, the old entries are simply never asked for again, and they age out.
The cache is bounded (oldest first out), so random client networks cannot grow it
without limit. Pure: the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.steering import Decision

# (service, client network key, health generation, availability generation, file or None)
Key = tuple[str, bytes, int, int, str | None]
DEFAULT_SIZE = 65536


@dataclass(slots=True)
class Entry:
    decision: Decision
    stamp: float  # when it was made, or when its file's due checks were last started


class DecisionCache:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._entries: dict[Key, Entry] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: Key, decision: Decision, now: float) -> None:
        if key not in self._entries and len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # the oldest
            self.evictions += 1
        self._entries[key] = Entry(decision, now)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
