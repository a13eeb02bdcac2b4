"""Every address of a DNS target is checked on its own (``health.kind = "addresses"``):
the check connects to that
address and says the URL's host name (Host, TLS SNI, the certificate's name), so a host
whose IPv6 is broken gets no AAAA answers while its IPv4 still gets A answers. Real
loopback mirrors on 127.0.0.1 and ::1, a real router, dnspython as the resolver."""

from __future__ import annotations

import json
import urllib.request
from ipaddress import ip_address, ip_network

import dns.message
import dns.query
import dns.rcode
import pytest

from router.core.config import HealthCheck, Kind, Service, Target
from router.core.earth import Point
from router.core.geo import Location
from router.core.health import Board, Result, address_id
from router.core.steering import Exclusion, Want, decide
from tests.conftest import write_zone
from tests.harness import RouterProcess, wait_until
from tests.tls import make_ca

ZONE = """
[zone]
origin = "test.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.net"

[services.www]
dns_names = ["www"]
http_prefix = "/"
ttl = 1
default_location = {{ lat = 50.11, lon = 8.68 }}

[services.www.health]
kind = "addresses"
path = "/health"
interval = "300ms"
timeout = "1s"
rise = 1
fall = 1

[[services.www.targets]]
id = "edge"
url = "{url}/"
location = {{ lat = 50.11, lon = 8.68 }}
addresses = ["127.0.0.1", "::1"]
"""


def answers(router: RouterProcess, rtype: str) -> list[str]:
    q = dns.message.make_query("www.test.example.com", rtype)
    r = dns.query.udp(q, "127.0.0.1", port=router.dns_port, timeout=3)
    assert r.rcode() == dns.rcode.NOERROR
    return sorted(rd.address for rrset in r.answer for rd in rrset)


def status_of(router: RouterProcess) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{router.http_port}/status.json",
                                timeout=5) as r:
        return json.loads(r.read())["services"][0]["targets"][0]


@pytest.fixture
def plain(farm, tmp_path):
    """A host listening on 127.0.0.1 only: its IPv6 address refuses connections."""
    mirror = farm.mirror("v4-only", host="localhost")
    router = RouterProcess(write_zone(tmp_path, ZONE.format(url=mirror.base)))
    yield mirror, router
    assert router.stop() == 0
    mirror.unlisten_also()


def test_a_refused_ipv6_address_leaves_the_aaaa_answers_and_comes_back(plain):
    mirror, router = plain
    wait_until(lambda: answers(router, "AAAA") == [], 10, what="AAAA to go")
    assert answers(router, "A") == ["127.0.0.1"]
    edge = status_of(router)
    assert edge["state"] == "up"
    assert {a["address"]: a["state"] for a in edge["addresses"]} == \
        {"127.0.0.1": "up", "::1": "down"}
    mirror.listen_also("::1")  # IPv6 comes back
    wait_until(lambda: answers(router, "AAAA") == ["::1"], 10, what="AAAA to come back")
    assert answers(router, "A") == ["127.0.0.1"]


def test_the_state_change_of_an_address_is_logged_by_its_name(plain):
    _mirror, router = plain
    wait_until(lambda: router.find("target_state"), 10, what="a state change")
    changed = {e["target"]: e["new"] for e in router.find("target_state")}
    assert changed.get("edge@::1") == "down" and changed.get("edge@127.0.0.1") == "up"


def test_a_target_with_no_healthy_aaaa_is_excluded_for_aaaa_only():
    """Steering, in process: the reason explain and ?mirrorlist give."""
    service = Service("www", "test.example.com.", (
        Target("edge", Point(50.11, 8.68), addresses=(ip_address("127.0.0.1"),
                                                     ip_address("::1"))),
        Target("far", Point(39.04, -77.49), addresses=(ip_address("::2"),))),
        dns_names=("www.test.example.com.",), health=HealthCheck(kind=Kind.ADDRESSES))
    board = Board()
    check = HealthCheck()
    board.record(("www", address_id("edge", "127.0.0.1")), Result(True, 1.0), check)
    board.record(("www", address_id("edge", "::1")), Result(False, 1.0, "refused"), check)
    client = Location.of(ip_network("1.0.16.0/24"), Point(50.11, 8.68))
    six = decide(board.snapshot, service, client, Want.IPV6)
    assert [c.target.id for c in six.ranked] == ["far"]
    (edge,) = [c for c in six.excluded if c.target.id == "edge"]
    assert edge.excluded is Exclusion.NO_HEALTHY_AAAA and edge.reason.startswith("no healthy AAAA")
    four = decide(board.snapshot, service, client, Want.IPV4)
    assert [c.target.id for c in four.ranked] == ["edge"]


def test_a_wrong_certificate_on_one_address_is_a_failure_for_it(farm, tmp_path):
    (tmp_path / "pki").mkdir()
    pki = make_ca(tmp_path / "pki")
    mirror = farm.mirror("tls-edge", tls=pki.server_context(), host="localhost")
    mirror.listen_also("::1", tls=pki.context_for("elsewhere.example", tmp_path / "pki"))
    router = RouterProcess(write_zone(tmp_path / "zones", ZONE.format(url=mirror.base)),
                           "--ca-file", str(pki.ca))
    try:
        wait_until(lambda: answers(router, "AAAA") == [], 10, what="AAAA to go")
        assert answers(router, "A") == ["127.0.0.1"]
        ipv6 = next(a for a in status_of(router)["addresses"] if a["address"] == "::1")
        assert ipv6["state"] == "down" and "certificate" in ipv6["last_error"].lower()
        assert ("GET", "/health") in mirror.requests  # the good address was asked by name
    finally:
        assert router.stop() == 0
        mirror.unlisten_also()
