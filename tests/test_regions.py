"""Regional health in a fleet: each region's nodes judge the mirrors for the clients
nearest them.

The pure rules first (regions read strictly, observers chosen within each region, a
verdict per region, a client mapped to the nearest region, the snapshot as each region
sees it, across a worker's pipe too), then three real nodes on loopback in two regions
(n1 and n2 in Asia, n3 in Oceania) with a real ``redis-server``: Tokyo failing only for
Asia's nodes (by the node name in the probe's User-Agent) is excluded for Japan's
clients and kept for Australia's, on every node, and comes back; and the other way
round.
"""

from __future__ import annotations

import json
import pickle
import urllib.request
from collections.abc import Iterator
from types import MappingProxyType

import pytest
import redis

from router.core import fleet as f
from router.core import regions
from router.core.earth import Point
from router.core.health import Board, Health, Status
from router.core.regions import CENTRES, EVERYWHERE, Region
from router.core.values import Invalid
from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone, wait_until
from tests.test_dns import ask
from tests.test_fleet import cli, fleet_of, three_nodes
from tests.test_retries import sent_to

ZONE = "test.example.com."
JAPAN = ("1.0.16.0", 24)  # Tokyo in the embedded GeoLite2
SYDNEY = ("1.40.0.0", 24)  # Sydney: Tokyo is its nearest mirror too
TOKYO, BEIJING = "192.0.2.2", "192.0.2.1"
KEYS = 'retry_window = "30s"\nretry_threshold = 2\navoid_for = "60s"'
ASIA, OCEANIA = Region("AS", CENTRES["AS"]), Region("OC", CENTRES["OC"])


def obs(node: str, status: Status, at: float = 100.0) -> f.Observation:
    return f.Observation(node, status, 10, at, 5.0)


# ---------------------------------------------------------------- the pure rules


@pytest.mark.parametrize("given, expected", [
    ("EU", Region("EU", CENTRES["EU"])),
    ("as", Region("AS", CENTRES["AS"])),
    ("all", EVERYWHERE),
    ({"name": "tokyo-dc", "lat": 35.6, "lon": 139.7}, Region("tokyo-dc", Point(35.6, 139.7))),
])
def test_a_region_is_a_continent_code_or_a_named_place(given, expected):
    assert regions.region(given) == expected


@pytest.mark.parametrize("given, reason", [
    ("XX", "is not one of AF, AS, EU, NA, OC, SA"),
    ({"name": "dc", "lat": 95, "lon": 0}, "95"),
    ({"name": "dc", "lat": 1}, "exactly name, lat and lon"),
    ({"name": "EU", "lat": 1, "lon": 2}, "a region name of its own"),
    (3, "a continent code or a table"),
])
def test_a_bad_region_is_refused_with_the_reason(given, reason):
    with pytest.raises(Invalid, match=reason):
        regions.region(given)


def test_a_client_is_mapped_to_the_nearest_region():
    centres = (("AS", CENTRES["AS"]), ("EU", CENTRES["EU"]), ("OC", CENTRES["OC"]))
    assert regions.nearest(Point(35.68, 139.69), centres) == "AS"  # Tokyo
    assert regions.nearest(Point(-33.8, 150.9), centres) == "OC"  # Sydney
    assert regions.nearest(Point(40.4, -3.7), centres) == "EU"  # Madrid
    assert regions.nearest(Point(0, 0), ()) is None


def test_every_region_has_its_own_observers_and_verdict():
    places = {"a1": ASIA, "a2": ASIA, "a3": ASIA, "o1": OCEANIA}
    seen = {("s", "tyo"): {"a1": obs("a1", Status.DOWN), "a2": obs("a2", Status.DOWN),
                           "a3": obs("a3", Status.DOWN), "o1": obs("o1", Status.UP)}}
    [asia] = f.survey(seen, [("s", "tyo")], live=tuple(places), count=3, quorum=None,
                      now=101.0, me="a1", places=places, per_region=2)
    by = {r.region: r for r in asia.regions}
    assert set(by) == {"AS", "OC"}
    assert len(by["AS"].observers) == 2 and set(by["AS"].observers) < {"a1", "a2", "a3"}
    assert by["OC"].observers == ("o1",)
    assert by["AS"].verdict is not None and by["AS"].verdict.status is Status.DOWN
    assert by["OC"].verdict is not None and by["OC"].verdict.status is Status.UP
    assert asia.verdict == by["AS"].verdict  # a node's own verdict is its region's
    [oceania] = f.survey(seen, [("s", "tyo")], live=tuple(places), count=3, quorum=None,
                         now=101.0, me="o1", places=places, per_region=2)
    assert oceania.verdict is not None and oceania.verdict.status is Status.UP
    assert f.centres(places) == (("AS", CENTRES["AS"]), ("OC", CENTRES["OC"]))


