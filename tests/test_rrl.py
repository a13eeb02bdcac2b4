"""Response rate limiting: a spoofed victim gets a bounded share, a resolver sending ECS
for many client subnets is never limited, TCP and valid cookies are exempt."""

from __future__ import annotations

import ipaddress
import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.query
import pytest

from router.core.config import RrlConfig
from router.dns.rrl import Action, Limiter
from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone
from tests.test_dns import ZONE, addresses

VICTIM = ipaddress.ip_address("192.0.2.77")
QUESTION = b"\x02go\x07example\x00\x00\x01\x00\x01"
ANSWER = struct.pack("!6H", 1, 0x8400, 1, 1, 0, 0)  # NOERROR, one answer
NXDOMAIN = struct.pack("!6H", 1, 0x8403, 1, 0, 1, 0)


def _actions(limiter: Limiter, count: int, now: float, ecs=lambda i: b"", peer=VICTIM,
             question=lambda i: QUESTION, reply=ANSWER) -> dict[Action, int]:
    seen = dict.fromkeys(Action, 0)
    for i in range(count):
        seen[limiter.admit(peer, ecs(i), question(i), reply, now + i / count)] += 1
    return seen


def _subnet(i: int) -> bytes:
    """The i-th ECS option value: family 1, /24, scope 0, an address of its own."""
    return struct.pack("!HBBI", 1, 24, 0, i)


def test_one_name_to_one_victim_is_held_to_the_rate_with_every_second_slipped():
    seen = _actions(Limiter(RrlConfig(responses_per_second=5, slip=2)), 1000, 100.0)
    assert seen[Action.SEND] <= 5 + 5  # the burst, and a second's refill
    assert abs(seen[Action.SLIP] - seen[Action.DROP]) <= 1
    other = ipaddress.ip_address("198.51.100.1")  # another /24: its own buckets
    assert Limiter(RrlConfig(responses_per_second=5)).admit(other, b"", QUESTION, ANSWER, 100.0) \
        is Action.SEND


def test_a_resolver_with_many_client_subnets_is_never_limited():
    """2,000 queries a second for one name, each for another ECS subnet (a big resolver):
    every one is sent; the per-source bucket (2,500/s) holds them all."""
    limiter = Limiter(RrlConfig(responses_per_second=5))
    for second in range(3):
        seen = _actions(limiter, 2000, 100.0 + second, ecs=_subnet)
        assert seen[Action.SEND] == 2000, seen


def test_varying_the_ecs_or_the_name_does_not_get_past_the_source_cap():
    limiter = Limiter(RrlConfig(responses_per_second=5, per_source_per_second=100))
    seen = _actions(limiter, 5000, 100.0, ecs=_subnet)
    assert seen[Action.SEND] <= 100 + 100
    nx = Limiter(RrlConfig(responses_per_second=5))  # random subdomains: one NXDOMAIN bucket
    seen = _actions(nx, 1000, 100.0, question=lambda i: b"\x04%04d" % i + QUESTION, reply=NXDOMAIN)
    assert seen[Action.SEND] <= 10


def test_the_rate_is_split_over_workers_and_buckets_recover():
    limiter = Limiter(RrlConfig(responses_per_second=10), workers=2)
    assert _actions(limiter, 1000, 100.0)[Action.SEND] <= 5 + 5
    assert limiter.admit(VICTIM, b"", QUESTION, ANSWER, 110.0) is Action.SEND  # 10 s later


@pytest.fixture(scope="module")
def limited(tmp_path_factory, city_mirrors):
    folder = tmp_path_factory.mktemp("rrl")
    zones = write_zone(folder / "zones", five_city_zone(city_mirrors))
    (folder / "server.toml").write_text("[server]\n[server.rrl]\nresponses_per_second = 5\n")
    router = RouterProcess(zones, "--config", str(folder / "server.toml"), "--no-probe")
    yield router
    assert router.stop() == 0


def _flood(router: RouterProcess, count: int, options=()) -> tuple[int, int]:
    """``count`` queries from one socket, then every reply that comes: (answers, TC)."""
    q = dns.message.make_query(ZONE, "A", use_edns=0, options=list(options))
    wire = q.to_wire()
    answers = truncated = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(wire, ("127.0.0.1", router.dns_port))
        s.settimeout(1.0)
        try:
            while True:
                reply = dns.message.from_wire(s.recv(4096))
                truncated += bool(reply.flags & dns.flags.TC)
                answers += bool(reply.answer)
        except TimeoutError:
            pass
    return answers, truncated


def test_a_flood_over_udp_is_limited_and_slips_to_tcp(limited):
    from tests.test_observability import scrape, value

    answers, truncated = _flood(limited, 200)
    assert answers <= 5 + 5 and truncated >= 50, (answers, truncated)
    tcp = dns.query.tcp(dns.message.make_query(ZONE, "A"), "127.0.0.1",
                        port=limited.dns_port, timeout=3)
    assert addresses(tcp) == ["192.0.2.4"]  # over TCP: never limited
    metrics = scrape(limited)
    assert value(metrics, "mirror_router_dns_rrl_total", action="dropped") >= 50
    assert value(metrics, "mirror_router_dns_rrl_total", action="slipped") >= 50


def test_a_valid_server_cookie_is_exempt(limited):
    q = dns.message.make_query(ZONE, "A", use_edns=0,
                               options=[dns.edns.GenericOption(10, b"c" * 8)])
    r = dns.query.tcp(q, "127.0.0.1", port=limited.dns_port, timeout=3)
    (cookie,) = [o.to_wire() for o in r.options if o.otype == 10]
    answers, truncated = _flood(limited, 100, [dns.edns.GenericOption(10, cookie)])
    assert (answers, truncated) == (100, 0)
