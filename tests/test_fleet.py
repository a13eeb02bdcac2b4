"""A fleet: nodes that share health observations, overrides and file checks through a
real ``redis-server`` on a loopback port (started and stopped here, no persistence).

The pure rules first (rendezvous hashing, the quorum, strict values), then three real
nodes on loopback: a mirror failing for one node stays up, for two goes down everywhere;
a fleet-wide drain; garbage in the store; the store killed under load and restarted.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest

from router.core import fleet as f
from router.core.availability import Availability, Outcome
from router.core.health import Health, Status
from router.core.overrides import Override
from tests.conftest import write_zone
from tests.harness import ROOT, RedisServer, RouterProcess, five_city_zone, wait_until
from tests.test_dns import ask
from tests.test_observability import scrape, value

ZONE = "test.example.com."
JAPAN = ("1.0.16.0", 24)
TOKYO, BEIJING = "192.0.2.2", "192.0.2.1"
INTERVAL, TIMEOUT, FALL = 0.5, 0.5, 2  # five_city_zone's defaults
FAST = min(1.0, INTERVAL)  # a suspect's re-check interval


def obs(node: str, status: Status, at: float = 100.0, latency: int | None = 10,
        ttl: float = 5.0) -> f.Observation:
    return f.Observation(node, status, latency, at, ttl)


# ---------------------------------------------------------------- the pure rules


def test_observers_are_stable_and_spread_evenly():
    keys = [("downloads", f"m{i}") for i in range(300)]
    eight = [f"n{i}" for i in range(8)]
    chosen = {k: f.observers(k, eight, 3) for k in keys}
    assert all(len(c) == 3 and len(set(c)) == 3 for c in chosen.values())
    load = {n: sum(n in c for c in chosen.values()) for n in eight}
    assert min(load.values()) > 300 * 3 / 8 * 0.6, load  # each about 112
    # A ninth node takes over only the targets it now wins; no other target moves.
    nine = {k: f.observers(k, [*eight, "n8"], 3) for k in keys}
    for k in keys:
        if "n8" not in nine[k]:
            assert nine[k] == chosen[k]
        else:
            assert set(nine[k]) - {"n8"} <= set(chosen[k])
    assert set(f.observers(keys[0], ["a", "b"], 3)) == {"a", "b"}  # fewer: all of them


@pytest.mark.parametrize(("statuses", "expected"), [
    ((Status.UP, Status.UP, Status.DOWN), Status.UP),  # one of three: stays up
    ((Status.UP, Status.DOWN, Status.DOWN), Status.DOWN),  # a majority
    ((Status.SUSPECT, Status.DOWN, Status.UP), Status.UP),
    ((Status.DOWN, Status.DOWN, Status.DOWN), Status.DOWN),
])
def test_down_only_when_a_majority_of_the_fresh_observers_says_so(statuses, expected):
    found = [obs(f"n{i}", s) for i, s in enumerate(statuses)]
    verdict = f.agree(found, live=["n0", "n1", "n2"], now=101, expected=3, quorum=None)
    assert verdict is not None and verdict.status is expected
    assert verdict.votes == 3 and verdict.needed == 2


def test_a_stale_or_dead_observer_never_counts_as_down():
    live = ["n0", "n1", "n2"]
    found = [obs("n0", Status.UP, at=100), obs("n1", Status.DOWN, at=80),
             obs("n2", Status.DOWN, at=100)]
    # n1's observation is 21 s old with a 5 s TTL: one up, one down: not down.
    verdict = f.agree(found, live=live, now=101, expected=3, quorum=None)
    assert verdict is not None and verdict.status is Status.UP and verdict.votes == 2
    # n2 is no longer live (no heartbeat): only one fresh observation, too few.
    assert f.agree(found, live=["n0", "n1"], now=101, expected=3, quorum=None) is None
    # Nothing fresh at all: no verdict, the node looks for itself.
    assert f.agree(found, live=live, now=200, expected=3, quorum=None) is None


def test_quorum_and_the_latency_median():
    found = [obs("a", Status.UP, latency=10), obs("b", Status.UP, latency=90),
             obs("c", Status.DOWN, latency=None), obs("d", Status.UP, latency=30)]
    live = ["a", "b", "c", "d"]
    assert f.agree(found, live=live, now=101, expected=4, quorum=1).status is Status.DOWN
    verdict = f.agree(found, live=live, now=101, expected=4, quorum=2)
    assert verdict.status is Status.UP and verdict.latency_ms == 30  # median of 10, 30, 90
    assert f.agree(found[:1], live=live, now=101, expected=1, quorum=2) is None


def test_a_verdict_bumps_the_generation_only_when_it_changes():
    from router.core.health import Board
    board = Board()
    up = f.Verdict(Status.UP, 20, 3, 0, 2)
    board.put(("s", "t"), up.health(Health(), 10.0))
    first = board.snapshot.generation
    board.put(("s", "t"), up.health(board.snapshot.get("s", "t"), 11.0))
    assert board.snapshot.generation == first  # the same verdict: nothing new
    assert board.snapshot.get("s", "t").since == 10.0
    board.put(("s", "t"), f.Verdict(Status.DOWN, None, 3, 2, 2).health(
        board.snapshot.get("s", "t"), 12.0))
    assert board.snapshot.generation == first + 1


@pytest.mark.parametrize(("load", "raw", "reason"), [
    (f.load_override, b"not json", "not JSON"),
    (f.load_override, b"[1, 2]", "a JSON object is expected"),
    (f.load_override, b'{"state": "sideways", "by": "x", "at": 1}', "state"),
    (f.load_override, b'{"state": "drain", "by": "x", "at": NaN}', "finite"),
    (f.load_override, b'{"state": "drain", "by": 7, "at": 1}', "by"),
    (f.load_heartbeat, b'{"node": "../x", "at": 1, "instance": "i", "observers": 3}', "node"),
    (lambda r: f.load_observation("n1", r), b'{"status": "up", "at": 1, "ttl": -5}', "ttl"),
    (lambda r: f.load_observation("n1", r), b'{"status": "fine", "at": 1, "ttl": 5}', "status"),
    (f.load_file, b'{"state": "gone", "detail": "", "at": 1}', "state"),
    (f.load_override, b"{" + b" " * 5000 + b"}", "longer than"),
])
def test_values_in_the_store_are_read_strictly(load, raw, reason):
    with pytest.raises(f.BadValue, match=reason):
        load(raw)


def test_values_round_trip():
    record = f.OverrideRecord(Override.DRAIN, "ops@host", 12.5)
    assert f.load_override(f.dump(record)) == record
    o = f.Observation("n1", Status.DOWN, None, 3.25, 7.0, "HTTP 503")
    assert f.load_observation("n1", f.dump(o)) == o
    beat = f.Heartbeat("n1", 4.0, "abc", 3, None)
    assert f.load_heartbeat(f.dump(beat)) == beat
    outcome = Outcome(Availability.MISSING, "HTTP 404")
    assert f.load_file(f.dump_file(outcome, 9.0)) == (outcome, 9.0)


def test_a_store_password_is_never_shown(tmp_path):
    from router.core.config import ConfigError
    from router.core.zonefile import load_server
    path = tmp_path / "server.toml"
    path.write_text('[fleet]\nstore = "redis://:secret@h:99999"')
    with pytest.raises(ConfigError) as e:
        load_server(path)
    assert "invalid port" in str(e.value) and "secret" not in str(e.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:16379/0?password=s3cretPW", "redis://127.0.0.1:16379/0?password=***"),
    ("unix:///run/redis.sock?db=2&password=s3cretPW", "unix:///run/redis.sock?db=2&password=***"),
    ("rediss://u:s3cretPW@h:6380/0?auth_token=s3cretPW", "rediss://u:***@h:6380/0?auth_token=***"),
    ("redis://h:6379/0?db=1", "redis://h:6379/0?db=1"),
])
def test_a_password_in_the_query_is_redacted_too(url, shown):
    """What the fleet_connected log, /status, /status.json and ``fleet status`` show of
    the store (``Link.where``)."""
    from router.core.values import redact
    assert redact(url) == shown and "s3cretPW" not in redact(url)


def test_node_without_a_fleet_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "router", "serve", "--zones", str(tmp_path),
                           "--node", "n1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "--node" in done.stderr and "--fleet" in done.stderr


# ---------------------------------------------------------------- three real nodes


@pytest.fixture(scope="module")
def fleet_zones(tmp_path_factory, city_mirrors) -> Path:
    return write_zone(tmp_path_factory.mktemp("fleet-zones"), five_city_zone(city_mirrors))


def start_node(zones: Path, store: RedisServer, name: str, state: Path, *more: str
               ) -> RouterProcess:
    return RouterProcess(zones, "--fleet", store.url, "--node", name, "--state", str(state),
                         "--config", str(_server_file(state.parent)), *more)


def _server_file(folder: Path) -> Path:
    path = folder / "server.toml"
    path.write_text('[server]\ntrusted_proxies = ["127.0.0.1/32"]\n')
    return path


@contextlib.contextmanager
def three_nodes(zones: Path, store: RedisServer, states: Path,
                more: Mapping[str, tuple[str, ...]]) -> Iterator[dict[str, RouterProcess]]:
    """Nodes n1, n2 and n3 (``more``: each one's further arguments), once each sees all
    three live; stopped after."""
    started: dict[str, RouterProcess] = {}
    try:
        for name in ("n1", "n2", "n3"):
            started[name] = start_node(zones, store, name, states / f"{name}.toml",
                                       *more.get(name, ()))
        wait_until(lambda: all(len(fleet_of(n)["nodes"]) == 3 for n in started.values()), 15,
                   what="every node to see three live nodes")
        yield started
    finally:
        for node in started.values():
            node.stop()


@pytest.fixture(scope="module")
def nodes(fleet_zones, store, tmp_path_factory) -> Iterator[dict[str, RouterProcess]]:
    with three_nodes(fleet_zones, store, tmp_path_factory.mktemp("states"), {}) as started:
        yield started


def status(node: RouterProcess) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/status.json",
                                timeout=5) as r:
        return json.load(r)


def fleet_of(node: RouterProcess) -> dict:
    return status(node)["fleet"]


def state_of(node: RouterProcess, target: str) -> str:
    services = status(node)["services"]
    return next(t["state"] for t in services[0]["targets"] if t["id"] == target)


def raw_reply(node: RouterProcess, query: bytes) -> bytes:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(query, ("127.0.0.1", node.dns_port))
        return s.recv(4096)


def admin_of(node: RouterProcess) -> dict[str, str]:
    return {t["id"]: t["admin"] for t in status(node)["services"][0]["targets"]}


def japan(node: RouterProcess) -> str | None:
    msg = ask(node, ZONE, "A", ecs=JAPAN)
    if msg.rcode() != dns.rcode.NOERROR or not msg.answer:
        return None
    return msg.answer[0][0].address


class Load:
    """Queries from Japan to every node, back to back, in a thread: counts the failed."""

    def __init__(self, nodes: list[RouterProcess]) -> None:
        self.nodes = nodes
        self.sent = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()  # held for each query: swap ``nodes`` under it
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for node in list(self.nodes):
                with self.lock:
                    if node in self.nodes:
                        self._ask(node)

    def _ask(self, node: RouterProcess) -> None:
        try:
            answer = japan(node)
        except Exception as e:  # a timeout is a failed query
            answer, error = None, repr(e)
        else:
            error = "no answer"
        self.sent += 1
        if answer is None:
            self.failed.append(f"{node.dns_port}: {error}")

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_every_node_sees_the_fleet_and_the_same_answer(nodes, store):
    for node in nodes.values():
        view = fleet_of(node)
        assert view["connected"] and view["nodes"] == ["n1", "n2", "n3"]
        targets = {t["target"]: t for t in view["targets"]}
        assert set(targets) == {"bj", "tyo", "fra", "iad", "gru"}
        assert all(t["verdict"]["status"] == "up" for t in targets.values())
    # The same zones and the same fleet state give byte-identical answers (bar the ID).
    for rdtype in ("A", "SOA", "NS"):  # the bytes as sent (dnspython's to_wire shuffles)
        query = dns.message.make_query(ZONE, rdtype, use_edns=0,
                                       options=[dns.edns.ECSOption(*JAPAN)]).to_wire()
        answers = {raw_reply(n, query) for n in nodes.values()}
        assert len(answers) == 1, rdtype
    done = cli("fleet", "status", "--fleet", store.url, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["nodes"] == ["n1", "n2", "n3"] and len(doc["targets"]) == 5
    assert all(len(t["observations"]) == 3 for t in doc["targets"])
    text = cli("fleet", "status", "--fleet", store.url)
    assert "3 live node(s)" in text.stdout and "downloads/tyo: up" in text.stdout
    m = scrape(nodes["n1"])
    assert value(m, "mirror_router_fleet_connected") == 1.0
    assert value(m, "mirror_router_fleet_nodes") == 3.0
    assert value(m, "mirror_router_fleet_verdict_votes", service="downloads", target="tyo") == 3
    age = value(m, "mirror_router_fleet_observation_age_seconds", service="downloads",
                target="tyo", node="n2")
    assert 0 <= age < 5
    with urllib.request.urlopen(f"http://127.0.0.1:{nodes['n1'].http_port}/status") as r:
        page = r.read().decode()
    assert "<h2>Fleet mirror-router</h2>" in page and "<b>n1</b>" in page


def test_one_node_failing_a_mirror_is_outvoted(nodes, city_mirrors):
    tokyo = city_mirrors["tyo"]
    tokyo.failing_for = {"n1"}
    try:
        # n1's own view goes down; the fleet's verdict stays up on every node.
        def n1_says_down() -> bool:
            t = next(t for t in fleet_of(nodes["n2"])["targets"] if t["target"] == "tyo")
            return any(o["node"] == "n1" and o["status"] == "down" for o in t["observations"])
        wait_until(n1_says_down, 10, what="n1 to report Tokyo down")
        for node in nodes.values():
            assert state_of(node, "tyo") == "up"
            assert japan(node) == TOKYO
    finally:
        tokyo.failing_for = set()


@pytest.mark.timing
def test_two_nodes_failing_a_mirror_take_it_down_everywhere_and_back(nodes, city_mirrors):
    tokyo = city_mirrors["tyo"]
    bound = FALL * FAST + TIMEOUT + 1.0 + 3.0  # the bound, plus room for 2 loaded cores
    with Load(list(nodes.values())) as load:
        started = time.monotonic()
        tokyo.failing_for = {"n1", "n2"}
        try:
            wait_until(lambda: all(japan(n) == BEIJING for n in nodes.values()), bound,
                       what="every node to move Japan off Tokyo")
            took = time.monotonic() - started
        finally:
            tokyo.failing_for = set()
        wait_until(lambda: all(japan(n) == TOKYO for n in nodes.values()), 15,
                   what="every node to bring Tokyo back")
    assert not load.failed, load.failed[:5]
    assert load.sent > 50
    print(f"quorum down on all three nodes in {took:.2f} s (bound {bound:.1f} s)")


@pytest.mark.timing
def test_a_fleet_wide_drain_moves_every_node_within_a_second(nodes, store):
    with Load(list(nodes.values())) as load:
        redis = store.client()
        started = time.monotonic()
        redis.hset("mirror-router:overrides", "tyo", json.dumps(
            {"state": "drain", "by": "test", "at": time.time()}))  # what admin writes
        wait_until(lambda: all(japan(n) == BEIJING for n in nodes.values()), 3.0,
                   what="every node to drain Tokyo")
        took = time.monotonic() - started
        assert cli("admin", "--fleet", store.url, "--any-id", "set", "tyo", "drain"
                   ).returncode == 0  # the command line writes the same
        shown = cli("admin", "--fleet", store.url, "show")
        assert "tyo\tdrain\tby " in shown.stdout
        assert cli("admin", "--fleet", store.url, "--any-id", "set", "tyo", "auto"
                   ).returncode == 0
        wait_until(lambda: all(japan(n) == TOKYO for n in nodes.values()), 3.0,
                   what="auto to bring Tokyo back on every node")
    assert not load.failed, load.failed[:5]
    print(f"fleet-wide drain applied on all three nodes {took:.2f} s after the write")


def test_a_fleet_window_starts_and_ends_on_time_on_every_node(nodes, store):
    """admin --fleet set tyo drain --from T --until T+3s: every node moves Japan off
    Tokyo at T and back at T+3s, on the store's clock; admin --fleet show, fleet status
    and /status list the window; ``auto`` drops it."""
    start = int(time.time()) + 3
    window = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in (start, start + 3)]
    done = cli("admin", "--fleet", store.url, "--any-id", "set", "tyo", "drain",
               "--from", window[0], "--until", window[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"tyo: drain from {window[0]} until {window[1]} for fleet")
    shown = cli("admin", "--fleet", store.url, "show").stdout
    assert f"tyo\tdrain\tfrom {window[0]} until {window[1]} (coming)\tby " in shown, shown
    node = next(iter(nodes.values()))
    wait_until(lambda: [w["fleet"] for w in status(node)["windows"]] == [True], 3,
               what="the fleet's window on /status")
    assert all(japan(n) == TOKYO for n in nodes.values())  # not yet
    wait_until(lambda: all(japan(n) == BEIJING for n in nodes.values()),
               start + 2.0 - time.time(), interval=0.05, what="the drain to start everywhere")
    began = time.time() - start
    text = cli("fleet", "status", "--fleet", store.url).stdout
    assert f"window tyo: drain from {window[0]} until {window[1]} (now)" in text, text
    wait_until(lambda: all(japan(n) == TOKYO for n in nodes.values()),
               start + 3 + 2.0 - time.time(), interval=0.05, what="the drain to end everywhere")
    ended = time.time() - (start + 3)
    assert -0.3 <= began <= 2.0 and -0.3 <= ended <= 2.0, (began, ended)
    assert node.wait_for("window_started")["fleet"] is True
    # a coming window, dropped by auto (with the ended one)
    later = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in (start + 600,
                                                                          start + 900)]
    assert cli("admin", "--fleet", store.url, "--any-id", "set", "tyo", "down",
               "--from", later[0], "--until", later[1]).returncode == 0
    assert len(store.client().hgetall("mirror-router:overrides")) == 1  # the ended one went
    assert cli("admin", "--fleet", store.url, "--any-id", "set", "tyo", "auto").returncode == 0
    assert store.client().hgetall("mirror-router:overrides") == {}


def test_admin_refuses_an_unknown_id_and_an_unreachable_store(nodes, store, fleet_zones):
    typo = cli("admin", "--fleet", store.url, "--zones", str(fleet_zones), "set", "tyoo",
               "drain")
    assert typo.returncode == 1 and "no such target" in typo.stderr
    away = cli("admin", "--fleet", "redis://127.0.0.1:1/0", "--any-id", "set", "tyo", "drain")
    assert away.returncode == 1 and "did not answer" in away.stderr


def test_garbage_in_the_store_is_logged_ignored_and_never_replaces_a_good_value(nodes, store):
    redis = store.client()
    assert cli("admin", "--fleet", store.url, "--any-id", "set", "gru", "drain"
               ).returncode == 0
    try:
        wait_until(lambda: all(admin_of(n)["gru"] == "drain" for n in nodes.values()), 5,
                   what="gru drained everywhere")
        redis.hset("mirror-router:overrides", "gru", b"\xff garbage")
        redis.hset("mirror-router:overrides", "fra", "{\"state\": \"sideways\"}")
        redis.hset("mirror-router:obs:downloads/bj", "n9", "[not, json")
        redis.set("mirror-router:node:n7", "nonsense")
        redis.sadd("mirror-router:nodes", "n7")
        redis.set("mirror-router:obs:downloads/iad", "a string, not a hash")  # WRONGTYPE
        for node in nodes.values():
            node.wait_for("fleet_bad_value", 5, count=4)
            assert japan(node) == TOKYO  # still serving
            view = fleet_of(node)
            assert view["nodes"] == ["n1", "n2", "n3"] and view["connected"]
            assert admin_of(node)["gru"] == "drain" and admin_of(node)["fra"] == "auto"
        listed = cli("fleet", "status", "--fleet", store.url)
        assert listed.returncode == 0 and "ignored:" in listed.stdout
    finally:
        redis.hdel("mirror-router:overrides", "gru", "fra")
        redis.hdel("mirror-router:obs:downloads/bj", "n9")
        redis.delete("mirror-router:obs:downloads/iad")


def test_the_store_killed_under_load_then_back(nodes, store, fleet_zones, city_mirrors):
    assert cli("admin", "--fleet", store.url, "--any-id", "set", "tyo", "drain"
               ).returncode == 0
    wait_until(lambda: all(japan(n) == BEIJING for n in nodes.values()), 3,
               what="Tokyo drained everywhere")
    with Load(list(nodes.values())) as load:
        store.kill()
        for node in nodes.values():
            node.wait_for("fleet_disconnected", 10)
        wait_until(lambda: not any(fleet_of(n)["connected"] for n in nodes.values()), 5,
                   what="every node to show the store away")
        assert value(scrape(nodes["n2"]), "mirror_router_fleet_connected") == 0.0
        assert status(nodes["n2"])["ready"]  # /readyz's answer: still ready
        # Each node checks every target itself now.
        fra = city_mirrors["fra"]
        before = len(fra.agents)
        wait_until(lambda: {a.split("node ")[1].split(";")[0] for a in fra.agents[before:]}
                   >= {"n1", "n2", "n3"}, 10, what="every node to check Frankfurt itself")
        # The drain set before the kill still holds, also across a restart of a node.
        n3 = nodes["n3"]
        with load.lock:
            load.nodes = [nodes["n1"], nodes["n2"]]  # a stopped node is not asked
        assert n3.stop() == 0
        nodes["n3"] = start_node(fleet_zones, store, "n3", _state_of(n3))
        assert nodes["n3"].find("fleet_cache_loaded")
        with load.lock:
            load.nodes = list(nodes.values())
        assert all(japan(n) == BEIJING for n in nodes.values())
        store.start()  # empty: no persistence
        for node in nodes.values():
            node.wait_for("fleet_connected", 15, count=2 if node is not nodes["n3"] else 1)
    assert not load.failed, load.failed[:5]
    # The store lost everything; the nodes wrote back the overrides they knew.
    wait_until(lambda: store.client().hget("mirror-router:overrides", "tyo") is not None, 5,
               what="the overrides written back to the new store")
    wait_until(lambda: all(len(fleet_of(n)["nodes"]) == 3 for n in nodes.values()), 10,
               what="the nodes to see each other again")
    assert cli("admin", "--fleet", store.url, "--any-id", "set", "tyo", "auto"
               ).returncode == 0
    wait_until(lambda: all(japan(n) == TOKYO for n in nodes.values()), 3,
               what="auto everywhere after the re-sync")


def _state_of(node: RouterProcess) -> Path:
    args = node.proc.args
    return Path(args[args.index("--state") + 1])


# ---------------------------------------------------------------- shared file checks


MODULES = '''
[services.modules]
http_prefix = "/mod/"
immutable = ["*/@v/*.info", "*/@v/*.mod", "*/@v/*.zip"]
health = {{ path = "/health", interval = "500ms", timeout = "500ms" }}

[[services.modules.targets]]
id = "proxy"
url = "{base}/mod/"
location = {{ lat = 50.11, lon = 8.68 }}
country = "DE"
'''


def get(node: RouterProcess, path: str) -> tuple[int, str]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Location") or ""
    finally:
        conn.close()


def test_a_file_is_head_checked_once_for_the_whole_fleet(tmp_path, store, city_mirrors):
    proxy = city_mirrors["fra"]
    zone = five_city_zone(city_mirrors, extra_service=MODULES.format(base=proxy.base))
    zones = write_zone(tmp_path / "zones", zone)
    config = tmp_path / "server.toml"
    config.write_text(f'[fleet]\nstore = "{store.url}"\nname = "files"\n')
    paths = [f"/mod/example.com/m/@v/v1.{i}.0.zip" for i in range(6)]
    for path in paths:
        proxy.files[path] = b"zip"
    started = [RouterProcess(zones, "--config", str(config), "--node", n) for n in ("a", "b")]
    try:
        threads = [threading.Thread(target=get, args=(node, path))
                   for path in paths for node in started]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for node in started:
            for path in paths:
                assert get(node, path) == (302, f"{proxy.base}{path}")
        assert [proxy.heads(path) for path in paths] == [1] * len(paths)
        missing = "/mod/example.com/m/@v/v9.0.0.zip"  # a 404 is shared as well
        # the only proxy lacks it: 404, so the go command asks its next GOPROXY entry
        # (it was 503 until the go command's contract was kept: that stopped every build)
        assert get(started[0], missing)[0] == 404
        assert get(started[1], missing)[0] == 404
        assert proxy.heads(missing) == 1
    finally:
        for node in started:
            node.stop()


def test_a_password_in_the_store_url_appears_on_no_surface(fleet_zones, tmp_path):
    """``?password=`` (the only way to give one for ``unix://``) appeared whole in the
    fleet_connected line, /status.json, /status and ``fleet status``: every surface is
    read here for it, the public and admin listeners, the log and the command."""
    import socket

    from tests.test_http import request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    url = f"redis://127.0.0.1:{dead}/0?password=s3cretPW&username=u5er"
    node = RouterProcess(fleet_zones, "--fleet", url, "--node", "x",
                         "--state", str(tmp_path / "state.toml"), "--admin", "127.0.0.1:0")
    alone = RouterProcess(fleet_zones, "--fleet", url, "--node", "y")
    try:
        node.wait_for("fleet_disconnected")
        seen = ["".join(node.raw), "".join(alone.raw)]
        for port in (node.admin_port, alone.http_port):
            seen += [request(port, p).body.decode() for p in ("/status", "/status.json",
                                                              "/metrics")]
        told = subprocess.run([sys.executable, "-m", "router", "fleet", "status", "--fleet",
                               url], cwd=ROOT, capture_output=True, text=True, timeout=60)
        seen += [told.stdout, told.stderr]
        assert all("s3cretPW" not in text and "u5er" not in text for text in seen)
        assert any("password=***" in text for text in seen[2:5])  # the admin view says so
    finally:
        assert node.stop() == 0 and alone.stop() == 0


def test_a_node_starts_and_serves_with_its_store_away(fleet_zones):
    node = RouterProcess(fleet_zones, "--fleet", "redis://:pw@127.0.0.1:1/0", "--node", "x")
    try:
        lost = node.find("fleet_disconnected")
        assert lost and "pw" not in lost[0]["store"] and "***" in lost[0]["store"]
        assert node.find("fleet_cache_off")  # no --state: said once, at start
        view = fleet_of(node)
        assert not view["connected"] and view["nodes"] == []
        assert all(t["probing"] and t["verdict"] is None for t in view["targets"])
        assert japan(node) == TOKYO
    finally:
        assert node.stop() == 0
    assert len(node.find("fleet_disconnected")) == 1  # once per change of state


def test_two_nodes_given_one_name_are_told(tmp_path, fleet_zones, store):
    config = tmp_path / "server.toml"
    config.write_text(f'[fleet]\nstore = "{store.url}"\nname = "twins"\nnode = "same"\n')
    twins = [RouterProcess(fleet_zones, "--config", str(config)) for _ in range(2)]
    try:
        wait_until(lambda: any(t.find("fleet_duplicate_node") for t in twins), 10,
                   what="a node to notice its twin")
    finally:
        for node in twins:
            node.stop()


def test_workers_serve_the_fleet_and_nodes_that_count_differently_are_told(
        tmp_path, fleet_zones, store):
    configs = []
    for observers in (2, 3):
        path = tmp_path / f"server{observers}.toml"
        path.write_text(f'[fleet]\nstore = "{store.url}"\nname = "workers"\n'
                        f"observers = {observers}\n")
        configs.append(path)
    supervised = RouterProcess(fleet_zones, "--workers", "2", "--config", str(configs[0]),
                               "--node", "w1")
    alone = RouterProcess(fleet_zones, "--config", str(configs[1]), "--node", "w2")
    try:
        def every_worker_sees_both() -> bool:  # each /status.json from whichever worker
            views = [fleet_of(supervised) for _ in range(6)]
            return all(v is not None and v["connected"] and v["nodes"] == ["w1", "w2"]
                       for v in views)
        wait_until(every_worker_sees_both, 10, what="both workers to show the fleet")
        assert japan(supervised) == TOKYO
        alone.wait_for("fleet_settings_differ", 5)
    finally:
        supervised.stop()
        alone.stop()
