"""The beacon, black-box: ``serve --beacon`` takes ``POST /report`` from clients; 1,000
bad bodies get 400 and change nothing; a network's failure reports move that network, and
only it, off the mirror; a flood from one network is limited; without ``--beacon`` the
path is not there. Five real loopback mirrors and a real server; clients in Tokyo."""

from __future__ import annotations

import http.client
import json
import random

import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone
from tests.test_http import request, xff
from tests.test_observability import scrape, value
from tests.test_retries import sent_to

KEYS = 'retry_threshold = 2\navoid_for = "1h"'
REPORTER, OTHER = "1.0.16.1", "1.0.20.1"  # Tokyo: two /24s


@pytest.fixture(scope="module")
def router(tmp_path_factory, city_mirrors):
    zones = write_zone(tmp_path_factory.mktemp("zones"),
                       five_city_zone(city_mirrors, downloads_keys=KEYS))
    r = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32", "--beacon")
    yield r
    assert r.stop() == 0


def post(router, body: bytes, client: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=5)
    try:
        conn.request("POST", "/report", body=body,
                     headers={**xff(client), "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def good(ok: bool, target: str = "tyo") -> bytes:
    return json.dumps({"file": "/go.tar.gz", "target": target, "ok": ok, "seconds": 2.5,
                       "bytes": 5_000_000}).encode()


def garbage(rng: random.Random, i: int) -> bytes:
    base = {"file": "/go.tar.gz", "target": "tyo", "ok": False, "seconds": 1, "bytes": 1}
    kinds = [
        lambda: rng.randbytes(rng.randrange(1, 200)),
        lambda: b"[1, 2, 3]",
        lambda: json.dumps({**base, "target": "nowhere"}).encode(),
        lambda: json.dumps({**base, "ok": "false"}).encode(),
        lambda: json.dumps({**base, "seconds": -1}).encode(),
        lambda: json.dumps({**base, "bytes": True}).encode(),
        lambda: json.dumps({**base, "extra": 1}).encode(),
        lambda: json.dumps({k: v for k, v in base.items() if k != "file"}).encode(),
        lambda: json.dumps({**base, "file": "no-slash"}).encode(),
        lambda: b"{" + b" " * 5000 + b"}",
    ]
    return kinds[i % len(kinds)]()


def test_bad_bodies_get_400_and_change_nothing(router):
    before = scrape(router)
    rng = random.Random(7)
    # from 1,000 addresses of many networks, so that no network reaches its rate limit
    statuses = {post(router, garbage(rng, i), f"1.{(i // 20) % 250}.{i % 250}.9")
                for i in range(1000)}
    assert statuses == {400}
    after = scrape(router)
    assert value(after, "mirror_router_client_reports_total", outcome="bad") - \
        value(before, "mirror_router_client_reports_total", outcome="bad") == 1000
    assert value(after, "mirror_router_client_avoidances_total") == \
        value(before, "mirror_router_client_avoidances_total")


def test_failure_reports_move_only_the_reporting_network(router, city_mirrors):
    tyo, bj = (city_mirrors[t].base.rsplit(":", 1)[1] for t in ("tyo", "bj"))
    assert sent_to(router, REPORTER) == tyo
    assert post(router, good(False), REPORTER) == 204  # one failure: not yet
    assert sent_to(router, REPORTER, "/a.tar.gz") == tyo
    assert post(router, good(False), REPORTER) == 204  # the second (retry_threshold)
    assert sent_to(router, REPORTER, "/b.tar.gz") == bj
    assert sent_to(router, OTHER, "/b.tar.gz") == tyo  # nobody else is moved
    log = router.wait_for("client_avoids")
    assert log["reported"] is True and log["network"] == "1.0.16.0/24"


def test_throughput_reports_show_on_status(router):
    for _ in range(3):
        assert post(router, good(True, "fra"), OTHER) == 204
    status = json.loads(request(router.http_port, "/status.json").body)
    fra = next(t for t in status["services"][0]["targets"] if t["id"] == "fra")
    assert fra["client_bytes_per_second"] == 2_000_000


def test_a_flood_from_one_network_is_limited(router):
    statuses = [post(router, good(True, "gru"), "198.51.100.7") for _ in range(40)]
    assert statuses.count(204) == 30 and statuses.count(429) == 10


def test_without_beacon_there_is_no_report_path(tmp_path, city_mirrors):
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    r = RouterProcess(zones, "--no-probe")
    try:
        assert post(r, good(False), "1.0.16.1") == 405
    finally:
        assert r.stop() == 0


def speed(target: str, megabytes_per_second: float) -> bytes:
    return json.dumps({"file": "/go.tar.gz", "target": target, "ok": True, "seconds": 1.0,
                       "bytes": int(megabytes_per_second * 1_000_000)}).encode()


def test_reported_speeds_are_charged_only_with_throughput_size_and_many_networks(
        tmp_path, city_mirrors):
    """With throughput_size, Tokyo reported slow (1 MB/s against Beijing's 100 MB/s) by
    five networks costs it Japan's clients (100 s against 1 s for 100 MB, at km_per_ms
    1: 99,000 km); four networks are not enough, nor is one network reporting 40 times."""
    zones = write_zone(tmp_path / "zones", five_city_zone(
        city_mirrors, km_per_ms=1, downloads_keys='throughput_size = "100MB"'))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32", "--beacon")
    tyo, bj = (city_mirrors[t].base.rsplit(":", 1)[1] for t in ("tyo", "bj"))
    try:
        for _ in range(25):  # one network, many times: it counts once
            assert post(router, speed("tyo", 1), "1.0.30.1") == 204
        for i in range(1, 4):
            assert post(router, speed("tyo", 1), f"1.0.{30 + i}.1") == 204
        for i in range(5):
            assert post(router, speed("bj", 100), f"1.0.{40 + i}.1") == 204
        assert sent_to(router, "1.0.16.1", "/a.tar.gz") == tyo  # four networks: not yet
        assert post(router, speed("tyo", 1), "1.0.34.1") == 204  # the fifth
        assert sent_to(router, "1.0.16.1", "/b.tar.gz") == bj
        listing = json.loads(request(router.http_port, "/b.tar.gz?mirrorlist=json",
                                     xff("1.0.16.1")).body)
        row = next(c for c in listing["candidates"] if c["id"] == "tyo")
        assert row["latency_km"] >= 98_000, row
        status = json.loads(request(router.http_port, "/status.json").body)
        tokyo = next(t for t in status["services"][0]["targets"] if t["id"] == "tyo")
        assert tokyo["client_bytes_per_second"] == 1_000_000
    finally:
        router.stop()
