"""A store that survives its primary, black-box: a real ``redis-sentinel`` watching two
real ``redis-server``s (a primary and its replica) on loopback; two nodes join the fleet
through ``redis+sentinel://``; the primary is killed under load; no query fails and both
nodes follow the new primary (their heartbeats reach it, a fleet-wide drain set through
the sentinel after the failover moves both)."""

from __future__ import annotations

import os
import shutil

import pytest

from router.core.values import Invalid, Sentinels, sentinels, store_url
from tests.conftest import write_zone
from tests.harness import RedisServer, SentinelServer, five_city_zone, wait_until
from tests.test_fleet import BEIJING, TOKYO, Load, cli, fleet_of, japan, start_node


@pytest.mark.parametrize(("url", "found"), [
    ("redis+sentinel://127.0.0.1:26379/mirrors",
     Sentinels((("127.0.0.1", 26379),), "mirrors", 0, None)),
    ("redis+sentinel://:s3cret@a:26379,b:26380,[::1]:26381/mirrors/2",
     Sentinels((("a", 26379), ("b", 26380), ("::1", 26381)), "mirrors", 2, "s3cret")),
    ("redis://127.0.0.1:6379/0", None),
])
def test_sentinel_urls(url, found):
    assert sentinels(url) == found
    assert store_url(url) == url


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+sentinel://a/mirrors", "is not HOST:PORT"),
    ("redis+sentinel://a:26379", "the path must be /SERVICE"),
    ("redis+sentinel://a:26379/mirrors/x", "the path must be /SERVICE"),
])
def test_bad_sentinel_urls_say_why(url, reason):
    with pytest.raises(Invalid) as e:
        store_url(url)
    assert reason in e.value.reason


def test_the_fleet_follows_a_failover_with_no_failed_query(tmp_path, city_mirrors):
    if shutil.which("redis-sentinel") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-sentinel is not installed (.ci/run installs it)")
        pytest.skip("needs redis-sentinel")
    fleet_zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    primary = RedisServer(tmp_path)
    replica = RedisServer(tmp_path, replica_of=primary.port)
    sentinel = SentinelServer(tmp_path, primary.port)
    started = []
    try:
        for name in ("s1", "s2"):
            started.append(_node(fleet_zones, sentinel, name, tmp_path))
        wait_until(lambda: all(len(fleet_of(n)["nodes"]) == 2 for n in started), 15,
                   what="both nodes to see each other through the sentinel")
        with Load(started) as load:
            primary.kill()
            wait_until(lambda: sentinel.primary() == replica.port, 30,
                       what="the sentinel to promote the replica")
            wait_until(lambda: replica.client().exists("mirror-router:node:s1",
                                                      "mirror-router:node:s2") == 2
                       and all(fleet_of(n)["connected"] for n in started), 20,
                       what="both nodes to write to the new primary")
        assert load.sent > 50 and load.failed == [], load.failed[:5]
        done = cli("admin", "--fleet", sentinel.url, "--any-id", "set", "tyo", "drain")
        assert done.returncode == 0, done.stderr
        wait_until(lambda: all(japan(n) == BEIJING for n in started), 5,
                   what="the drain through the new primary")
        assert cli("admin", "--fleet", sentinel.url, "--any-id", "set", "tyo", "auto"
                   ).returncode == 0
        wait_until(lambda: all(japan(n) == TOKYO for n in started), 5, what="Tokyo back")
    finally:
        for node in started:
            node.stop()
        sentinel.close()
        replica.close()
        primary.close()


def _node(zones, sentinel, name, folder):
    class Store:  # start_node takes the store's URL from this
        url = sentinel.url
    return start_node(zones, Store, name, folder / f"{name}.toml")  # type: ignore[arg-type]
