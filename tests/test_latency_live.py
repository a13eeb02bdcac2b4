"""Latency-aware steering, black-box: a real router and two real loopback mirrors.

The near mirror stands where GeoIP puts a German client; the far one 5,000 km due south.
When the near one answers its first byte only after 800 ms, the far one wins (at the
default km_per_ms, 800 ms is worth 80,000 km); when it recovers, it wins again within a
few probes. While both are equally fast, distance alone decides.
"""

from __future__ import annotations

import json
import math

import dns.rcode
import pytest

from router.core.earth import EARTH_RADIUS_KM
from tests.conftest import write_zone
from tests.harness import RouterProcess, wait_until
from tests.test_dns import addresses, ask
from tests.test_http import request, xff

GERMANY = ("5.9.0.0", 16)  # GeoLite2: 51.2993, 9.491
GERMAN, SOUTH_AFRICAN, AMERICAN = "5.9.0.1", "41.0.0.1", "8.8.8.8"
HERE = (51.2993, 9.491)
SOUTH = math.degrees(5000 / EARTH_RADIUS_KM)  # 5,000 km along the meridian
NEAR, FAR = "192.0.2.21", "192.0.2.22"
INTERVAL = 0.3

ZONE = """
[zone]
origin = "lat.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.com"

[services.dl]
dns_names = ["@"]
http_prefix = "/"
health = {{ path = "/health", interval = "{interval}s", timeout = "3s", rise = 1, fall = 2 }}

[[services.dl.targets]]
id = "near"
url = "{near}/"
location = {{ lat = {lat}, lon = {lon} }}
country = "DE"
addresses = ["{near_ip}"]

[[services.dl.targets]]
id = "far"
url = "{far}/"
location = {{ lat = {far_lat}, lon = {lon} }}
addresses = ["{far_ip}"]
"""


@pytest.fixture(scope="module")
def pair(farm, tmp_path_factory):
    near, far = farm.mirror("near"), farm.mirror("far")
    zone = ZONE.format(interval=INTERVAL, near=near.base, far=far.base, lat=HERE[0],
                       lon=HERE[1], far_lat=HERE[0] - SOUTH, near_ip=NEAR, far_ip=FAR)
    zones = write_zone(tmp_path_factory.mktemp("zones"), zone, "lat.example.com.toml")
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32")
    yield router, near, far
    assert router.stop() == 0


def answer(router) -> str:
    msg = ask(router, "lat.example.com.", "A", ecs=GERMANY)
    assert msg.rcode() == dns.rcode.NOERROR
    (address,) = addresses(msg)
    return address


def listing(router, client: str) -> list[dict]:
    r = request(router.http_port, "/f?mirrorlist=json", xff(client))
    return json.loads(r.body)["candidates"]


def probes(mirror) -> int:
    return mirror.hits.count("/health")


def test_the_far_mirror_is_5000_km_further(pair):
    router, _, _ = pair
    near, far = listing(router, GERMAN)
    assert (near["id"], far["id"]) == ("near", "far")
    assert near["distance_km"] < 1 and 4999 < far["distance_km"] - near["distance_km"] < 5001


@pytest.mark.parametrize(("client", "order"), [
    (GERMAN, ["near", "far"]), (SOUTH_AFRICAN, ["far", "near"]), (AMERICAN, ["near", "far"])])
def test_equally_fast_mirrors_are_ranked_by_distance_alone(pair, client, order):
    router, _, _ = pair
    rows = listing(router, client)
    assert [r["id"] for r in rows] == order
    assert rows[0]["distance_km"] < rows[1]["distance_km"]
    for r in rows:  # loopback answers alike: whatever latency is charged is noise-sized
        assert r["cost"] == pytest.approx(r["distance_km"] + r["latency_km"], abs=0.2)
        assert r["latency_km"] < 2000


def test_near_but_slow_loses_to_far_but_fast_and_wins_again_when_it_recovers(pair):
    router, near, _ = pair
    assert answer(router) == NEAR
    near.delay = 0.8
    try:
        start = probes(near)
        wait_until(lambda: answer(router) == FAR, 10, what="the far mirror to win")
        assert probes(near) - start <= 2  # the first slow probe is enough
        slow = listing(router, GERMAN)
        assert [r["id"] for r in slow] == ["far", "near"]
        charged = slow[1]
        assert charged["latency_ms"] >= 300 and charged["latency_km"] == 100 * (
            charged["latency_ms"] - slow[0]["latency_ms"])  # default km_per_ms = 100
        assert charged["cost"] > slow[0]["cost"] > charged["distance_km"]
        page = request(router.http_port, "/f?mirrorlist", xff(GERMAN)).body.decode()
        assert "<th>wait ms</th><th>latency km</th>" in page  # the term, shown apart
        assert f"<td class=num>{charged['latency_km']:,.0f}</td>" in page
    finally:
        near.delay = 0.0
    start = probes(near)
    wait_until(lambda: answer(router) == NEAR, 10, what="the near mirror to win again")
    assert probes(near) - start <= 7  # a few probes: the EWMA halves with each one
    assert [r["id"] for r in listing(router, GERMAN)] == ["near", "far"]
