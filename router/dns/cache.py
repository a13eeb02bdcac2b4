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

Memory is bounded: at most ``size`` answers (least recently used go first), and at most
``size`` remembered client addresses, ECS subnets and shared answer bodies (each table
forgotten all at once when full). The steered questions are bounded by the zones
(names x types x shapes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from router.core.geo import Location
from router.core.health import Key as TargetKey
from router.core.health import Snapshot
from router.core.ip import IPAddress
from router.core.stats import Stats
from router.dns import wire
from router.dns.wire import ClientSubnet, Query, Reply

QUESTION = 12  # the question starts right after the header
Base = tuple[bytes, int]  # (case-folded question with TYPE and CLASS, shape bits)
_SCOPE = [bytes((n,)) for n in range(256)]


def echo(value: bytes, scope: int) -> bytes:
    """The OPT RDATA of a reply to a query with the ECS option ``value``, at ``scope``.

    (Our OPT carries no other option, so its RDLENGTH is this option's size.)
    """
    return ((len(value) + 4).to_bytes(2, "big") + b"\x00\x08" + len(value).to_bytes(2, "big")
            + value[:3] + _SCOPE[scope] + value[4:])

DEFAULT_SIZE = 50_000
K = TypeVar("K")
V = TypeVar("V")

Key = Base | tuple[Base, bytes]  # an answer for everyone, or for one client network
BY_PEER = b""  # the network of a client that the sender's address decides


@dataclass(frozen=True, slots=True)
class Client:
    """What a query's ECS option (or its absence) makes of a steered answer."""

    network: bytes  # the client's GeoIP network, ``Location.key`` (BY_PEER: the sender's)
    echo: bytes  # the OPT RDATA of a steered answer: the query's option, the network's scope
    echo_zero: bytes  # ... of any other answer: the option with scope 0


_NO_ECS = Client(BY_PEER, b"", b"")

# Where a client is, and the ECS scope that says so: ``Authority.locate``, the very
# function the strict path steers with, so both agree on the network.
Locate = Callable[[ClientSubnet | None, IPAddress], tuple[Location, int]]


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes  # the reply without its ID and, when the query had ECS, without the echo
    generation: int  # the health generation of a steered answer (-1: any)
    counted: tuple[int, int]  # (qtype, rcode) as ``Stats.dns_queries`` counts it
    chosen: tuple[TargetKey, ...]  # the targets a steered answer chose


class AnswerCache:
    """Encoded answers for one ``Authority``. Counters are plain attributes, for metrics."""

    def __init__(self, locate: Locate, health: Callable[[], Snapshot], server_payload: int,
                 stats: Stats, size: int = DEFAULT_SIZE) -> None:
        self.locate = locate
        self.health = health
        self.server_payload = server_payload
        self.stats = stats
        self.size = size
        self.entries: OrderedDict[Key, Entry] = OrderedDict()
        # Questions whose answers depend on the client, each mapped to the one copy of it
        # that keys use; and one copy of each body, count and choice that entries share
        # (a few answers serve many networks).
        self.steered: dict[Base, Base] = {}
        self._shared: dict[Any, Any] = {}
        self._subnets: dict[bytes, Client] = {}  # checked ECS option values
        self._peers: dict[IPAddress, bytes] = {}
        # Replies to queries seen before, byte for byte after the ID, when nothing else
        # decides them (an ECS subnet, or an answer for everyone) and they fit any
        # buffer: the query's bytes -> (the reply after its ID, its entry). A hit here is
        # one dict lookup and the generation check. Filled when a reply is stored or hit;
        # at most ``size`` (a resolver cycling through 50,000 ECS subnets is answered
        # from here from its second pass on: with a quarter, never).
        self._exact: dict[bytes, tuple[bytes, Entry, bytes, int]] = {}
        # ... and those the sender's address decides (a steered answer without ECS), per
        # (sender, bytes): at most a quarter of ``size``.
        self._by_peer: dict[tuple[IPAddress, bytes], tuple[bytes, Entry, bytes, int]] = {}
        self.hits = self.misses = self.stale = self.evictions = 0

    def seen(self, data: bytes, peer: IPAddress) -> tuple[bytes, Entry, bytes, int] | None:
        """The reply to a query seen before byte for byte (bar its ID; one with neither a
        COOKIE nor an NSID option; from this sender, when the sender decides it), its
        entry (count it with ``hit()``), and what RRL needs of the query (its ECS
        option's value, where its name ends): nothing to read again. Plain values only,
        so the garbage collector has nothing to walk."""
        table: dict[Any, tuple[bytes, Entry, bytes, int]] = self._exact
        key: Any = data[2:]
        found = table.get(key)
        if found is None:
            table, key = self._by_peer, (peer, key)
            found = table.get(key) if table else None
            if found is None:
                return None
        rest, known, ecs, end = found
        if known.generation < 0 or known.generation == self.health().generation:
            return data[:2] + rest, known, ecs, end
        del table[key]  # stale: the keyed lookup says so
        return None

    def answer(self, query: Query, peer: IPAddress, tcp: bool) -> bytes | None:
        """The reply to ``query`` from the cache, or None: take the strict path."""
        client = self._client(query, peer)
        key, tail = self._key(query, self.steered.get(query.base), client, peer)
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry.generation >= 0 and entry.generation != self.health().generation:
            self.stale += 1
            return None
        data, end = query.data, query.name_end
        out = data[:2] + entry.body + tail
        if not query.lower:  # the name as this query spells it
            out = out[:QUESTION] + data[QUESTION:end] + out[end:]
        if len(out) > 512 and len(out) > wire.reply_limit(query.payload, self.server_payload,
                                                            tcp):
            self.misses += 1
            return None  # the strict path truncates it
        self.entries.move_to_end(key)
        self.hit(entry)
        self._keep(query, peer, out, entry, client)
        return out

    def carry(self, old: AnswerCache, origins: frozenset[str]) -> None:
        """Take over ``old``'s answers for names within ``origins``, and what it knows
        of clients (for the same GeoIP database only). Held in the same order (LRU)."""
        if not origins:
            return
        suffixes = {_wire(origin) for origin in origins}
        for key, entry in old.entries.items():
            question = key[0] if isinstance(key[0], bytes) else key[0][0]
            if _in_zones(question[:-4], suffixes):
                self.entries[key] = entry
        self.steered.update((b, b) for b in old.steered if _in_zones(b[0][:-4], suffixes))
        self._subnets.update(old._subnets)
        self._peers.update(old._peers)

    def hit(self, entry: Entry) -> None:
        """A hit, counted as the strict path counts the query."""
        self.hits += 1
        self.stats.dns_queries[entry.counted] += 1
        for chosen in entry.chosen:
            self.stats.dns_chosen[chosen] += 1

    def store(self, query: Query, peer: IPAddress, out: bytes, counted: tuple[int, int],
              reply: Reply) -> None:
        """Keep ``out``, the whole reply to ``query`` (``reply``, written); ``counted`` as
        the strict path counted it."""
        client = self._client(query, peer)
        base = self.steered.setdefault(query.base, query.base) if reply.steered else None
        key, tail = self._key(query, base, client, peer)
        stored = out  # kept with the name in lower case, as a hit patches it
        if not query.lower:
            stored = out[:QUESTION] + query.key[:-4] + out[query.name_end:]
        if not stored.endswith(tail):
            return  # not the layout a hit rebuilds: never serve it
        entry = self.entries[key] = Entry(self._share(stored[2:len(stored) - len(tail)]),
                                          self.health().generation if reply.steered else -1,
                                          self._share(counted), self._share(reply.chosen))
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
            self.evictions += 1
        self._keep(query, peer, out, entry, client)

    def _keep(self, query: Query, peer: IPAddress, out: bytes, entry: Entry,
              client: Client) -> None:
        """Keep ``out``, the reply to ``query``, whole (``seen``), when it fits any
        buffer and the query has neither COOKIE nor NSID: per bytes when the sender does
        not decide it, else per (sender, bytes)."""
        if len(out) > 512 or query.cookie is not None or query.nsid:
            return
        data = query.data
        kept = (out[2:], entry, query.ecs_value, query.name_end)
        if entry.generation < 0 or client.network != BY_PEER:
            _remember(self._exact, data[2:], kept, self.size or 1)
        else:  # the sender decides it
            _remember(self._by_peer, (peer, data[2:]), kept, self.size // 4 or 1)

    def counters(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "stale": self.stale,
                "evictions": self.evictions, "size": len(self.entries)}

    def _key(self, query: Query, steered: Base | None, client: Client,
             peer: IPAddress) -> tuple[Key, bytes]:
        """The key of the answer, and the ECS echo that ends it."""
        if steered is None:
            return query.base, client.echo_zero
        network = client.network
        if network == BY_PEER:
            network = self._peers.get(peer, BY_PEER)
            if network == BY_PEER:
                network = _remember(self._peers, peer, self.locate(None, peer)[0].key, self.size)
        return (steered, network), client.echo

    def _client(self, query: Query, peer: IPAddress) -> Client:
        """Where the client of ``query`` is, by its ECS option (checked by the reader)."""
        if query.ecs < 0 or query.edns is None:
            return _NO_ECS
        value = query.ecs_value
        client = self._subnets.get(value)
        if client is None:
            subnet = query.edns.subnet
            assert subnet is not None
            client = Client(BY_PEER, echo(value, 0), echo(value, 0))  # source 0: by the sender
            if subnet.source > 0:
                location, scope = self.locate(subnet, peer)
                client = Client(location.key, echo(value, scope), client.echo_zero)
            _remember(self._subnets, value, client, self.size)
        return client


    def _share(self, value: V) -> V:
        """One copy of ``value`` for every entry that holds an equal one."""
        shared = self._shared.get(value)
        if shared is None:
            shared = _remember(self._shared, value, value, self.size)
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


def _remember(memo: dict[K, V], key: K, value: V, size: int) -> V:
    """``memo[key] = value``, forgetting everything first when ``memo`` is full."""
    if len(memo) >= size:
        memo.clear()
    memo[key] = value
    return value
