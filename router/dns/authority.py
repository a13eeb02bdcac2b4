"""The authoritative answer to one query: zone lookup, steering, negative answers.

``Authority.handle()`` is the whole DNS path without the socket: bytes in, bytes (or
nothing) out. It asks the answer cache first (``cache.AnswerCache``: encoded answers,
patched per query); a miss takes the strict path, which parses the query
(``wire.read``), decides, writes the reply (``wire.render``) and fills the cache.
Answers are decided for the case-folded name and written with the question as the query
spelled it, every repeated name pointing at it, so the strict path and a cache hit give
the same bytes. Errors are translated here, in one
place: a malformed query gets FORMERR or silence (``wire.QueryError``), and any bug
while answering gets SERVFAIL instead of reaching the event loop. It is also the one
place where queries are counted (by qtype and rcode, in ``router.core.stats``), and
``_steer`` counts the targets each answer chose; a cache hit counts the same, from what
its entry kept (``AnswerCache.answer``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from router.core import audience, values
from router.core.asn import AsnDb
from router.core.audience import Placer, Rules
from router.core.config import Config, Service, Target
from router.core.dnsparams import Class, Option, Rcode, Type
from router.core.geo import Location, Locator
from router.core.health import Snapshot
from router.core.ip import IPAddress
from router.core.memo import Memo, Recall
from router.core.retries import Retries, network_asking
from router.core.scoring import Lineup
from router.core.stats import DROPPED, QTYPES, Stats
from router.core.steering import (
    Want,
    answer_addresses,
    decide,
    decision,
    kept_lineup,
    seen_for,
)
from router.dns import dnssec, wire
from router.dns.cache import DEFAULT_SIZE, AnswerCache
from router.dns.clients import Clients, Located
from router.dns.cookies import Secrets, Verdict, judge, new_secret
from router.dns.dnssec import Signer
from router.dns.records import Record, txt
from router.dns.rrl import Action, Limiter
from router.dns.wire import Query, QueryError, Reply
from router.dns.zone import Name, Node, ZoneData, ZoneTable

log = structlog.get_logger("router.dns")

MAX_CNAME_CHAIN = 8
DECISIONS = 65536  # client networks, and as many places, whose choices are remembered
LINEUPS = 4096  # (service, want, generation, kind of client): line-ups for new places
Chosen = tuple[int, tuple[Target, ...], str]  # an answer's TTL, targets, and why the first
DEFAULT_PAYLOAD = 1232  # the EDNS buffer size we advertise and cap UDP replies at


class Authority:
    """Answers for every zone in ``table``; ``health`` returns the current snapshot.

    ``cache_size`` answers are kept encoded (0: no cache, every query takes the strict
    path). The cache lives with this object; a reload builds a new one, which may take
    over an older one's answers for the zones the reload did not change (``carry``).
    """

    def __init__(self, table: ZoneTable, locator: Locator, health: Callable[[], Snapshot],
                 payload: int = DEFAULT_PAYLOAD, *, stats: Stats | None = None,
                 cache_size: int = DEFAULT_SIZE, nsid: str | None = None,
                 cookies: Secrets | None = None, rrl: Limiter | None = None,
                 clock: Callable[[], float] = time.time, asn_db: AsnDb | None = None,
                 rules: Rules | None = None, decision_sample: float = 0.0,
                 key_states: dict[str, dict[int, str]] | None = None,
                 retries: Retries | None = None) -> None:
        self.rrl = rrl  # response rate limiting over UDP, when on
        self.decision_sample = decision_sample  # steered answers logged (--decision-log-sample)
        self.table = table
        self.cookies = cookies or Secrets(new_secret())
        self.clock = clock  # the server cookies' timestamps
        self.nsid = nsid.encode() if nsid else b""  # this node's name (RFC 5001), or none
        self.chaos = txt(self.nsid) if nsid else ()  # ... as TXT RDATA, for id.server
        self.locator, self.health, self.payload = locator, health, payload
        self.stats = stats if stats is not None else Stats()
        # who each target may serve (the zones' network and AS rules), clients placed so
        self.rules = rules or Rules(Config(tuple(z.zone for z in table.zones)), asn_db)
        self.clients = Clients(Placer(locator, self.rules),
                               cache_size or DEFAULT_SIZE)  # who asked, located
        self.retries = retries  # clients that came back (core.retries): what they avoid
        self.cache = AnswerCache(self.clients, health, payload, self.stats,
                                 cache_size, retries) if cache_size > 0 else None
        # Signed answers carry their signatures' window and their keys: the cache is
        # emptied when a new window begins (once a week), so no reply outlives its RRSIGs'
        # validity, and when a key event comes (a rollover's step).
        self.signed = any(zone.signer is not None for zone in table.zones)
        self.next_roll = -math.inf
        # each zone's keys' states, as last logged (a reload's authority goes on from the
        # one before: a state is logged when it changes, not at every reload)
        self.key_states: dict[str, dict[int, str]] = dict(key_states or {})
        self.keep_time()
        # What steering chose (TTL and targets), per client network or place and health
        # generation: a query that misses the answer cache, or has none, seldom ranks.
        self.decisions: Recall[tuple[object, ...], tuple[object, ...], Chosen] = Recall(
            Memo(DECISIONS), Memo(DECISIONS))
        # the targets lined up per kind of client (country, rules) and health generation:
        # a new place is ranked from one, measuring only to the targets near it
        self.lineups: Memo[tuple[object, ...], Lineup] = Memo(LINEUPS)

    def caches(self) -> dict[str, Mapping[str, int]]:
        """Every bounded table of this authority (for /metrics): the answer cache's,
        the clients', the decisions', the signatures' (summed over signed zones) and
        RRL's buckets."""
        found: dict[str, Mapping[str, int]] = {**self.clients.caches(),
                                               "dns_decisions": self.decisions.networks.counters(),
                                               "dns_places": self.decisions.places.counters(),
                                               "dns_lineups": self.lineups.counters()}
        if self.cache is not None:
            found.update(self.cache.caches())
        signers = [z.signer.cache.counters() for z in self.table.zones if z.signer is not None]
        if signers:
            found["dnssec_signatures"] = {f: sum(c[f] for c in signers) for f in signers[0]}
        if self.rrl is not None:
            found["dns_rrl"] = self.rrl.buckets.counters()
        return found

    def handle(self, data: bytes, peer: IPAddress, tcp: bool = False) -> bytes | None:
        """One packet in, one reply out (None: send nothing). Never raises.

        The packet is read once (``wire.read``), or not at all when the same bytes (bar
        the ID) were answered before and the answer still stands (``AnswerCache.seen``).
        A query with a COOKIE option (RFC 7873) gets its client cookie and our server
        cookie back; a malformed one gets FORMERR, one whose server cookie we did not
        make gets BADCOOKIE over UDP (over TCP the address is proven: it is answered).
        With an NSID set, a query that asks for it (an empty NSID option) is told it."""
        if self.signed and self.clock() >= self.next_roll:  # keep_time(), inlined
            self._roll()
        cache = self.cache
        seen = cache.seen(data, peer) if cache is not None else None
        if seen is not None:
            out, entry, ecs, end = seen
            cache.hit(entry)  # type: ignore[union-attr]
            if self.rrl is None or tcp:
                return out
            return self._limited(data, out, peer, ecs, data[12:end + 4])
        try:
            query = wire.read(data)
        except QueryError as e:
            return self._unreadable(data, e)
        verdict, back = Verdict.NEW, b""
        if query.cookie is not None:
            verdict, back = judge(query.cookie, peer.packed, int(self.clock()), self.cookies)
            self.stats.dns_cookies[verdict.value] += 1
            if verdict is Verdict.MALFORMED or (verdict is Verdict.INVALID and not tcp):
                return self._refuse_cookie(data, verdict, back)
        out = self._handle(query, peer, tcp)
        if back:
            out = self._added(query, out, Option.COOKIE, back, tcp)
        sent = self._limited(data, out, peer, query.ecs_value, query.question) \
            if self.rrl is not None and not tcp and verdict is not Verdict.VALID else out
        if sent is None or not self.nsid or not query.nsid:
            return sent
        return self._added(query, sent, Option.NSID, self.nsid, tcp)

    def _unreadable(self, data: bytes, e: QueryError) -> bytes | None:
        """A packet that is not a query we serve: FORMERR, NOTIMP or REFUSED with what
        could be read of it, or silence (no header, or a response)."""
        if e.rcode is None or not e.header:
            self.stats.dns_queries[(0, DROPPED)] += 1
            return None
        self.stats.dns_queries[(0, e.rcode)] += 1
        return wire.error_reply(data, e.rcode, self.payload)

    def keep_time(self) -> None:
        """Catch up with the present: a new signature window, or a key event, since the
        last query (``handle`` does this first)."""
        if self.signed and self.clock() >= self.next_roll:
            self._roll()

    def _roll(self) -> None:
        """A new signature window has begun (once a week), or a key event has come (a
        key published, activated, retired or removed): the cached answers go, and each
        key whose state changed is logged."""
        now = self.clock()
        started = self.next_roll != -math.inf  # else at construction: nothing cached yet
        self.next_roll = (now // dnssec.WINDOW + 1) * dnssec.WINDOW
        for zone in self.table.zones:
            if zone.signer is not None:
                zone.rekey(now)
                self._log_keys(zone.zone.origin, zone.signer)
                self.next_roll = min(self.next_roll, zone.signer.phase.until)
        if started and self.cache is not None:
            self.cache = AnswerCache(self.clients, self.health, self.payload, self.stats,
                                     self.cache.size)

    def _log_keys(self, origin: str, signer: Signer) -> None:
        was = self.key_states.setdefault(origin, {})
        for key in signer.keys:
            state = dnssec.state(key, signer.phase.since, signer.ttl)
            if was.get(key.tag) != state:
                log.info("dnssec_key_state", zone=origin, key_tag=key.tag, algorithm=key.name,
                         state=state, was=was.get(key.tag), file=str(key.path))
            was[key.tag] = state
        if signer.phase.lapsed:
            log.warning("dnssec_keys_lapsed", zone=origin, problem="no key is both published "
                        "and active: the published ones sign; add a key (dnssec rollover)")
        when, event, coming = dnssec.next_event(signer.keys, signer.phase.since, signer.ttl)
        if coming is not None:
            log.info("dnssec_next_event", zone=origin, key_tag=coming.tag, key_event=event,
                     at=values.stamp(when))

    def _refuse_cookie(self, data: bytes, verdict: Verdict, back: bytes) -> bytes:
        """FORMERR for a malformed COOKIE option; BADCOOKIE, with a good one to retry
        with, for a server cookie we did not make."""
        rcode = Rcode.FORMERR if verdict is Verdict.MALFORMED else Rcode.BADCOOKIE
        self.stats.dns_queries[(0, rcode)] += 1
        out = wire.error_reply(data, rcode, self.payload)
        return wire.add_option(out, Option.COOKIE, back) if back else out

    def _limited(self, data: bytes, out: bytes, peer: IPAddress, ecs: bytes,
                 question: bytes) -> bytes | None:
        """RRL: ``out``, nothing, or (a slip) the same reply empty with TC=1."""
        assert self.rrl is not None
        action = self.rrl.admit(peer, ecs, question, out, self.clock())
        if action is Action.SEND:
            return out
        self.stats.dns_rrl[action.value] += 1
        if action is Action.DROP:
            return None
        code = out[3] & 0xF  # ours: always one of Rcode's (BADCOOKIE never gets here)
        rcode = Rcode(code) if code in Rcode._value2member_map_ else Rcode.SERVFAIL
        return wire.error_reply(data, rcode, self.payload, tc=True)

    def _added(self, query: Query, out: bytes, code: int, value: bytes, tcp: bool) -> bytes:
        """``out`` with one more EDNS option, if it still fits the client's buffer."""
        told = wire.add_option(out, code, value)
        fits = len(told) <= wire.reply_limit(query.payload, self.payload, tcp)
        return told if fits else out

    def _handle(self, query: Query, peer: IPAddress, tcp: bool) -> bytes:
        located: Located | None = None  # where the client is, once something asked
        if self.cache is not None:
            try:
                hit = self.cache.answer(query, peer, tcp)
            except Exception:  # a bug in the fast path: the strict path still answers
                log.exception("dns_cache_failed")
                self.stats.errors["dns"] += 1
                hit = None
            if isinstance(hit, bytes):
                return hit
            located = hit
        counted = self.stats.dns_queries
        qtype = query.qtype if query.qtype in QTYPES else 0
        try:
            out, reply = self._answer(query, qtype, Asker(peer, located), tcp)
        except Exception:
            log.exception("dns_answer_failed", qname=_text(query.labels), qtype=query.qtype)
            self.stats.errors["dns"] += 1
            counted[(qtype, Rcode.SERVFAIL)] += 1
            return wire.error_reply(query.data, Rcode.SERVFAIL, self.payload)
        counted[(qtype, reply.rcode)] += 1
        return out

    def _answer(self, query: Query, qtype: int, asker: Asker, tcp: bool
                ) -> tuple[bytes, Reply]:
        """The strict path: decide (for the case-folded name), write (the question as the
        query spelled it), keep a whole reply in the cache."""
        reply = self.respond(query, asker)
        limit = wire.reply_limit(query.payload, self.payload, tcp)
        out, whole = wire.render(query, reply, self.payload, limit)
        if whole and self.cache is not None:
            self.cache.store(query, asker.peer, out, (qtype, int(reply.rcode)), reply)
        return out, reply

    def respond(self, q: Query, asker: Asker) -> Reply:
        if q.edns is not None and q.edns.version > 0:
            return Reply(Rcode.BADVERS, authoritative=False)  # RFC 6891 6.1.3
        if q.qclass == Class.CH:
            return self._chaos(q)
        if q.qclass not in (Class.IN, Class.ANY) or q.qtype in (Type.AXFR, Type.IXFR):
            return Reply(Rcode.REFUSED, authoritative=False)
        if q.qtype in (Type.OPT, Type.NXNAME):  # meta-types: never asked for (RFC 9824)
            return Reply(Rcode.FORMERR, authoritative=False)
        name = q.name
        zone = self.table.find(name)
        if zone is None:
            return Reply(Rcode.REFUSED, authoritative=False)  # not ours: never recursive
        reply = Reply()
        self._resolve(zone, q, name, name, asker, reply, MAX_CNAME_CHAIN)
        if zone.signer is not None and q.edns is not None and q.edns.do:
            self._sign(zone, zone.signer, q, reply)
        return reply

    def _sign(self, zone: ZoneData, signer: Signer, q: Query, reply: Reply) -> None:
        """A DO query to a signed zone: an RRSIG after every RRset we are authoritative
        for, and a compact denial (RFC 9824) where there is nothing: NOERROR (NXDOMAIN
        only if the query set CO) with one NSEC at the name that is not there."""
        now = self.clock()
        answer, authority = reply.answer, reply.authority
        reply.answer = dnssec.signed(answer, signer, now)
        if authority and authority[0].rtype == Type.SOA:  # a denial, maybe after a CNAME
            missing = answer[-1].target if answer and answer[-1].rtype == Type.CNAME \
                else q.name
            types = {Type.NXNAME} if reply.rcode == Rcode.NXDOMAIN else zone.types(missing)
            denial = dnssec.nsec(missing, types, zone.negative_soa.ttl)
            reply.authority = dnssec.signed([*authority, denial], signer, now)
            if reply.rcode == Rcode.NXDOMAIN and not (q.edns and q.edns.co):
                reply.rcode = Rcode.NOERROR
        elif authority and not answer and authority[0].rtype == Type.NS:  # a referral
            cut = authority[0].owner  # unsigned (the child's), with proof of no DS
            reply.authority = [*authority, *dnssec.signed(
                [dnssec.nsec(cut, {Type.NS}, zone.negative_soa.ttl)], signer, now)]
        elif reply.authoritative:
            reply.authority = dnssec.signed(authority, signer, now)
            reply.additional = dnssec.signed(reply.additional, signer, now)

    def _chaos(self, q: Query) -> Reply:
        """TXT id.server. and hostname.bind. in class CH: this node's NSID, when set."""
        if not self.nsid or q.name not in CHAOS_NAMES:
            return Reply(Rcode.REFUSED, authoritative=False)
        if q.qtype not in (Type.TXT, Type.ANY):
            return Reply()
        return Reply(answer=[Record(q.name, Type.TXT, Class.CH, 0, self.chaos)])

    def _resolve(self, zone: ZoneData, q: Query, name: Name, owner: tuple[bytes, ...],
                 asker: Asker, reply: Reply, hops: int) -> None:
        cut = _cut_above(zone, name, q.qtype)
        if cut is not None:
            self._refer(zone, cut, reply)
            return
        node = zone.nodes.get(name)
        if node is None:
            if name not in zone.parents:
                reply.rcode = Rcode.NXDOMAIN
            reply.authority = [zone.negative_soa]
            return
        cname = node.rrsets.get(Type.CNAME)
        if cname and q.qtype not in (Type.CNAME, Type.ANY):
            reply.answer.append(cname[0].renamed(owner))
            self._chase(cname[0].target, q, asker, reply, hops)
            return
        answer = self._records(node, q, owner, asker, reply)
        if not answer:
            reply.authority = [zone.negative_soa]  # NODATA
            return
        reply.answer.extend(answer)
        if q.qtype == Type.NS and name == zone.origin:
            reply.additional.extend(self._glue(answer))

    def _chase(self, target: Name, q: Query, asker: Asker, reply: Reply, hops: int) -> None:
        """Follow a CNAME inside our own zones; elsewhere the resolver follows it."""
        zone = self.table.find(target)
        if zone is None or hops <= 0:
            return
        self._resolve(zone, q, target, target, asker, reply, hops - 1)

    def _records(self, node: Node, q: Query, owner: tuple[bytes, ...], asker: Asker,
                 reply: Reply) -> list[Record]:
        if node.service is not None and q.qtype in (Type.A, Type.AAAA, Type.ANY):
            steered = self._steer(node.service, q, owner, asker, reply,
                                  Want.IPV6 if q.qtype == Type.AAAA else Want.IPV4)
            if steered or q.qtype != Type.ANY:
                return steered
        if q.qtype == Type.ANY:  # RFC 8482: one RRset is enough
            first = next(iter(node.rrsets.values()), [])
            return [rr.renamed(owner) for rr in first]
        return [rr.renamed(owner) for rr in node.rrsets.get(q.qtype, [])]

    def _steer(self, service: Service, q: Query, owner: tuple[bytes, ...], asker: Asker,
               reply: Reply, want: Want) -> list[Record]:
        if asker.located is None:  # the cache did not know the question as steered
            asker.located = self.clients.locate(q, asker.peer)
        client, scope = asker.located
        avoid, network = self._avoided(service, q, asker.peer)
        if avoid:  # this client network's own answer (its scope), never kept
            ttl, chosen, why = self._choose_avoiding(service, client, want, avoid)
            scope, reply.personal = max(scope, network[-1]), True
        else:
            ttl, chosen, why = self._choose(service, client, want)
        if self.decision_sample and random.random() < self.decision_sample:
            log.info("dns_decision", service=service.name, qtype=want.value,
                     client=str(client.network), country=client.country,
                     chosen=[t.id for t in chosen], reason=why, ttl=ttl)
        reply.scope = scope
        reply.steered = True
        reply.network = client.key
        reply.chosen = tuple((service.name, target.id) for target in chosen)
        for key in reply.chosen:
            self.stats.dns_chosen[key] += 1
        self.stats.countries[client.country or "--"] += 1
        version, rtype = (6, Type.AAAA) if want is Want.IPV6 else (4, Type.A)
        snapshot = seen_for(self.health(), service, client)
        return [Record(owner, rtype, Class.IN, ttl, (address.packed,)) for target in chosen
                for address in answer_addresses(snapshot, service, target, version)]

    def _choose(self, service: Service, client: Location, want: Want) -> Chosen:
        """The answer's TTL and targets: remembered per client network, or per place when
        the ranking did not hash on the network (``core.memo.Recall``)."""
        snapshot = self.health()
        base = (service.name, want, snapshot.generation)
        key, place = (*base, client.key), (*base, client.point, client.country, client.effect)
        found = self.decisions.get(key, place)
        if found is None:
            lineup = kept_lineup(self.lineups, base, snapshot, service, client, self.rules,
                                 want)
            made = decision(lineup, client, head=service.answers)
            why = made.ranked[0].reason if made.ranked else "no target can serve"
            found = self.decisions.put(key, place, made.hashed,
                                       (made.ttl, tuple(made.chosen()), why))
        return found

    def _avoided(self, service: Service, q: Query, peer: IPAddress
                 ) -> tuple[frozenset[str], bytes]:
        """The mirrors of ``service`` the query's client network (its ECS subnet, else its
        sender) avoids now, as the HTTP face's clients that came back taught it, and that
        network."""
        retries = self.retries
        if retries is None or not retries.live or service.retries is None:
            return frozenset(), b""
        network = network_asking(q.ecs_value, peer)
        if network is None:
            return frozenset(), b""
        return retries.avoided(service.name, network, time.monotonic()), network

    def _choose_avoiding(self, service: Service, client: Location, want: Want,
                         avoid: frozenset[str]) -> Chosen:
        made = decide(self.health(), service, client, want, avoided=avoid,
                      scope=audience.scope(self.rules, service, client))
        why = made.ranked[0].reason if made.ranked else "no target can serve"
        return made.ttl, tuple(made.chosen()), why

    def _refer(self, zone: ZoneData, cut: Name, reply: Reply) -> None:
        ns = zone.nodes[cut].rrsets[Type.NS]
        reply.authoritative = bool(reply.answer)  # a referral is not an authoritative answer
        reply.authority = list(ns)
        reply.additional = self._glue(ns)

    def _glue(self, ns_records: list[Record]) -> list[Record]:
        return [rr for ns in ns_records for rr in self.table.addresses(ns.target)]


def _cut_above(zone: ZoneData, name: Name, qtype: int) -> Name | None:
    """The delegation point at or above ``name`` (below the apex), if there is one."""
    if not zone.cuts:
        return None
    for i in range(len(name) - len(zone.origin) - 1, -1, -1):
        ancestor = name[i:]
        if ancestor in zone.cuts and not (i == 0 and qtype == Type.DS):
            return ancestor
    return None


def _text(labels: tuple[bytes, ...]) -> str:
    return b".".join(labels).decode("ascii", "backslashreplace") + "."


CHAOS_NAMES = {(b"id", b"server"), (b"hostname", b"bind")}


@dataclass(slots=True)
class Asker:
    """Who a query on the strict path is from: the sender, and where the client is once
    known (from the cache's miss, or located when first needed: once)."""

    peer: IPAddress
    located: Located | None = None
