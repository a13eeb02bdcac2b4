"""DNS cookies (RFC 7873, RFC 9018): the server cookie's arithmetic, and the server
telling cookies it made from the rest, across nodes that share the secret."""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from router.dns.cookies import Secrets, Verdict, judge, server_cookie
from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone
from tests.test_dns import ZONE, addresses

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
CLIENT = bytes.fromhex("2464c4abcf10c957")
ADDRESS = ipaddress.ip_address("198.51.100.100").packed
NOW = 1559731985


def test_the_server_cookie_is_rfc_9018s():
    """RFC 9018 appendix A.1 (and A.2's second client), byte for byte."""
    assert server_cookie(SECRET, CLIENT, ADDRESS, NOW).hex() == \
        "010000005cf79f111f8130c3eee29480"
    assert server_cookie(SECRET, bytes.fromhex("fc93fc62807ddb86"), ADDRESS, NOW).hex() == \
        "010000005cf79f11f21d8326fb3b2c00"


def test_verdicts():
    mine = Secrets(SECRET)
    ours = CLIENT + server_cookie(SECRET, CLIENT, ADDRESS, NOW)
    assert judge(CLIENT, ADDRESS, NOW, mine)[0] is Verdict.NEW
    assert judge(ours, ADDRESS, NOW + 60, mine)[0] is Verdict.VALID
    assert judge(ours, ADDRESS, NOW + 7200, mine)[0] is Verdict.INVALID  # over an hour old
    assert judge(ours, ADDRESS, NOW - 3600, mine)[0] is Verdict.INVALID  # from the future
    other = ipaddress.ip_address("198.51.100.101").packed
    assert judge(ours, other, NOW, mine)[0] is Verdict.INVALID  # made for another address
    rolled = Secrets(bytes(16), previous=SECRET)
    verdict, back = judge(ours, ADDRESS, NOW, rolled)
    assert verdict is Verdict.VALID  # the previous secret still counts ...
    assert back[8:] == server_cookie(bytes(16), CLIENT, ADDRESS, NOW)  # ... new ones use the new
    for bad in (b"", CLIENT[:7], CLIENT + b"x" * 7, CLIENT + b"x" * 33):
        assert judge(bad, ADDRESS, NOW, mine) == (Verdict.MALFORMED, b"")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, city_mirrors):
    """Two nodes sharing a cookie secret, as a deployment's name servers do."""
    folder = tmp_path_factory.mktemp("cookies")
    zones = write_zone(folder / "zones", five_city_zone(city_mirrors))
    (folder / "server.toml").write_text(f'[server]\ncookie_secret = "{SECRET.hex()}"\n')
    pair = [RouterProcess(zones, "--config", str(folder / "server.toml"), "--no-probe")
            for _ in range(2)]
    yield pair
    for router in pair:
        assert router.stop() == 0


def _ask(router: RouterProcess, cookie: bytes, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(ZONE, "A", use_edns=0,
                               options=[dns.edns.GenericOption(10, cookie)])
    send = dns.query.tcp if tcp else dns.query.udp
    return send(q, "127.0.0.1", port=router.dns_port, timeout=3)


def _cookie(msg: dns.message.Message) -> bytes:
    (found,) = [o.to_wire() for o in msg.options if o.otype == 10]
    return found


def test_a_cookie_made_by_one_node_is_good_at_another(nodes):
    first, second = nodes
    r = _ask(first, CLIENT)
    assert r.rcode() == dns.rcode.NOERROR and addresses(r) == ["192.0.2.4"]
    cookie = _cookie(r)
    assert cookie[:8] == CLIENT and len(cookie) == 24 and cookie[8] == 1
    for router in (first, second, second):  # valid everywhere; the cache answers too
        r = _ask(router, cookie)
        assert r.rcode() == dns.rcode.NOERROR and _cookie(r)[:8] == CLIENT


def test_a_forged_server_cookie_gets_badcookie_over_udp_only(nodes):
    forged = CLIENT + bytes.fromhex("01000000") + bytes(12)
    r = _ask(nodes[0], forged)
    assert r.rcode() == dns.rcode.BADCOOKIE and not r.answer
    assert _cookie(r)[:8] == CLIENT and _cookie(r)[8:] != forged[8:]  # a good one to retry with
    r = _ask(nodes[0], forged, tcp=True)
    assert r.rcode() == dns.rcode.NOERROR and addresses(r) == ["192.0.2.4"]


def test_a_malformed_cookie_gets_formerr_with_opt(nodes):
    r = _ask(nodes[0], b"short")
    assert r.rcode() == dns.rcode.FORMERR and r.edns == 0 and len(r.question) == 1


def test_cookies_are_counted(nodes):
    from tests.test_observability import scrape, value

    _ask(nodes[1], CLIENT)
    metrics = scrape(nodes[1])
    assert value(metrics, "mirror_router_dns_cookies_total", verdict="new") >= 1
