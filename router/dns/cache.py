"""Fully encoded answers, ready to send: the DNS fast path.

An answer is stored once the strict path (``wire.read``, ``Authority.respond``,
``wire.render``) has built it, under the key of everything it depends on:

- the question, its name case-folded, with TYPE and CLASS, and the query's RD and CD
  bits and EDNS shape (OPT present, version, DO, CO, ECS present): ``Query.base``;
- for a steered answer (one that ``rank()`` decided), also the client's GeoIP network
  (``Location.network``: by the ECS subnet, else by the sender), and the health
  generation it was decided in. Other answers are not keyed by client at all.

On a hit only the ID, the spelling of the name and the ECS option (the query's own,
with the stored scope) are patched in (a query seen before byte for byte, whose answer
the sender does not decide, skips even that: its reply is kept whole, bar the ID), and
the hit is counted as the strict path counts (``router.core.stats``: qtype and rcode, and the
targets a steered answer chose).

The zone config is fixed for the life of an ``Authority``, and a reload builds a new
one, whose cache takes over the old one's answers for names in zones the reload could not
change (``carry``; ``router.core.config.unchanged_zones``) and its client tables (the
GeoIP database is the same: a new database starts a cache afresh).
A steered entry from an older health generation is stale and never served. Answers that
had to be truncated are not stored; a stored answer that does not fit the client's
buffer is left to the strict path, which truncates it.

Where a client is comes from ``dns.clients`` (the authority's, shared): on a miss for a
steered question, ``answer()`` hands the client's location on, so the strict path steers
with the location the key was made of, and GeoIP is asked once.

Memory is bounded: every table is a ``core.memo.Sweep`` of at most ``size`` entries (the
whole-reply table per sender, a quarter), emptied whole when it fills, so that a
resolver cycling through ``size`` ECS subnets is answered from the cache from its
second pass on. The steered questions are bounded by the zones (names x types x shapes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from router.core.health import Key as TargetKey
from router.core.health import Snapshot
from router.core.ip import IPAddress
from router.core.memo import Sweep
from router.core.retries import Retries, network_asking
from router.core.stats import Stats
from router.dns import wire
from router.dns.clients import Clients, Located, Subnet
from router.dns.wire import Query, Reply

QUESTION = 12  # the question starts right after the header
Base = tuple[bytes, int]  # (case-folded question with TYPE and CLASS, shape bits)

DEFAULT_SIZE = 50_000
V = TypeVar("V")

Key = Base | tuple[Base, bytes]  # an answer for everyone, or for one client network
Kept = tuple[bytes, "Entry", bytes, int]  # a whole reply: after its ID, entry, ECS, name end


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes  # the reply without its ID and, when the query had ECS, without the echo
    generation: int  # the health generation of a steered answer (-1: any)
    counted: tuple[int, int]  # (qtype, rcode) as ``Stats.dns_queries`` counts it
    chosen: tuple[TargetKey, ...]  # the targets a steered answer chose


class AnswerCache:
    """Encoded answers for one ``Authority``. Counters are plain attributes, for metrics."""

    def __init__(self, clients: Clients, health: Callable[[], Snapshot], server_payload: int,
                 stats: Stats, size: int = DEFAULT_SIZE, retries: Retries | None = None
                 ) -> None:
        self.clients = clients
        self.retries = retries  # clients that came back: their networks' answers are their own
        self.health = health
        self.server_payload = server_payload
        self.stats = stats
        self.size = size
        self.entries: Sweep[Key, Entry] = Sweep(size)
        # Questions whose answers depend on the client, each mapped to the one copy of it
        # that keys use; and one copy of each body, count and choice that entries share
        # (a few answers serve many networks).
        self.steered: dict[Base, Base] = {}
        self._shared: Sweep[Any, Any] = Sweep(size)
        # Replies to queries seen before, byte for byte after the ID, when nothing else
        # decides them (an ECS subnet, or an answer for everyone) and they fit any
        # buffer: the query's bytes -> (the reply after its ID, its entry). A hit here is
        # one dict lookup and the generation check. Filled when a reply is stored or hit;
        # at most ``size`` (a resolver cycling through 50,000 ECS subnets is answered
        # from here from its second pass on: with a quarter, never).
        self._exact: Sweep[bytes, Kept] = Sweep(size or 1)
        # ... and those the sender's address decides (a steered answer without ECS), per
        # (sender, bytes): at most a quarter of ``size``.
        self._by_peer: Sweep[tuple[IPAddress, bytes], Kept] = Sweep(size // 4 or 1)
        # ... their dicts, held for the hot path (a Sweep never replaces its dict)
        self._replies, self._replies_by_peer = self._exact.fresh, self._by_peer.fresh
        self._answers = self.entries.fresh
        self.hits = self.misses = self.stale = 0

    def seen(self, data: bytes, peer: IPAddress) -> Kept | None:
        """The reply to a query seen before byte for byte (bar its ID; one with neither a
        COOKIE nor an NSID option; from this sender, when the sender decides it), its
        entry (count it with ``hit()``), and what RRL needs of the query (its ECS
        option's value, where its name ends): nothing to read again. Plain values only,
        so the garbage collector has nothing to walk."""
        table: dict[Any, Kept] = self._replies
        key: Any = data[2:]
        found = table.get(key)
        if found is None:
            table, key = self._replies_by_peer, (peer, key)
            found = table.get(key) if table else None
            if found is None:
                return None
        rest, known, ecs, end = found
        if known.generation < 0:
            return data[:2] + rest, known, ecs, end
        if known.generation == self.health().generation:
            retries = self.retries
            if retries is not None and retries.live and self.avoids(ecs, peer):
                return None
            return data[:2] + rest, known, ecs, end
        del table[key]  # stale: the keyed lookup says so
        return None

    def avoids(self, ecs: bytes, peer: IPAddress) -> bool:
        """Whether the client network of a query (its ECS option's value, else its
        sender) avoids some mirror now (``core.retries``): its steered answer is its own."""
        assert self.retries is not None
        network = network_asking(ecs, peer)
        return network is not None and self.retries.avoids(network, time.monotonic())

    def answer(self, query: Query, peer: IPAddress, tcp: bool) -> bytes | Located | None:
        """The reply to ``query`` from the cache; on a miss, where its client is when the
        question is one whose answer depends on it (None when not): take the strict
        path with that."""
        subnet = self.clients.subnet(query)
        steered = self.steered.get(query.base)
        located = None
        if steered is None:
            key: Key = query.base
            tail = subnet.echo_zero
        else:
            located = subnet.located or (self.clients.sender(peer), 0)
            key, tail = (steered, located[0].key), subnet.echo
            retries = self.retries
            if retries is not None and retries.live and self.avoids(query.ecs_value, peer):
                self.misses += 1
                return located
        entry = self._answers.get(key)
        if entry is None:
            self.misses += 1
            return located
        if entry.generation >= 0 and entry.generation != self.health().generation:
            self.stale += 1
            return located
        data, end = query.data, query.name_end
        out = data[:2] + entry.body + tail
        if not query.lower:  # the name as this query spells it
            out = out[:QUESTION] + data[QUESTION:end] + out[end:]
        if len(out) > 512 and len(out) > wire.reply_limit(query.payload, self.server_payload,
                                                            tcp):
            self.misses += 1
            return located  # the strict path truncates it
        self.hit(entry)
        self._keep(query, peer, out, entry, subnet)
        return out

    def carry(self, old: AnswerCache, origins: frozenset[str]) -> None:
        """Take over ``old``'s answers for names within ``origins`` (oldest first, so
        the newest stay newest)."""
        if not origins:
            return
        suffixes = {_wire(origin) for origin in origins}
        for key, entry in old.entries.items():
            question = key[0] if isinstance(key[0], bytes) else key[0][0]
            if _in_zones(question[:-4], suffixes):
                self.entries.put(key, entry)
        self.steered.update((b, b) for b in old.steered if _in_zones(b[0][:-4], suffixes))

    def hit(self, entry: Entry) -> None:
        """A hit, counted as the strict path counts the query."""
        self.hits += 1
        self.stats.dns_queries[entry.counted] += 1
        for chosen in entry.chosen:
            self.stats.dns_chosen[chosen] += 1

    def store(self, query: Query, peer: IPAddress, out: bytes, counted: tuple[int, int],
              reply: Reply) -> None:
        """Keep ``out``, the whole reply to ``query`` (``reply``, written); ``counted`` as
        the strict path counted it. A steered reply is kept for the client network it
        was decided for (``reply.network``)."""
        if reply.personal:
            return  # one client network's own: never served to another
        subnet = self.clients.subnet(query)
        if reply.steered:
            key: Key = (self.steered.setdefault(query.base, query.base), reply.network)
            tail = subnet.echo
        else:
            key, tail = query.base, subnet.echo_zero
        stored = out  # kept with the name in lower case, as a hit patches it
        if not query.lower:
            stored = out[:QUESTION] + query.key[:-4] + out[query.name_end:]
        if not stored.endswith(tail):
            return  # not the layout a hit rebuilds: never serve it
        entry = self.entries.put(key, Entry(
            self._share(stored[2:len(stored) - len(tail)]),
            self.health().generation if reply.steered else -1,
            self._share(counted), self._share(reply.chosen)))
        self._keep(query, peer, out, entry, subnet)

    def _keep(self, query: Query, peer: IPAddress, out: bytes, entry: Entry,
              subnet: Subnet) -> None:
        """Keep ``out``, the reply to ``query``, whole (``seen``), when it fits any
        buffer and the query has neither COOKIE nor NSID: per bytes when the sender does
        not decide it, else per (sender, bytes)."""
        if len(out) > 512 or query.cookie is not None or query.nsid:
            return
        data = query.data
        kept = (out[2:], entry, query.ecs_value, query.name_end)
        if entry.generation < 0 or subnet.located is not None:
            self._exact.put(data[2:], kept)
        else:  # the sender decides it
            self._by_peer.put((peer, data[2:]), kept)

    @property
    def evictions(self) -> int:
        return self.entries.evictions

    def counters(self) -> dict[str, int]:
        """Answers looked up by question (a whole reply found by its bytes counts as a
        hit too), entries forgotten, entries held."""
        return {"hits": self.hits, "misses": self.misses, "stale": self.stale,
                "evictions": self.entries.evictions, "size": len(self.entries)}

    def caches(self) -> dict[str, dict[str, int]]:
        """This cache and its tables, for /metrics (``cache_events_total``). The whole
        replies' and the answers' hits are counted in ``dns``'s hits, not in their own
        (their ``lookup`` counts nothing)."""
        return {"dns": self.counters(), "dns_replies": self._exact.counters(),
                "dns_replies_by_sender": self._by_peer.counters(),
                "dns_shared": self._shared.counters()}

    def _share(self, value: V) -> V:
        """One copy of ``value`` for every entry that holds an equal one."""
        shared = self._shared.get(value)
        if shared is None:
            shared = self._shared.put(value, value)
        return cast(V, shared)


def _wire(origin: str) -> bytes:
    """``go.example.com.`` in wire form (lower case, as cache keys hold names)."""
    labels = [label.encode() for label in origin.lower().rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def _in_zones(name: bytes, suffixes: set[bytes]) -> bool:
    """Whether the wire-form ``name`` is at or below one of ``suffixes``, label by label."""
    i = 0
    while i < len(name):
        if name[i:] in suffixes:
            return True
        i += name[i] + 1
    return False