def test_one_region_is_exactly_the_fleet_of_before():
    places = {"a1": ASIA, "a2": ASIA, "a3": ASIA}
    seen = {("s", "tyo"): {n: obs(n, Status.DOWN if n == "a1" else Status.UP)
                           for n in places}}
    with_places = f.survey(seen, [("s", "tyo")], live=tuple(places), count=3, quorum=None,
                           now=101.0, me="a1", places=places)
    without = f.survey(seen, [("s", "tyo")], live=tuple(places), count=3, quorum=None,
                       now=101.0, me="a1")
    assert with_places == without and with_places[0].regions == ()
    assert f.centres(places) == ()


def test_checks_per_mirror_stay_constant_in_the_nodes_per_region():
    """The observers of every target: per_region per region, however many nodes."""
    for per_region_nodes in (2, 5, 20):
        places = {f"{r}{i}": region for r, region in (("a", ASIA), ("o", OCEANIA))
                  for i in range(per_region_nodes)}
        views = f.survey({}, [("s", f"t{i}") for i in range(50)], live=tuple(places),
                         count=3, quorum=None, now=0.0, places=places, per_region=2)
        assert {len(v.observers) for v in views} == {4}


def test_heartbeats_carry_the_region():
    beat = f.Heartbeat("n1", 1.0, "abc", 3, None, Region("dc", Point(1.5, 2.5)), 3)
    assert f.load_heartbeat(f.dump(beat)) == beat
    old = '{"node":"n1","at":1,"instance":"x","observers":3,"quorum":null}'
    assert f.load_heartbeat(old).region == EVERYWHERE  # a node of before regions
    with pytest.raises(f.BadValue, match="place"):
        f.load_heartbeat('{"node":"n1","at":1,"instance":"x","observers":3,'
                         '"quorum":null,"region":"dc","place":[1,"x"]}')


def test_the_snapshot_as_each_region_sees_it():
    board = Board()
    key = ("s", "tyo")
    board.put(key, Health(Status.UP, latency_ms=10))
    generation = board.snapshot.generation
    centres = (("AS", CENTRES["AS"]), ("OC", CENTRES["OC"]))
    board.set_regional(centres, {"AS": {key: Health(Status.DOWN)}, "OC": {}})
    snap = board.snapshot
    assert snap.generation == generation + 1
    assert snap.from_point(Point(35.68, 139.69)).get(*key).status is Status.DOWN
    assert snap.from_point(Point(-33.8, 150.9)).get(*key).status is Status.UP
    assert snap.from_point(None) is snap and snap.get(*key).status is Status.UP
    assert snap.from_point(Point(35.68, 139.69)).region == "AS"
    board.set_regional(centres, {"AS": {key: Health(Status.DOWN, since=5.0)}, "OC": {}})
    assert board.snapshot.generation == generation + 1  # the same to steering
    copy = pickle.loads(pickle.dumps(board.snapshot))  # a worker's copy
    assert copy.from_point(Point(35.68, 139.69)).get(*key).status is Status.DOWN
    assert copy.centres == centres and copy.generation == snap.generation
    board.set_regional((), {})
    assert board.snapshot.from_point(Point(35.68, 139.69)).get(*key).status is Status.UP
    assert board.snapshot.seen == MappingProxyType({})


# ---------------------------------------------------------------- three real nodes


