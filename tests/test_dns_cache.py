"""The DNS fast path: cached answers must be the strict path's answers, byte for byte.

The differential test runs one deterministic corpus of varied queries through two
``Authority`` objects over the same zones, GeoIP database and health board: one with the
answer cache, one without (every query on the strict path: ``wire.read``, steering,
dnslib). Health changes part-way, so cached steered answers go stale. Every reply must be
identical (both keep the query's ID, so the whole packet is compared).
"""

from __future__ import annotations

import ipaddress
import random
import signal
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rcode
import pytest
import structlog.testing

from router.core.geo import Locator
from router.core.health import Board, Status
from router.core.zonefile import load
from router.dns.authority import Authority
from router.dns.cookies import Secrets
from router.dns.zone import ZoneTable
from tests.harness import RouterProcess, five_city_zone
from tests.test_dns import ZONE, addresses, ask, ecs_of

CITIES = {"bj": (39.90, 116.40, "CN"), "tyo": (35.68, 139.69, "JP"),
          "fra": (50.11, 8.68, "DE"), "iad": (39.04, -77.49, "US"),
          "gru": (-23.55, -46.63, "BR")}


def _targets(service: str, extra: str = "") -> str:
    return "".join(f'''
[[services.{service}.targets]]
id = "{tid}"
location = {{ lat = {lat}, lon = {lon} }}
country = "{cc}"
addresses = ["192.0.2.{n}", "2001:db8::{n}"]
{extra}
''' for n, (tid, (lat, lon, cc)) in enumerate(CITIES.items(), 1))


@dataclass(frozen=True)
class Url:
    """Where a mirror would be: the in-process tests never probe, so nothing listens."""

    base: str


EXTRA_RECORDS = """
[[zone.records]]
name = "@"
type = "CAA"
data = '0 issue "letsencrypt.org"'

[[zone.records]]
name = "chain"
type = "CNAME"
data = "alias.test.example.com"

[[zone.records]]
name = "away"
type = "CNAME"
data = "www.other.example.net"

[[zone.records]]
name = "ptr"
type = "PTR"
data = "host.example.net"
"""

# The black-box tests' zone (static records, CNAMEs, a delegation, big TXT records, the
# steered apex and www), plus a service that spreads load over two answers.
MAIN_ZONE = five_city_zone({tid: Url(f"http://127.0.0.1:9/{tid}") for tid in CITIES},
                           interval="5s", extra_records=EXTRA_RECORDS, extra_service=f'''
[services.spread]
dns_names = ["spread"]
ttl = 20
answers = 2
spread = 3.0
spread_km = 2000
cross_border_km = 500
on_all_down = "empty"
{_targets("spread")}
''')

OTHER_ZONE = f'''
[zone]
origin = "other.example.net"
nameservers = ["ns1.other.example.net"]
hostmaster = "hostmaster.other.example.net"
serial = 7

[[zone.records]]
name = "ns1"
type = "AAAA"
data = "2001:db8:53::1"

[services.picky]
dns_names = ["www"]
ttl = 45
on_all_down = "fallback"
fallback = ["fra"]
{_targets("picky", 'only_countries = ["JP", "CN", "DE", "US"]')}
'''

NAMES = ["test.example.com", "www.test.example.com", "alias.test.example.com",
         "chain.test.example.com", "away.test.example.com", "spread.test.example.com",
         "www.other.example.net", "ns1.test.example.com", "medium.test.example.com",
         "big.test.example.com", "medium.test.example.com", "big.test.example.com",
         "nope.test.example.com", "deep.test.example.com",
         "_sip._tcp.deep.test.example.com", "host.sub.test.example.com",
         "sub.test.example.com", "ptr.test.example.com", "other.example.net",
         "ns1.other.example.net", "gone.other.example.net", "www.example.org", "",
         "x" * 63 + ".test.example.com", "a.b.c.d.e.f.test.example.com"]
STEERED = {"test.example.com", "www.test.example.com", "alias.test.example.com",
           "chain.test.example.com", "away.test.example.com", "spread.test.example.com",
           "www.other.example.net"}
TYPES = [1, 28, 255, 16, 15, 6, 2, 5, 33, 257, 12, 43, 41, 252, 251, 65, 97, 99, 0, 65535]
PAYLOADS = [0, 100, 512, 513, 700, 1232, 1400, 4096, 65535]
SUBNETS4 = ["1.0.16.0", "5.9.0.0", "202.106.0.0", "8.8.8.0", "200.160.0.0", "41.0.0.0",
            "203.2.218.0", "81.2.69.0", "1.0.0.0", "10.1.2.0", "192.0.2.0", "0.0.0.0"]
