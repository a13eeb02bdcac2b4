"""Clients that come back, black-box: a client network that asks again for the same file
after being sent to a mirror is moved off that mirror for that network only, within the
next request; other networks still get it; it comes back after ``avoid_for``. Five real
loopback mirrors and a real server; clients in Tokyo behind a trusted proxy."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import dns.edns
import pytest

from router.core.retries import Retries, RetryPolicy, network_of
from tests.conftest import write_zone
from tests.harness import ROOT, RouterProcess, five_city_zone, wait_until
from tests.test_dns import ask
from tests.test_http import request, xff
from tests.test_observability import scrape, value

KEYS = 'retry_window = "30s"\nretry_threshold = 2\navoid_for = "3s"'
ONE, NEIGHBOUR, OTHER = "1.0.16.1", "1.0.16.77", "1.0.20.1"  # Tokyo: same /24, another


def test_a_retry_is_the_same_path_from_the_same_address_within_the_window():
    retries, policy = Retries(), RetryPolicy(window=30, threshold=2, avoid_for=600)
    net = network_of(0x01001001, 4)
    assert net == bytes([1, 0, 16, 0, 24])
    assert network_of(int("20010db8000100020000000000000001", 16), 6)[-1] == 48
    me, other = "1.0.16.1", "1.0.16.2"
    assert retries.asked("s", me, "/f", 0, policy) is None  # never sent anything
    retries.sent("s", me, "/f", "tyo", 0)
    assert retries.asked("s", other, "/f", 1, policy) is None  # a neighbour: not a retry
    assert retries.asked("s", me, "/g", 1, policy) is None  # another file
    retries.sent("s", me, "/g", "tyo", 1)
    assert retries.asked("s", me, "/g", 40, policy) is None  # after the window
    retries.sent("s", me, "/g", "tyo", 40)
    assert retries.asked("s", me, "/g", 41, policy) is None  # the first retry
    assert retries.asked("s", me, "/g", 42, policy) == "tyo"  # the second: avoid it
    assert retries.avoid("s", net, "tyo", 42 + 600, 42)  # new
    assert not retries.avoid("s", net, "tyo", 50 + 600, 50)  # made longer: not counted
    assert retries.avoided("s", net, 43) == {"tyo"}
    assert retries.avoided("s", network_of(0x01001401, 4), 43) == frozenset()
    assert retries.avoided("s", net, 50 + 600) == frozenset()  # over
    assert retries.counts == {"retries": 2, "avoidances": 1}


@pytest.fixture(scope="module")
def router(tmp_path_factory, city_mirrors):
    zones = write_zone(tmp_path_factory.mktemp("zones"),
                       five_city_zone(city_mirrors, downloads_keys=KEYS))
    r = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32")
    yield r
    assert r.stop() == 0


def sent_to(router, client: str, path: str = "/f.tar.gz") -> str:
    r = request(router.http_port, path, xff(client))
    assert r.status == 302, (r.status, r.body)
    return r.location.split("/dl/")[0].rsplit(":", 1)[1]


def test_a_network_that_retries_is_moved_off_the_mirror_and_only_it(router, city_mirrors):
    tyo, bj = (city_mirrors[t].base.rsplit(":", 1)[1] for t in ("tyo", "bj"))
    before = scrape(router)
    assert sent_to(router, ONE) == tyo
    assert sent_to(router, ONE) == tyo  # one retry: not yet
    assert sent_to(router, ONE) == bj  # the second: this very request goes elsewhere
    avoided = router.wait_for("client_avoids")
    assert (avoided["target"], avoided["network"]) == ("tyo", "1.0.16.0/24")
    assert sent_to(router, NEIGHBOUR) == bj  # the same network
    assert sent_to(router, OTHER) == tyo  # another network keeps Tokyo
    assert sent_to(router, ONE, "/other.tar.gz") == bj  # every file of the network
    listing = json.loads(request(router.http_port, "/f.tar.gz?mirrorlist=json",
                                 xff(ONE)).body)
    row = next(c for c in listing["candidates"] if c["id"] == "tyo")
    assert row["excluded"] and row["exclusion"] == "avoided"
    after = scrape(router)
    assert value(after, "mirror_router_client_retries_total") - \
        value(before, "mirror_router_client_retries_total") == 2
    assert value(after, "mirror_router_client_avoidances_total") - \
        value(before, "mirror_router_client_avoidances_total") == 1
    # back after avoid_for (3 s)
    wait_until(lambda: sent_to(router, NEIGHBOUR, "/x.tar.gz") == tyo, 10, interval=0.2,
               what="Tokyo to be given again after avoid_for")


def test_different_files_in_a_row_are_never_retries(router, city_mirrors):
    tyo = city_mirrors["tyo"].base.rsplit(":", 1)[1]
    client = "1.0.18.9"
    for i in range(6):
        assert sent_to(router, client, f"/file-{i}.tar.gz") == tyo


def test_explain_server_shows_the_avoidance(router):
    for _ in range(3):
        sent_to(router, "1.0.19.5", "/y.tar.gz")
    out = subprocess.run([sys.executable, "-m", "router", "explain", "--server",
                          f"http://127.0.0.1:{router.http_port}", "--client", "1.0.19.200",
                          "--json", "/y.tar.gz"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    row = next(c for c in json.loads(out.stdout)["candidates"] if c["id"] == "tyo")
    assert row["exclusion"] == "avoided" and "came back" in row["reason"]


def test_dns_clients_of_the_network_get_the_same_avoidance(router):
    """A network that avoids Tokyo over HTTP is answered without it over DNS too (ECS
    /24, scope /24, never from the answer cache); other networks keep Tokyo."""
    tokyo, beijing = "192.0.2.2", "192.0.2.1"

    def answer(subnet: str) -> tuple[str, int]:
        msg = ask(router, "test.example.com.", "A", ecs=(subnet, 24))
        scope = next(o.scopelen for o in msg.options if isinstance(o, dns.edns.ECSOption))
        return msg.answer[0][0].address, scope

    for _ in range(2):  # the second from the answer cache (and its byte-for-byte table)
        assert answer("1.0.21.0")[0] == tokyo
    for _ in range(3):
        sent_to(router, "1.0.21.5", "/z.tar.gz")
    for _ in range(2):
        assert answer("1.0.21.0") == (beijing, 24)
    assert answer("1.0.20.0")[0] == tokyo
    wait_until(lambda: answer("1.0.21.0")[0] == tokyo, 10, interval=0.2,
               what="Tokyo to be answered again after avoid_for")


def test_workers_share_what_a_network_avoids(tmp_path, city_mirrors):
    """With --workers 2, an avoidance one worker begins (three requests on one kept-alive
    connection: one worker) holds on both: 40 DNS queries, each from a new socket, and
    so spread over the workers by the kernel, all answer without Tokyo."""
    zones = write_zone(tmp_path / "zones", five_city_zone(
        city_mirrors, downloads_keys=KEYS.replace('"3s"', '"60s"')))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32", "--workers", "2")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=5)
        for _ in range(3):
            conn.request("GET", "/q.tar.gz", headers=xff("1.0.24.5"))
            conn.getresponse().read()
        conn.close()
        router.wait_for("client_avoids")

        def answered() -> set[str]:
            return {ask(router, "test.example.com.", "A", ecs=("1.0.24.0", 24)).answer[0][0]
                    .address for _ in range(40)}
        wait_until(lambda: answered() == {"192.0.2.1"}, 10, what="both workers to avoid Tokyo")
    finally:
        router.stop()