@pytest.fixture(scope="module")
def nodes(city_mirrors, store, tmp_path_factory) -> Iterator[dict[str, RouterProcess]]:
    zones = write_zone(tmp_path_factory.mktemp("zones"),
                       five_city_zone(city_mirrors, downloads_keys=KEYS))
    regions = {"n1": ("--region", "AS"), "n2": ("--region", "AS"), "n3": ("--region", "OC")}
    with three_nodes(zones, store, tmp_path_factory.mktemp("states"), regions) as started:
        yield started


def answer(node: RouterProcess, ecs: tuple[str, int]) -> str | None:
    msg = ask(node, ZONE, "A", ecs=ecs)
    return msg.answer[0][0].address if msg.answer else None


def answers(nodes: dict[str, RouterProcess], ecs: tuple[str, int]) -> set[str | None]:
    return {answer(n, ecs) for n in nodes.values()}


def explained(node: RouterProcess, client: str) -> dict:
    url = f"http://127.0.0.1:{node.http_port}/explain?client={client}&name=test.example.com"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def test_a_mirror_failing_from_one_region_is_excluded_only_for_its_clients(nodes, city_mirrors,
                                                                            store):
    assert answers(nodes, JAPAN) == {TOKYO} and answers(nodes, SYDNEY) == {TOKYO}
    tokyo = city_mirrors["tyo"]
    tokyo.failing_for = {"n1", "n2"}  # Asia's observers
    try:
        wait_until(lambda: answers(nodes, JAPAN) == {BEIJING}, 15,
                   what="every node to move Japan off Tokyo")
        assert answers(nodes, SYDNEY) == {TOKYO}  # Oceania's observer sees it up
        for node in nodes.values():  # told the same way on every node
            said = explained(node, "1.0.16.1")
            assert said["client"]["region"] == "AS"
            assert next(c for c in said["candidates"] if c["id"] == "tyo")["state"] == "down"
            assert explained(node, "1.40.0.1")["client"]["region"] == "OC"
        view = fleet_of(nodes["n3"])
        assert view["regions"] == {"n1": "AS", "n2": "AS", "n3": "OC"}
        tyo = next(t for t in view["targets"] if t["target"] == "tyo")
        verdicts = {r["region"]: r["verdict"]["status"] for r in tyo["regions"]}
        assert verdicts == {"AS": "down", "OC": "up"}
        text = cli("fleet", "status", "--fleet", store.url).stdout
        assert "from AS: down" in text and "from OC: up" in text, text
    finally:
        tokyo.failing_for = set()
    wait_until(lambda: answers(nodes, JAPAN) == {TOKYO}, 15,
               what="Japan back on Tokyo once Asia's observers see it again")


def test_and_the_other_way_round(nodes, city_mirrors):
    tokyo = city_mirrors["tyo"]
    tokyo.failing_for = {"n3"}  # Oceania's one observer
    try:
        wait_until(lambda: answers(nodes, SYDNEY) == {BEIJING}, 15,
                   what="every node to move Sydney off Tokyo")
        assert answers(nodes, JAPAN) == {TOKYO}
    finally:
        tokyo.failing_for = set()
    wait_until(lambda: answers(nodes, SYDNEY) == {TOKYO}, 15, what="Sydney back on Tokyo")


def test_an_avoidance_begun_on_one_node_holds_on_every_node(nodes, city_mirrors, store):
    """A network that came back to n1 avoids Tokyo on n2 and n3 too (shared through the
    store), over HTTP and DNS; a neighbouring network keeps it; garbage in the stream
    is logged and changes nothing."""
    bj = city_mirrors["bj"].base.rsplit(":", 1)[1]
    client = redis.Redis.from_url(store.url)
    client.xadd("mirror-router:avoidances", {"v": b'{"service":"downloads","network":"zz"}'})
    for _ in range(3):
        sent_to(nodes["n1"], "1.0.22.5", "/w.tar.gz")
    wait_until(lambda: answers(nodes, ("1.0.22.0", 24)) == {BEIJING}, 10,
               what="every node to answer the network without Tokyo")
    assert all(sent_to(n, "1.0.22.9", "/v.tar.gz") == bj for n in nodes.values())
    assert answers(nodes, ("1.0.23.0", 24)) == {TOKYO}
    for node in nodes.values():
        bad = node.wait_for("fleet_bad_value")
        assert bad["key"].startswith("mirror-router:avoidances") and "network" in bad["error"]
