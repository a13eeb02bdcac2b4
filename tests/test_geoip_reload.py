"""A current GeoIP database, black-box: ``--geoip`` replaced on disk is read on SIGHUP and
when the file changes, swapped whole with no failed query; its build date and age show in
the log, /status and /metrics."""

from __future__ import annotations

import json
import shutil
import signal
import threading

import dns.rcode
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone, wait_until
from tests.test_dns import ZONE, addresses, ask
from tests.test_geo import city
from tests.test_http import request, xff

CLIENT = ("1.0.16.0", 24)
TOKYO, FRANKFURT = "192.0.2.2", "192.0.2.3"


def database(path, lat: float, lon: float, country: str) -> None:
    """A City database that places 1.0.16.0/24 (and nothing else) at (lat, lon)."""
    writer = MMDBWriter(ip_version=6, database_type="Test-City", ipv4_compatible=True)
    writer.insert_network(IPSet(["1.0.16.0/24"]), city(lat, lon, country, "XX", "Somewhere"))
    writer.to_db_file(str(path))


@pytest.fixture(scope="module")
def geo(tmp_path_factory, city_mirrors):
    folder = tmp_path_factory.mktemp("geo")
    database(folder / "tokyo.mmdb", 35.68, 139.69, "JP")
    database(folder / "frankfurt.mmdb", 50.11, 8.68, "DE")
    live = folder / "live.mmdb"
    shutil.copy(folder / "tokyo.mmdb", live)
    zones = write_zone(folder / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--geoip", str(live), "--trusted-proxy", "127.0.0.1/32")
    yield router, folder
    assert router.stop() == 0


def answer(router) -> str:
    msg = ask(router, ZONE, "A", ecs=CLIENT)
    assert msg.rcode() == dns.rcode.NOERROR
    (address,) = addresses(msg)
    return address


def replace(folder, source: str) -> None:
    """A new database put in place whole, as geoipupdate does (write, then rename)."""
    shutil.copy(folder / source, folder / "live.tmp")
    (folder / "live.tmp").replace(folder / "live.mmdb")


def test_a_replaced_database_is_read_on_sighup_with_no_failed_query(geo):
    router, folder = geo
    assert answer(router) == TOKYO
    failures: list[BaseException] = []
    answers: list[str] = []
    stop = threading.Event()

    def ask_all_the_time() -> None:
        while not stop.is_set():
            try:
                answers.append(answer(router))
            except BaseException as e:
                failures.append(e)
    worker = threading.Thread(target=ask_all_the_time)
    worker.start()
    try:
        replace(folder, "frankfurt.mmdb")
        router.signal(signal.SIGHUP)
        wait_until(lambda: answers and answers[-1] == FRANKFURT, 10,
                   what="the new database's answer")
    finally:
        stop.set()
        worker.join(10)
    assert not failures, failures
    assert set(answers) == {TOKYO, FRANKFURT} and answers.count(FRANKFURT) >= 1
    loaded = router.find("geoip_loaded")[-1]
    assert loaded["geoip_file"] == str(folder / "live.mmdb") and loaded["geoip_age_days"] == 0
    # the redirector follows too (its client memo was dropped with the old database)
    r = request(router.http_port, "/x", xff("1.0.16.1"))
    assert "/dl/x" in r.location and r.location.startswith("http://127.0.0.1:")
    located = json.loads(request(router.http_port, "/x?mirrorlist=json", xff("1.0.16.1")).body)
    assert located["client"]["country"] == "DE"


def test_a_replaced_database_is_read_when_the_file_changes(geo):
    router, folder = geo
    start = answer(router)
    target = "tokyo.mmdb" if start == FRANKFURT else "frankfurt.mmdb"
    replace(folder, target)
    expected = TOKYO if target == "tokyo.mmdb" else FRANKFURT
    wait_until(lambda: answer(router) == expected, 20, interval=0.2,
               what="the file change to be noticed (looked at every 5 s)")


def test_a_broken_database_keeps_the_old_one(geo):
    router, folder = geo
    before = answer(router)
    (folder / "live.tmp").write_bytes(b"not a database")
    (folder / "live.tmp").replace(folder / "live.mmdb")
    router.signal(signal.SIGHUP)
    failed = router.wait_for("geoip_reload_failed", 10)
    assert failed["file"] == str(folder / "live.mmdb")
    assert answer(router) == before
    replace(folder, "tokyo.mmdb")


def test_the_databases_age_is_in_status_and_metrics(geo):
    router, _folder = geo
    status = json.loads(request(router.http_port, "/status.json").body)
    assert status["geoip"]["geoip"].startswith("Test-City built ")
    assert status["geoip"]["geoip_stale"] is False
    metrics = request(router.http_port, "/metrics").body.decode()
    assert "mirror_router_geoip_build_timestamp_seconds " in metrics
    assert "days old" in request(router.http_port, "/status").body.decode()


def test_a_database_copied_over_in_place_never_kills_the_server(geo):
    """``cp new.mmdb live.mmdb`` truncates the served file, then writes it: lookups in
    between (new client networks, so the search tree is walked) are answered from the
    router's own copy (a mapped file cut short killed the process with SIGBUS), and the
    new database is read once it is whole."""
    router, folder = geo
    live = folder / "live.mmdb"
    before = answer(router)
    with live.open("r+b") as f:  # cp's first step
        f.truncate(0)
    router.signal(signal.SIGHUP)  # a reload that finds the file empty keeps the old one
    for n in range(200):
        ecs = (f"5.{n // 250}.{n % 250}.0", 24)
        assert ask(router, ZONE, "A", ecs=ecs).rcode() == dns.rcode.NOERROR
    assert answer(router) == before and router.proc.poll() is None
    assert router.wait_for("geoip_reload_failed", 10)["file"] == str(live)
    live.write_bytes((folder / "frankfurt.mmdb").read_bytes())  # cp's second step
    router.signal(signal.SIGHUP)
    wait_until(lambda: answer(router) == FRANKFURT, 10, interval=0.2,
               what="the whole new database read")
    assert router.proc.poll() is None
    replace(folder, "tokyo.mmdb")
    router.signal(signal.SIGHUP)
    wait_until(lambda: answer(router) == before, 10, interval=0.2, what="Tokyo again")
