"""The one policy for bounded tables: a dict that forgets its oldest entries first, and
counts what happens to it.

Every table the server fills from what outsiders choose (addresses, subnets, paths,
questions) is a ``Memo``, so no input can grow memory without limit, and every one shows
in ``/metrics`` (``cache_events_total{cache, event}``, ``cache_entries{cache}``) under the
name it is registered with (``Runtime``'s ``caches``).

Used where a pure result is asked for again and again with the same inputs (a client's
location, a path's route, a decision per client network, an encoded answer). ``Recall``
is the pair of memos decisions are kept in: per client network, or per place. ``Sweep``
is the one sibling, for tables a cycle of exactly their size must fit (DNS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
P = TypeVar("P")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """At most ``size`` entries, in two halves: new entries go to the newer half; when it
    is full it becomes the older half and the old older half is forgotten, whole. An
    entry found in the older half is put again, so what is asked for stays (close to
    least-recently-used, at no cost per hit). Forgetting costs nothing per entry: no
    copy, no rehash, no walk over deleted slots. What is kept for sure is the newer
    half: a table that must keep the N most recent (a resolver cycling through N
    subnets) is made of size 2N.

    ``get()`` counts hits and misses. A path hot enough that a method call matters reads
    ``fresh`` (the newer half, a plain dict) first and calls ``from_aged()`` only when
    that misses: its hits in the newer half are then counted by the caller, or not at all
    (the caller's ``counters`` say which)."""

    __slots__ = ("_half", "aged", "evictions", "fresh", "hits", "misses", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._half = max(1, size // 2)
        self.fresh: dict[K, V] = {}  # the newer half
        self.aged: dict[K, V] = {}  # the older half
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: K) -> V | None:
        value = self.fresh.get(key)
        if value is None:
            return self.from_aged(key)
        self.hits += 1
        return value

    def from_aged(self, key: K) -> V | None:
        """``get()`` for a key the caller did not find in ``fresh``: the older half (an
        entry found there moves to the newer half), counted. A hot path reads
        ``memo.fresh.get(key)`` and, when that misses and ``memo.aged`` is not empty,
        calls this: its hits in the newer half are its own to count."""
        value = self.aged.pop(key, None)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return self.put(key, value)

    def put(self, key: K, value: V) -> V:
        fresh = self.fresh
        if key not in fresh:
            if self.aged:
                self.aged.pop(key, None)  # one copy of each key
            if len(fresh) >= self._half:
                self.evictions += len(self.aged)
                self.aged, self.fresh = fresh, {}
                fresh = self.fresh
        fresh[key] = value
        return value

    def pop(self, key: K) -> V | None:
        """Forget ``key`` (a stale entry); its value, if it was held."""
        found = self.fresh.pop(key, None)
        return found if found is not None else self.aged.pop(key, None)

    def clear(self) -> None:
        self.fresh, self.aged = {}, {}

    def retain(self, keep: Callable[[K], bool]) -> None:
        """Forget every entry whose key ``keep`` refuses (a reload that changed a part)."""
        self.fresh = {k: v for k, v in self.fresh.items() if keep(k)}
        self.aged = {k: v for k, v in self.aged.items() if keep(k)}

    def items(self) -> Iterator[tuple[K, V]]:
        """Every entry, the oldest first."""
        yield from self.aged.items()
        yield from self.fresh.items()

    def __iter__(self) -> Iterator[K]:
        """Every key, the oldest first."""
        yield from self.aged
        yield from self.fresh

    def counters(self) -> dict[str, int]:
        """For ``/metrics``: lookups that hit and missed, entries forgotten, entries held."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "size": len(self)}

    def __len__(self) -> int:
        return len(self.fresh) + len(self.aged)

    def __contains__(self, key: object) -> bool:
        return key in self.fresh or key in self.aged


class Sweep(Memo[K, V]):
    """The one sibling: at most ``size`` entries, all forgotten at once when it is full
    (the older half is always empty). Where it is used, and why: the DNS face's tables of
    whole replies, answers, subnets and senders (``router.dns``). A resolver asks for the
    same ``size`` subnets over and over in a cycle, and a cycle of exactly ``size`` keys
    fits here whole, where a ``Memo``, which keeps only its newer half for sure, would
    forget each key just before it is asked again (a ``Memo`` twice as large would hold
    twice the memory). Its one dict, ``fresh``, is emptied in place, never replaced, so
    a hot path may hold it and look up in it directly: a hit costs a dict lookup, not a
    method call (such hits are the caller's to count)."""

    __slots__ = ()

    def put(self, key: K, value: V) -> V:
        fresh = self.fresh
        if len(fresh) >= self.size and key not in fresh:
            self.evictions += len(fresh)
            fresh.clear()
        fresh[key] = value
        return value

    def clear(self) -> None:
        self.fresh.clear()

    def retain(self, keep: Callable[[K], bool]) -> None:
        for key in [k for k in self.fresh if not keep(k)]:
            del self.fresh[key]


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
