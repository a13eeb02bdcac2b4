"""``serve --workers N``, black-box: several processes on one port, one prober for all."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import selectors
import signal
import socket
import time

import dns.exception
import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone, wait_until
from tests.test_dns import ZONE, addresses, ask
from tests.test_failover import DOWN_BOUND, JAPAN, UP_BOUND
from tests.test_http import FILE, request, xff

WORKERS = 2


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, city_mirrors):
    folder = tmp_path_factory.mktemp("workers")
    zones = write_zone(folder / "zones", five_city_zone(city_mirrors))
    state = folder / "state.toml"
    router = RouterProcess(zones, "--workers", str(WORKERS), "--trusted-proxy", "127.0.0.1",
                           "--state", str(state))
    router.state_file = state
    yield router
    pids = _pids(router)
    assert router.stop() == 0
    for pid in pids:  # SIGTERM drained every worker too
        assert not _alive(pid), pid


def _pids(router: RouterProcess) -> set[int]:
    started = [e["pid"] for e in router.find("worker_started")]
    exited = {e["pid"] for e in router.find("worker_exited")}
    return {pid for pid in started if pid not in exited}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _answering_pid(router: RouterProcess) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        r.read()
        return int(r.headers["X-Mirror-Router-Pid"])
    finally:
        conn.close()


def _answer(router: RouterProcess, subnet=JAPAN) -> str | None:
    """One query from a fresh socket (so SO_REUSEPORT may pick any worker)."""
    try:
        found = addresses(ask(router, ZONE, "A", ecs=subnet, timeout=1))
    except dns.exception.Timeout:
        return None
    assert len(found) == 1
    return found[0]


def _all_answer(router: RouterProcess, expected: str, queries: int = 20) -> bool:
    return all(_answer(router) == expected for _ in range(queries))


def test_every_worker_serves_on_the_same_ports(fleet):
    ready = fleet.find("ready")[0]
    assert ready["workers"] == WORKERS and len(ready["pids"]) == WORKERS
    seen = set()
    wait_until(lambda: seen.add(_answering_pid(fleet)) or len(seen) == WORKERS, 10,
               what="both workers to answer HTTP")
    assert seen == set(ready["pids"])
    assert _all_answer(fleet, "192.0.2.2", 40)  # DNS from any worker: Tokyo for Japan
    r = request(fleet.http_port, "/" + FILE, xff("202.106.0.20"))
    assert r.status == 302 and "/dl/" + FILE in r.location


def test_health_is_probed_once_for_all_workers(fleet, city_mirrors):
    probes = [e for e in fleet.find("first_probe_round")]
    assert len(probes) == 1 and "worker" not in probes[0]  # the supervisor's, not a worker's
    tokyo = city_mirrors["tyo"]
    before = tokyo.hits.count("/health")
    wait_until(lambda: tokyo.hits.count("/health") > before, 5, interval=0.01,
               what="a check of Tokyo")
    started = time.monotonic()
    wait_until(lambda: tokyo.hits.count("/health") >= before + 9, 30, interval=0.01,
               what="eight more checks of Tokyo")
    # One prober checks every 0.45-0.5 s (jittered), so eight more checks take at least
    # 8 x 0.45 = 3.6 s (a lower bound: load only makes it longer). A prober per worker
    # as well would bring them in half that.
    assert time.monotonic() - started >= 8 * 0.45 * 0.95


@pytest.mark.timing
@pytest.mark.timing
def test_a_health_change_reaches_every_worker_within_a_second(fleet, city_mirrors):
    tokyo = city_mirrors["tyo"]
    assert _all_answer(fleet, "192.0.2.2")
    seen = len([e for e in fleet.find("target_state") if e["target"] == "tyo"])
    tokyo.stop()
    try:
        fleet.wait_for("target_state", DOWN_BOUND, count=_state_events(fleet, seen) + 1)
        noticed = time.monotonic()
        wait_until(lambda: _all_answer(fleet, "192.0.2.1"), 2.0,
                   what="every worker to answer Beijing")
        assert time.monotonic() - noticed <= 2.0  # 50 ms as designed
    finally:
        tokyo.start()
    wait_until(lambda: _all_answer(fleet, "192.0.2.2"), UP_BOUND + 1.0,
               what="every worker back on Tokyo")


def _state_events(router: RouterProcess, tyo_events: int) -> int:
    """The count of target_state events so far (to wait for the next one)."""
    del tyo_events
    return len(router.find("target_state"))


@pytest.mark.timing
def test_an_operator_drain_reaches_every_worker_within_a_second(fleet):
    from router.core.overrides import Override
    from router.watch import statefile

    statefile.write(fleet.state_file, {"tyo": Override.DRAIN})
    started = time.monotonic()
    try:
        wait_until(lambda: _all_answer(fleet, "192.0.2.1"), 2.5, what="drain everywhere")
        assert time.monotonic() - started <= 2.5  # 0.55 s as designed
    finally:
        statefile.write(fleet.state_file, {})
    wait_until(lambda: _all_answer(fleet, "192.0.2.2"), 2.5, what="auto everywhere")


def test_metrics_add_up_every_workers_counts(fleet):
    def total_302() -> float:
        conn = http.client.HTTPConnection("127.0.0.1", fleet.http_port, timeout=5)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        conn.close()
        lines = [line for line in body.splitlines()
                 if line.startswith("mirror_router_http_responses_total") and '"302"' in line]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = total_302()
    for _ in range(30):  # a new connection each: the kernel spreads them over the workers
        assert request(fleet.http_port, "/" + FILE, xff("5.9.0.1")).status == 302
    wait_until(lambda: total_302() >= before + 30, 5, what="30 more 302s in /metrics")


def test_a_killed_worker_is_started_again(fleet):
    victim = next(iter(_pids(fleet)))
    ready_before = len(fleet.find("worker_ready"))
    os.kill(victim, signal.SIGKILL)
    exited = fleet.wait_for("worker_exited", 10)
    assert exited["pid"] == victim and exited["code"] == -signal.SIGKILL
    fleet.wait_for("worker_ready", 20, count=ready_before + 1)
    assert victim not in _pids(fleet) and len(_pids(fleet)) == WORKERS
    # Queries keep being answered (one sent as the worker died may need its retry).
    assert wait_until(lambda: _answer(fleet), 5, what="an answer") == "192.0.2.2"
    assert _all_answer(fleet, "192.0.2.2", 40)
    seen: set[int] = set()
    wait_until(lambda: seen.add(_answering_pid(fleet)) or seen == _pids(fleet), 10,
               what="the new worker to answer HTTP")


def test_reload_reaches_every_worker(fleet, city_mirrors):
    zones = fleet.proc.args[fleet.proc.args.index("--zones") + 1]
    before = len(fleet.find("reloaded"))
    write_zone(__import__("pathlib").Path(zones), five_city_zone(city_mirrors, extra_records=(
        '[[zone.records]]\nname = "new"\ntype = "A"\ndata = "198.51.100.7"\n')))
    committed = len(fleet.find("config_committed"))
    fleet.signal(signal.SIGHUP)
    fleet.wait_for("reloaded", 10, count=before + 1)  # the supervisor reads the zones once
    fleet.wait_for("config_committed", 10, count=committed + WORKERS)  # each worker serves it
    assert all(addresses(ask(fleet, "new." + ZONE, "A")) == ["198.51.100.7"]
               for _ in range(20))


# ---------------------------------------------------------------- config from the supervisor

NEW_RECORD = '[[zone.records]]\nname = "new"\ntype = "A"\ndata = "198.51.100.{n}"\n'


@pytest.fixture
def pair(tmp_path, city_mirrors):
    """Two workers of their own (these tests break and rewrite the zone file)."""
    zones = write_zone(tmp_path / "zones", _zone(city_mirrors, 1))
    router = RouterProcess(zones, "--workers", str(WORKERS))
    yield router
    assert router.stop() == 0


def _zone(city_mirrors, n: int) -> str:
    return five_city_zone(city_mirrors, extra_records=NEW_RECORD.format(n=n))


def _new(router: RouterProcess) -> str | None:
    """new.<zone> from a fresh socket (any worker)."""
    try:
        return addresses(ask(router, "new." + ZONE, "A", timeout=1))[0]
    except dns.exception.Timeout:
        return None


def test_a_restarted_worker_serves_the_supervisors_config_not_the_disks(pair, city_mirrors):
    zones = pair.zones
    write_zone(zones, "this is [not toml")
    pair.signal(signal.SIGHUP)
    pair.wait_for("reload_failed", 10)
    ready = len(pair.find("worker_ready"))
    os.kill(next(iter(_pids(pair))), signal.SIGKILL)
    killed = time.monotonic()
    pair.wait_for("worker_ready", 10, count=ready + 1)
    back = time.monotonic() - killed
    assert pair.find("worker_exited")[-1]["code"] == -signal.SIGKILL
    assert not pair.find("startup_failed")  # the broken file on disk is never read
    answers = {_new(pair) for _ in range(40)}  # fresh sockets: both workers
    assert answers == {"198.51.100.1"}, answers
    print(f"worker back in {back:.2f} s")  # the bound is 2 s; a loaded CI gets 10


def test_a_file_changed_just_after_sighup_never_splits_the_workers(pair, city_mirrors):
    zones = pair.zones
    committed = len(pair.find("config_committed"))
    pair.signal(signal.SIGHUP)
    time.sleep(0.002)  # the race itself: the file changes while the reload reads it
    write_zone(zones, _zone(city_mirrors, 2))
    pair.wait_for("config_committed", 10, count=committed + WORKERS)
    answers = [_new(pair) for _ in range(40)]
    assert len(set(answers)) == 1 and answers[0] in ("198.51.100.1", "198.51.100.2"), answers


def test_a_restarted_worker_takes_queries_only_once_it_reads_them(pair):
    """Queries from ever-new source ports, as fast as one thread sends them, across a
    kill -9 and the restart: only those the dying worker held may be lost or late (over
    0.5 s: a resolver has moved on). The new worker binds its sockets only once it can
    read them (the supervisor used to bind them before starting its interpreter)."""
    ready = len(pair.find("worker_ready"))
    victim = next(iter(_pids(pair)))
    query = dns.message.make_query("new." + ZONE, "A").to_wire()
    waiting = selectors.DefaultSelector()
    sent = answered = 0
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    after = None  # when the new worker said ready
    while time.monotonic() < deadline and (after is None or time.monotonic() < after + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.sendto(query, ("127.0.0.1", pair.dns_port))
        waiting.register(sock, selectors.EVENT_READ, time.monotonic())
        sent += 1
        answered += _collect(waiting, 0.002)
        if after is None and len(pair.find("worker_ready")) > ready:
            after = time.monotonic()
    quiet = time.monotonic() + 3
    while waiting.get_map() and time.monotonic() < quiet:
        answered += _collect(waiting, 0.1)
    for key in list(waiting.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    assert after is not None, "the worker did not come back"
    assert sent - answered <= 3, f"{sent - answered} of {sent} queries lost or late"


LATE = 0.5  # seconds: a reply later than this counts as lost


def _collect(waiting: selectors.BaseSelector, timeout: float) -> int:
    """Replies that arrived within ``timeout``, in time; their sockets are closed."""
    got = 0
    for key, _ in waiting.select(timeout):
        sock = key.fileobj
        waiting.unregister(sock)
        with contextlib.suppress(OSError):
            sock.recv(4096)  # type: ignore[union-attr]
            got += time.monotonic() - key.data < LATE
        sock.close()  # type: ignore[union-attr]
    return got


# ---------------------------------------------------------------- catalogs and file checks

RELEASES = {"go1.22.5": ["go1.22.5.linux-amd64.tar.gz", "go1.22.5.src.tar.gz"],
            "go1.22.4": ["go1.22.4.linux-amd64.tar.gz"]}


@pytest.fixture(scope="module")
def fleet_with_catalog(tmp_path_factory, farm):
    from tests.harness import LIST_PATH, downloads_zone, release_list

    files = {n: n.encode() * 40 for names in RELEASES.values() for n in names}
    m = {name: farm.mirror(name) for name in ("origin", "fra")}
    m["origin"].files[LIST_PATH] = release_list(
        [(v, True, {n: files[n] for n in names}) for v, names in RELEASES.items()])
    for mirror in m.values():
        mirror.files.update({f"/go/{n}": data for n, data in files.items()})
    service = ('anycast_km = 15000\navailability_wait = "3s"\ncatalog.refresh = "1h"\n'
               'health = { path = "/health", interval = "1s", timeout = "1s" }\n')
    zone = downloads_zone(m["origin"], {"fra": m["fra"]}, service)
    router = RouterProcess(write_zone(tmp_path_factory.mktemp("zones"), zone, "dl.toml"),
                           "--workers", str(WORKERS), "--trusted-proxy", "127.0.0.1",
                           "--admin", "127.0.0.1:0")  # the status with each worker's PID
    yield router, m
    assert router.stop() == 0


def test_catalog_and_freshness_probe_run_once_for_all_workers(fleet_with_catalog):
    from tests.harness import LIST_PATH

    router, m = fleet_with_catalog
    list_path = LIST_PATH.split("?")[0]
    assert sum(1 for method, p in m["origin"].requests if p == list_path) == 1
    for name in RELEASES["go1.22.5"]:  # the newest release: probed once, not once a worker
        assert m["fra"].heads(f"/go/{name}") == 1
    # Both workers know the catalog: listed files redirect, unlisted ones are 404.
    for _ in range(10):
        assert request(router.http_port, "/nope.tar.gz", xff("5.9.0.1")).status == 404
        found = request(router.http_port, "/go1.22.5.src.tar.gz", xff("5.9.0.1"))
        assert found.location == f"{m['fra'].base}/go/go1.22.5.src.tar.gz"


def test_a_file_check_by_one_worker_serves_every_worker(fleet_with_catalog):
    router, m = fleet_with_catalog
    name = "go1.22.4.linux-amd64.tar.gz"  # not in the newest release: checked on demand
    assert m["fra"].heads(f"/go/{name}") == 0
    first = request(router.http_port, f"/{name}", xff("5.9.0.1"))
    assert first.location == f"{m['fra'].base}/go/{name}"  # waited for its check
    assert m["fra"].heads(f"/go/{name}") == 1
    # The result goes through the supervisor to the other worker; wait until both say so
    # (/status.json asks nothing of the mirrors) before asking that worker for the file.
    told: dict[int, int] = {}

    def every_worker_knows() -> bool:
        status = json.loads(request(router.admin_port, "/status.json").body)
        fra = next(t for t in status["services"][0]["targets"] if t["id"] == "fra")
        told[status["pid"]] = fra["files"].get("present", 0)
        return len(told) == WORKERS and min(told.values()) >= 1
    wait_until(every_worker_knows, 10, interval=0.01, what="both workers to know the file")
    for _ in range(30):  # new connections: both workers answer some of these
        r = request(router.http_port, f"/{name}", xff("5.9.0.1"))
        assert r.location == f"{m['fra'].base}/go/{name}"
    assert m["fra"].heads(f"/go/{name}") == 1  # the other worker was told, it did not ask


@pytest.mark.timing
def test_a_second_sigterm_cuts_the_drain_short(tmp_path, city_mirrors):
    """A worker that does not drain (stopped) holds the supervisor for drain + grace
    seconds; a second SIGTERM ends the wait at once, as uvicorn does."""
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--workers", str(WORKERS))
    stuck = sorted(_pids(router))[0]
    try:
        os.kill(stuck, signal.SIGSTOP)
        router.signal(signal.SIGTERM)
        router.wait_for("stopping")
        assert router.proc.poll() is None  # waiting for the stopped worker to drain
        router.signal(signal.SIGTERM)
        router.wait_for("drain_cut_short")
        assert router.proc.wait(timeout=8) == 0  # drain + grace would be 10 s
        assert [e["pid"] for e in router.find("worker_killed")] == [stuck]
        assert not _alive(stuck)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)
        router.stop()