SUBNETS6 = ["2001:200::", "2a00:1450::", "2001:db8::", "::"]
PEERS = [ipaddress.ip_address(a) for a in (
    "127.0.0.1", "8.8.8.8", "1.0.16.1", "202.106.0.20", "5.9.0.1", "200.160.0.1",
    "2001:200::1", "::ffff:5.9.0.1", "192.0.2.1", "::1")]


@dataclass
class Case:
    data: bytes
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address
    tcp: bool
    kind: set[str] = field(default_factory=set)


def _name(text: str, rnd: random.Random, kind: set[str]) -> bytes:
    if rnd.random() < 0.5:
        text = "".join(c.upper() if rnd.random() < 0.5 else c for c in text)
        kind.add("mixed case")
    labels = [p.encode() for p in text.split(".") if p]
    if rnd.random() < 0.05:  # a label of any octets: zero, dot, upper case, 8-bit
        labels.insert(0, bytes(rnd.choice(b"\x00.A\xc1\xffz-") for _ in range(rnd.randrange(1, 9))))
        kind.add("binary label")
    return b"".join(bytes([len(p)]) + p for p in labels) + b"\x00"


def _ecs(rnd: random.Random, kind: set[str]) -> bytes:
    if rnd.random() < 0.8:
        family, source = 1, rnd.choice([0, 8, 12, 16, 20, 22, 24, 24, 24, 25, 32])
        net = ipaddress.ip_network((rnd.choice(SUBNETS4), source), strict=False)
    else:
        family, source = 2, rnd.choice([0, 32, 41, 48, 56, 64, 128])
        net = ipaddress.ip_network((rnd.choice(SUBNETS6), source), strict=False)
    raw = net.network_address.packed[:(source + 7) // 8]
    scope = rnd.choice([0] * 9 + [rnd.randrange(256)])
    kind.add(f"ecs/{source}" if source == 0 else "ecs")
    return struct.pack("!HBB", family, source, scope) + raw


def _opt(rnd: random.Random, kind: set[str]) -> bytes:
    options = []
    if rnd.random() < 0.65:
        options.append((8, _ecs(rnd, kind)))
    if rnd.random() < 0.25:
        options.append((10, rnd.randbytes(8)))  # a client cookie: ignored
        kind.add("cookie")
    if rnd.random() < 0.05:
        options.append((65001, rnd.randbytes(rnd.randrange(5))))
    if rnd.random() < 0.05:  # option 0x0108: not ECS (8), whatever it carries
        options.append((0x0108, JP))
        kind.add("option 264")
    rnd.shuffle(options)
    rdata = b"".join(struct.pack("!HH", code, len(v)) + v for code, v in options)
    version = rnd.choice([0] * 18 + [1, 255])
    flags = (0x8000 if rnd.random() < 0.3 else 0) | (rnd.randrange(2) if rnd.random() < 0.1 else 0)
    ttl = (rnd.randrange(256) if rnd.random() < 0.05 else 0) << 24 | version << 16 | flags
    kind.add("edns" if version == 0 else "badvers")
    return b"\x00" + struct.pack("!HHIH", 41, rnd.choice(PAYLOADS), ttl, len(rdata)) + rdata


def _query(rnd: random.Random, kind: set[str], edns: float = 0.7) -> bytes:
    name = rnd.choice(sorted(STEERED) if rnd.random() < 0.4 else NAMES)
    kind.add("steered name" if name in STEERED else "other name")
    qtype = rnd.choice(TYPES[:5] * 4 + TYPES)
    qclass = rnd.choice([1] * 12 + [3, 255, 254, 4])
    flags = rnd.choice([0x0100, 0x0100, 0x0000, 0x0110, 0x0020, 0x0300, 0x0040])
    opt = _opt(rnd, kind) if rnd.random() < edns else b""
    if name in STEERED and "ecs" in kind:
        kind.add("steered, by ECS")
    header = struct.pack("!HHHHHH", rnd.randrange(65536), flags, 1, 0, 0, 1 if opt else 0)
    return header + _name(name, rnd, kind) + struct.pack("!HH", qtype, qclass) + opt


def _question_end(data: bytes) -> int:
    i = 12
    while data[i]:
        i += data[i] + 1
    return i + 5


def _without_opt(d: bytes) -> bytes:
    return d[:10] + b"\x00\x00" + d[12:_question_end(d)]


def _with_opt(d: bytes, options: list[tuple[int, bytes]], owner: bytes = b"\x00",
              slack: int = 0) -> bytes:
    """``d`` with its OPT record replaced (RDLENGTH off by ``slack`` when asked)."""
    rdata = b"".join(struct.pack("!HH", code, len(v)) + v for code, v in options)
    return _with_rdata(d, rdata, owner, slack)


def _with_rdata(d: bytes, rdata: bytes, owner: bytes = b"\x00", slack: int = 0) -> bytes:
    opt = owner + struct.pack("!HHIH", 41, 1232, 0, len(rdata) + slack) + rdata
    return _without_opt(d)[:10] + b"\x00\x01" + _without_opt(d)[12:] + opt


def _flip(d: bytes, r: random.Random) -> bytes:
    i = r.randrange(len(d))
    return d[:i] + bytes([r.randrange(256)]) + d[i + 1:]


JP = b"\x00\x01\x18\x00\x01\x00\x10"  # ECS 1.0.16.0/24
MUTATIONS = {  # each turns a well-formed query into one the strict parser refuses
    "truncated": lambda d, r: d[:r.randrange(len(d))],
    "byte flipped": _flip,
    "trailing junk": lambda d, r: d + r.randbytes(r.randrange(1, 9)),
    "QR set": lambda d, r: d[:2] + bytes([d[2] | 0x80]) + d[3:],
    "opcode 4": lambda d, r: d[:2] + bytes([(d[2] & 0x87) | 0x20]) + d[3:],
    "two questions": lambda d, r: d[:4] + b"\x00\x02" + d[6:],
    "no question": lambda d, r: d[:4] + b"\x00\x00" + d[6:],
    "AR says 2": lambda d, r: d[:10] + b"\x00\x02" + d[12:],
    "pointer in question": lambda d, r: d[:12] + b"\xc0\x0c" + d[12:],
    "label type 0x40": lambda d, r: d[:12] + b"\x41" + d[13:],
    "second OPT": lambda d, r: (lambda o: o[:10] + b"\x00\x02" + o[12:] + o[_question_end(o):])(
        _with_opt(d, [])),
    "OPT owner not root": lambda d, r: _with_opt(d, [(8, JP)], owner=b"\x02"),
    "OPT RDLENGTH too long": lambda d, r: _with_opt(d, [(8, JP)], slack=4),
    "OPT RDLENGTH too short": lambda d, r: _with_opt(d, [(8, JP)], slack=-4),
    "junk after OPT": lambda d, r: _with_opt(d, [(8, JP)]) + b"\xff\x01\x00\x00",
    "ECS twice": lambda d, r: _with_opt(d, [(8, JP), (8, JP)]),
    "ECS bits beyond prefix": lambda d, r: _with_opt(d, [(8, b"\x00\x01\x0c\x00\x01\x0f")]),
    "ECS family 7": lambda d, r: _with_opt(d, [(8, b"\x00\x07\x08\x00\x01")]),
    "ECS address too long": lambda d, r: _with_opt(d, [(8, JP + b"\x00")]),
    "ECS too short": lambda d, r: _with_opt(d, [(8, b"\x00")]),
    "option overrun": lambda d, r: _with_opt(d, [(8, JP)])[:-3],
    "option past RDATA": lambda d, r: _with_rdata(d, b"\x00\x08\x00\x07" + JP
                                                  + b"\x00\x0a\x00\x08" + b"\x01" * 4),
    "option header cut": lambda d, r: _with_rdata(d, b"\x00\x08\x00\x07" + JP + b"\x00\x0a"),
    "long name": lambda d, r: d[:12] + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
}


def _recased(data: bytes, rnd: random.Random) -> bytes:
    """The same query with a new ID and the name's letters in a new case (0x20)."""
    out = bytearray(data)
    out[0:2] = rnd.randbytes(2)
    i = 12
    while i < len(out) and out[i] and out[i] < 64:
        for j in range(i + 1, min(i + 1 + out[i], len(out))):
            if chr(out[j]).isalpha() and rnd.random() < 0.5:
                out[j] ^= 0x20
        i += out[i] + 1
    return bytes(out)


def corpus(size: int, seed: int = 20261121) -> Iterator[Case]:
    """``size`` queries: fresh ones; earlier ones sent again with a new ID and a new case,
    by another client or over TCP; and earlier ones broken (so the cache knows them)."""
    rnd = random.Random(seed)
    sent: list[Case] = []
    for _ in range(size):
        roll = rnd.random()
        if sent and roll < 0.35:
            old = rnd.choice(sent[-100:] if rnd.random() < 0.7 else sent)
            tcp = not old.tcp if rnd.random() < 0.5 else old.tcp  # TCP fills, UDP hits
            case = Case(_recased(old.data, rnd), rnd.choice([old.peer, *PEERS]), tcp,
                        old.kind - {"tcp"} | {"re-sent"})
        elif sent and roll < 0.5:
            old = rnd.choice([c for c in sent[-50:] if "malformed" not in c.kind] or sent)
            name, mutate = rnd.choice(list(MUTATIONS.items()))
            case = Case(mutate(old.data, rnd), old.peer, rnd.random() < 0.2,
                        {"malformed", name})
        else:
            kind: set[str] = set()
            case = Case(_query(rnd, kind), rnd.choice(PEERS), rnd.random() < 0.2, kind)
        if case.tcp:
            case.kind.add("tcp")
        sent.append(case)
        yield case


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("zones")
    (folder / "test.example.com.toml").write_text(MAIN_ZONE)
    (folder / "other.example.net.toml").write_text(OTHER_ZONE)
    return folder


@pytest.fixture(scope="module")
def locator() -> Iterator[Locator]:
    loc = Locator()
    yield loc
    loc.close()


def _pair(zones: Path, locator: Locator, size: int) -> tuple[Authority, Authority, Board]:
    config = load(zones)
    board = Board()
    keys = [(s.name, t.id) for s in config.services for t in s.targets]
    board.assume(keys, Status.UP, 0.0)
    shared = Secrets(bytes(range(16)))  # cookies: one secret, as workers and nodes share
    cached = Authority(ZoneTable(config), locator, lambda: board.snapshot, cache_size=size,
                       cookies=shared, clock=lambda: 1_800_000_000)
    strict = Authority(ZoneTable(config), locator, lambda: board.snapshot, cache_size=0,
                       cookies=shared, clock=lambda: 1_800_000_000)
    return cached, strict, board


def _flip_health(board: Board, rnd: random.Random) -> None:
    keys = sorted(board.snapshot.health)
    down = rnd.sample(keys, rnd.randrange(len(keys) // 2))
    board.assume(keys, Status.UP, 0.0)
    if down:
        board.assume(down, Status.DOWN, 0.0)
    if rnd.random() < 0.2:  # sometimes every target of one service: all-down answers
        service = rnd.choice(["downloads", "spread", "picky"])
        board.assume([k for k in keys if k[0] == service], Status.DOWN, 0.0)


def _differ(cached: Authority, strict: Authority, case: Case) -> tuple[bool, bytes | None]:
    """Ask both; return (answered from the cache, the reply), failing on any difference."""
    assert cached.cache is not None
    hits = cached.cache.hits
    fast = cached.handle(case.data, case.peer, case.tcp)
    slow = strict.handle(case.data, case.peer, case.tcp)
    assert fast == slow, (f"{sorted(case.kind)} peer={case.peer} tcp={case.tcp}\n"
                          f"query {case.data.hex()}\nfast  {fast and fast.hex()}\n"
                          f"slow  {slow and slow.hex()}")
    return cached.cache.hits > hits, fast


def _ask_both(cached: Authority, strict: Authority, board: Board, rnd: random.Random, i: int,
              case: Case) -> tuple[bool, bytes | None]:
    if i % 500 == 499:
        _flip_health(board, rnd)
    return _differ(cached, strict, case)


def test_cached_answers_are_the_strict_paths_answers(zones, locator):
    cached, strict, board = _pair(zones, locator, size=100_000)
    rnd = random.Random(7)
    served, seen, rcodes = Counter(), Counter(), Counter()
    cases = list(corpus(4000))
    with structlog.testing.capture_logs() as logs:
        replies = [_ask_both(cached, strict, board, rnd, i, case) for i, case in enumerate(cases)]
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs[:3]
    for case, (hit, reply) in zip(cases, replies, strict=True):
        seen.update(case.kind)
        if hit:
            served.update(case.kind)
            echoed = ecs_of(dns.message.from_wire(reply))
            served["scoped ECS echo"] += echoed is not None and echoed.scopelen > 0
        if reply is None:
            rcodes["silence"] += 1
        else:
            rcodes[reply[3] & 0xF] += 1
            rcodes["TC"] += bool(reply[2] & 0x02)
    stats = cached.cache.counters()
    # Hits are counted as the strict path counts (queries by qtype and rcode, targets).
    assert cached.stats.dns_queries == strict.stats.dns_queries
    assert cached.stats.dns_chosen == strict.stats.dns_chosen
    assert sum(strict.stats.dns_chosen.values()) > 300
    # The corpus is as varied as promised ...
    assert len(cases) >= 2000
    for kind in ("mixed case", "re-sent", "malformed", "steered name", "other name", "ecs",
                 "ecs/0", "cookie", "edns", "badvers", "tcp", "truncated", "ECS twice",
                 "binary label"):
        assert seen[kind] >= 10, (kind, seen)
    for rcode in (0, 1, 3, 4, 5, "silence", "TC"):
        assert rcodes[rcode] >= 5, (rcode, rcodes)
    # ... and the cache really answered, in every shape that it should.
    assert stats["hits"] >= len(cases) // 4, stats
    assert stats["stale"] > 0, stats
    for kind in ("mixed case", "steered name", "steered, by ECS", "scoped ECS echo",
                 "other name", "ecs", "ecs/0", "edns", "tcp", "cookie", "option 264"):
        assert served[kind] >= 5, (kind, served)
    assert served["scoped ECS echo"] >= 20, served


def test_queries_sent_again_byte_for_byte_get_the_strict_paths_answers(zones, locator):
    """The same bytes (new ID only) from other senders, over rounds of health changes:
    the cache's table of exact queries must never answer for the wrong client or state."""
    cached, strict, board = _pair(zones, locator, size=400)
    assert cached.cache is not None
    rnd = random.Random(5)
    cases = [c for c in corpus(300, seed=11) if "malformed" not in c.kind]
    exact = 0
    for _ in range(4):
        for case in cases:
            for peer in rnd.sample(PEERS, 4):
                _differ(cached, strict, Case(rnd.randbytes(2) + case.data[2:], peer, case.tcp,
                                             case.kind))
            exact = max(exact, len(cached.cache._exact))
        _flip_health(board, rnd)
    assert exact > 20  # the table was used ...
    assert len(cached.cache._exact) <= 400  # ... and stays within the size
    assert len(cached.cache._by_peer) <= 100  # (per sender: within a quarter)


def test_a_small_cache_stays_small_and_right(zones, locator):
    cached, strict, _board = _pair(zones, locator, size=50)
    rnd = random.Random(3)
    for i in range(600):  # 600 distinct client subnets, each asked twice
        subnet = ipaddress.IPv4Address(rnd.randrange(1 << 24, 224 << 24) & ~0xFF)
        query = dns.message.make_query("www.test.example.com", "A", use_edns=0, id=i,
                                       options=[dns.edns.ECSOption(str(subnet), 24)])
        for _ in range(2):
            _differ(cached, strict, Case(query.to_wire(), PEERS[0], False))
    assert cached.cache is not None
    assert len(cached.cache.entries) <= 50
    assert len(cached.clients.subnets) <= 50 and len(cached.cache._shared) <= 50
    assert len(cached.cache._exact) <= 50
    assert cached.cache.evictions > 0 and cached.cache.hits >= 500


def test_plain_answers_are_not_kept_per_client(zones, locator):
    cached, _strict, _board = _pair(zones, locator, size=1000)
    for peer in PEERS:
        for name in ("ns1.test.example.com", "nope.test.example.com", "test.example.com"):
            cached.handle(dns.message.make_query(name, "A").to_wire(), peer)
    assert cached.cache is not None
    keys = list(cached.cache.entries)
    plain = [k for k in keys if isinstance(k[0], bytes)]
    assert len(plain) == 2  # one each for the static and the negative answer, whoever asked
    per_network = [k for k in keys if not isinstance(k[0], bytes)]
    assert 3 <= len(per_network) <= len(PEERS)  # the steered name: one per client network


# ------------------------------------------------------------------ over the wire


@pytest.fixture
def lone_router(tmp_path, city_mirrors) -> Iterator[RouterProcess]:
    """A router of its own, so that its cache counters (logged at exit) are this test's."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "test.example.com.toml").write_text(five_city_zone(city_mirrors, interval="5s"))
    router = RouterProcess(zones)
    yield router
    router.stop()


def test_0x20_queries_are_answered_from_the_cache_in_their_own_case(lone_router):
    rnd = random.Random(5)
    for _ in range(20):
        name = "".join(c.upper() if rnd.random() < 0.5 else c for c in "www." + ZONE)
        msg = ask(lone_router, name, "A", ecs=("1.0.16.0", 24))
        assert str(msg.question[0].name) == name and str(msg.answer[0].name) == name
        assert addresses(msg) == ["192.0.2.2"]
        assert (ecs_of(msg).address, ecs_of(msg).srclen, ecs_of(msg).scopelen) == (
            "1.0.16.0", 24, 20)
        nx = ask(lone_router, "NoPe." + name, "A")
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert str(nx.question[0].name) == "NoPe." + name
    assert lone_router.stop() == 0
    stats = lone_router.wait_for("dns_cache")
    assert stats["misses"] == 2 and stats["hits"] == 38


def test_a_reload_drops_cached_answers(tmp_path, city_mirrors):
    zones = tmp_path / "zones"
    zones.mkdir()
    text = five_city_zone(city_mirrors, interval="5s")
    (zones / "test.example.com.toml").write_text(text)
    router = RouterProcess(zones)
    try:
        for _ in range(3):
            assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.2"]
            assert addresses(ask(router, "ns1." + ZONE, "A")) == ["198.51.100.53"]
        (zones / "test.example.com.toml").write_text(
            text.replace('"192.0.2.2"', '"192.0.2.22"').replace("198.51.100.53", "198.51.100.54"))
        router.signal(signal.SIGHUP)
        router.wait_for("reloaded")
        assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.22"]
        assert addresses(ask(router, "ns1." + ZONE, "A")) == ["198.51.100.54"]
    finally:
        assert router.stop() == 0


OTHER = (b'[zone]\norigin = "other.example."\nnameservers = ["ns1.other.example."]\n'
         b'hostmaster = "hostmaster.other.example."\n'
         b'[[zone.records]]\nname = "ns1"\ntype = "A"\ndata = "198.51.100.60"\n'
         b'[[zone.records]]\nname = "www"\ntype = "A"\ndata = "198.51.100.61"\n')


def test_a_reload_keeps_the_answers_it_cannot_change(tmp_path, city_mirrors):
    from tests.test_observability import scrape, value

    zones = tmp_path / "zones"
    zones.mkdir()
    text = five_city_zone(city_mirrors, interval="5s")
    (zones / "test.example.com.toml").write_text(text)
    (zones / "other.example.toml").write_bytes(OTHER)
    router = RouterProcess(zones)

    def held() -> float:
        return value(scrape(router), "mirror_router_cache_entries", cache="dns")

    try:
        for _ in range(2):
            assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.2"]
            assert addresses(ask(router, "www.other.example", "A")) == ["198.51.100.61"]
        assert held() == 2
        router.signal(signal.SIGHUP)  # nothing changed: every answer stays
        router.wait_for("reloaded")
        assert held() == 2
        (zones / "test.example.com.toml").write_text(text.replace('"192.0.2.2"', '"192.0.2.22"'))
        router.signal(signal.SIGHUP)  # one zone changed: its answers go, the other's stay
        router.wait_for("reloaded", count=2)
        assert held() == 1
        assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.22"]
        assert addresses(ask(router, "www.other.example", "A")) == ["198.51.100.61"]
        assert held() == 2
    finally:
        assert router.stop() == 0


def test_a_reply_is_kept_whole_when_first_written(zones, locator):
    """A resolver cycling through more subnets than a quarter of the cache is answered
    from the whole-reply table from its second pass on: kept when first written."""
    cached, strict, _board = _pair(zones, locator, size=100)
    assert cached.cache is not None
    queries = [dns.message.make_query("www.test.example.com", "A", use_edns=0, id=i,
                                      options=[dns.edns.ECSOption(f"81.2.{i}.0", 24)])
               for i in range(60)]
    for query in queries:
        _differ(cached, strict, Case(query.to_wire(), PEERS[0], False))
        assert cached.cache.seen(query.to_wire(), PEERS[1]) is not None
    hits = cached.cache.hits
    for query in queries:
        _differ(cached, strict, Case(query.to_wire(), PEERS[2], False))
    assert cached.cache.hits == hits + 60
