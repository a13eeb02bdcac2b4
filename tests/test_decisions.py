"""The HTTP decision cache: bounded, keyed by everything a decision depends on."""

from __future__ import annotations

import ipaddress
import signal

from router.core.config import Service, Target
from router.core.earth import Point
from router.core.geo import Location
from router.core.steering import Want, rank
from router.http.decisions import DecisionCache, Entry
from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone
from tests.test_http import FILE, request, xff
from tests.test_steering import always_up

SERVICE = Service(name="s", origin="", targets=(
    Target("a", Point(50.0, 8.0), url="https://a.example/"),))


def decision_for(network: str):
    client = Location.of(ipaddress.ip_network(network), Point(50.0, 8.0))
    return rank(SERVICE, client, always_up, Want.URL)


def test_hits_misses_and_the_bound():
    cache = DecisionCache(size=4)  # two halves of two
    keys = [("s", bytes([i]), 1, 0, None) for i in range(7)]
    for i, key in enumerate(keys[:5]):
        assert cache.get(key) is None
        cache.put(key, Entry(decision_for(f"11.{i}.0.0/16"), float(i)))
    assert len(cache) == 3 and cache.evictions == 2
    assert cache.get(keys[0]) is None and cache.get(keys[1]) is None  # the oldest went first
    entry = cache.get(keys[4])
    assert entry is not None and entry.stamp == 4.0
    assert entry.decision.client.network == ipaddress.ip_network("11.4.0.0/16")
    assert (cache.hits, cache.misses) == (1, 7)
    assert cache.get(keys[2]) is not None  # asked for: it stays ...
    for i, key in enumerate(keys[5:], 5):
        cache.put(key, Entry(decision_for(f"11.{i}.0.0/16"), float(i)))
        assert len(cache) <= 4
    assert cache.get(keys[2]) is not None
    assert cache.get(keys[3]) is None  # ... where one not asked for since went
    cache.clear()
    assert len(cache) == 0


def test_a_newer_generation_is_a_different_key():
    cache = DecisionCache()
    cache.put(("s", b"k", 1, 0, None), Entry(decision_for("11.0.0.0/16"), 0.0))
    assert cache.get(("s", b"k", 2, 0, None)) is None
    assert cache.get(("s", b"k", 1, 1, None)) is None
    assert cache.get(("s", b"k", 1, 0, "go1.tar.gz")) is None
    assert cache.get(("s", b"k", 1, 0, None)) is not None


TWO = Service(name="s", origin="", targets=(
    Target("fra", Point(50.1, 8.7), url="https://fra.example/"),
    Target("tyo", Point(35.7, 139.7), url="https://tyo.example/")))


def test_networks_with_the_same_outcome_share_one_entry():
    cache = DecisionCache()

    def remember(network: str, lat: float, lon: float, generation: int = 1) -> Entry:
        client = Location.of(ipaddress.ip_network(network), Point(lat, lon))
        key = ("s", network.encode(), generation, 0, None)
        return cache.remember(key, rank(TWO, client, always_up, Want.URL), 0.0)

    paris = remember("2.0.0.0/16", 48.9, 2.4)
    berlin = remember("5.0.0.0/16", 52.5, 13.4)
    osaka = remember("1.0.0.0/16", 34.7, 135.5)
    assert berlin is paris  # fra, then tyo: one entry, its redirects built once
    assert osaka is not paris and osaka.decision.ranked[0].target.id == "tyo"
    assert remember("5.0.0.0/16", 52.5, 13.4, generation=2) is not paris  # a new state
    assert len(cache) == 4 and cache.get(("s", b"5.0.0.0/16", 1, 0, None)) is paris


def test_a_reload_is_seen_by_the_next_redirect(tmp_path, city_mirrors):
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors, interval="5s"))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1")
    try:
        first = request(router.http_port, "/" + FILE, xff("1.0.16.1")).location
        assert first == f"{city_mirrors['tyo'].base}/dl/{FILE}"
        assert request(router.http_port, "/" + FILE, xff("1.0.16.1")).location == first  # hit
        write_zone(zones, five_city_zone(city_mirrors, interval="5s").replace(
            f'url = "{city_mirrors["tyo"].base}/dl/"', f'url = "{city_mirrors["tyo"].base}/v2/"'))
        router.signal(signal.SIGHUP)
        router.wait_for("reloaded")
        again = request(router.http_port, "/" + FILE, xff("1.0.16.1")).location
        assert again == f"{city_mirrors['tyo'].base}/v2/{FILE}"
    finally:
        assert router.stop() == 0
