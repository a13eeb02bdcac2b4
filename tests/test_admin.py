"""Operator overrides, black-box: ``mirror-router admin`` edits the state file and a running
``serve --state FILE`` follows it, within a second, with no failed query."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import dns.rcode
import pytest

from router.watch.statefile import default_path
from tests.conftest import write_zone
from tests.harness import ROOT, RouterProcess, five_city_zone, wait_until
from tests.test_dns import ZONE, addresses, ask
from tests.test_http import request, xff
from tests.test_observability import scrape, value

JAPAN = ("1.0.16.0", 24)
TOKYO, BEIJING = "192.0.2.2", "192.0.2.1"


def admin(state, *args: str, zones=None) -> subprocess.CompletedProcess[str]:
    where = ["--zones", str(zones)] if zones is not None else ["--any-id"]
    return subprocess.run([sys.executable, "-m", "router", "admin", "--state", str(state),
                           *where, *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


def set_override(router, state, selector: str, value: str, expect: dict[str, str]) -> None:
    """``admin set``, then wait until the router has applied the file: a later write
    must never overtake one the router has not read yet."""
    done = admin(state, "set", selector, value, zones=router.zones)
    assert done.returncode == 0, done.stderr
    router.wait_for_overrides(expect)


def japan(router) -> str:
    """One query for a client in Japan; it must never fail."""
    msg = ask(router, ZONE, "A", ecs=JAPAN)
    assert msg.rcode() == dns.rcode.NOERROR
    (address,) = addresses(msg)
    return address


def moves(router, expected: str, bound: float = 3.0) -> float:
    started = time.monotonic()
    wait_until(lambda: japan(router) == expected, bound, interval=0.01,
               what=f"Japan to be answered {expected}")
    return time.monotonic() - started


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("state") / "state.toml"


@pytest.fixture(scope="module")
def router(tmp_path_factory, city_mirrors, state):
    zones = write_zone(tmp_path_factory.mktemp("zones"), five_city_zone(city_mirrors))
    r = RouterProcess(zones, "--state", str(state), "--trusted-proxy", "127.0.0.1/32")
    yield r
    assert r.stop() == 0


@pytest.mark.timing
def test_drain_moves_japan_off_tokyo_within_a_second_and_auto_brings_it_back(router, state):
    assert japan(router) == TOKYO
    done = admin(state, "set", "tyo", "drain", zones=router.zones)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tyo: drain (was auto) in {state}"
    assert moves(router, BEIJING) <= 2.0  # 0.5 s as designed; room for a loaded machine
    listing = json.loads(request(router.http_port, "/x?mirrorlist=json", xff("1.0.16.1")).body)
    tyo = next(c for c in listing["candidates"] if c["id"] == "tyo")  # still visible
    assert (tyo["admin"], tyo["excluded"], tyo["state"]) == ("drain", True, "up")
    assert tyo["reason"] == "drained by the operator: takes no new clients"
    assert listing["location"].startswith(listing["candidates"][0]["file_url"][:20])
    tyo_up = {"service": "downloads", "target": "tyo"}
    assert value(scrape(router), "mirror_router_target_up", **tyo_up) == 0.0  # not served
    assert admin(state, "set", "tyo", "auto", zones=router.zones).returncode == 0
    assert moves(router, TOKYO) <= 2.0
    assert value(scrape(router), "mirror_router_target_up", **tyo_up) == 1.0
    router.wait_for_overrides({})


def test_down_and_forced_up(router, state, city_mirrors):
    set_override(router, state, "downloads/tyo", "down", {"downloads/tyo": "down"})
    moves(router, BEIJING)
    status = json.loads(request(router.http_port, "/status.json").body)
    tyo = next(t for t in status["services"][0]["targets"] if t["id"] == "tyo")
    assert (tyo["admin"], tyo["colour"]) == ("down", "red")
    # forced up: served although its health check fails
    city_mirrors["tyo"].health_status = 503
    try:
        set_override(router, state, "downloads/tyo", "up", {"downloads/tyo": "up"})
        moves(router, TOKYO)
        wait_until(lambda: request(router.http_port, "/status.json").body.count(b'"down"'), 5,
                   what="Tokyo's check to fail")
        assert japan(router) == TOKYO
    finally:
        city_mirrors["tyo"].health_status = 200
        set_override(router, state, "downloads/tyo", "auto", {})
    moves(router, TOKYO, bound=10.0)  # Tokyo's check must pass `rise` times again


def test_a_bad_or_half_written_file_keeps_the_last_good_overrides(router, state):
    set_override(router, state, "tyo", "drain", {"tyo": "drain"})
    moves(router, BEIJING)
    good = state.read_text()
    try:
        for broken in ('[targets]\ntyo = "dr', "", '[targets]\ntyo = "drian"\n'):
            state.write_text(broken)
            seen = len(router.find("state_file_invalid"))
            wait_until(lambda n=seen: len(router.find("state_file_invalid")) > n, 3,
                       what="the bad file to be noticed")
            assert japan(router) == BEIJING  # still drained
            error = router.find("state_file_invalid")[-1]
            assert error["file"] == str(state) and error["keeping"] == {"tyo": "drain"}
        assert "targets.tyo" in error["error"] and "'drian' is not one of" in error["error"]
        status = json.loads(request(router.http_port, "/status.json").body)
        assert status["state_file"]["ok"] is False
        refused = admin(state, "set", "bj", "drain")  # admin will not write over a mistake
        assert refused.returncode == 1 and "not changed: fix the file first" in refused.stderr
    finally:
        state.write_text(good)
    wait_until(lambda: json.loads(request(router.http_port, "/status.json").body)
               ["state_file"]["ok"], 3, what="the fixed file to be read")
    set_override(router, state, "tyo", "auto", {})
    moves(router, TOKYO)


def test_overrides_survive_a_restart(tmp_path, city_mirrors):
    state = tmp_path / "state" / "state.toml"
    state.parent.mkdir()
    assert admin(state, "set", "tyo", "drain").returncode == 0
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    for _ in range(2):
        r = RouterProcess(zones, "--state", str(state))
        try:
            assert japan(r) == BEIJING  # from the very first answer
        finally:
            assert r.stop() == 0


def test_admin_show_and_its_errors(tmp_path):
    state = tmp_path / "state.toml"
    assert "no overrides" in admin(state, "show").stdout
    assert admin(state, "set", "fra", "down").returncode == 0
    assert admin(state, "set", "downloads/bj", "up").returncode == 0
    assert admin(state, "show").stdout.splitlines() == ["downloads/bj\tup", "fra\tdown"]
    bad_state = admin(state, "set", "fra", "sideways")
    assert bad_state.returncode == 2 and "invalid choice: 'sideways'" in bad_state.stderr
    bad_id = admin(state, "set", "a b", "down")
    assert bad_id.returncode == 1 and "is not a target id or service/id" in bad_id.stderr
    unknown = admin(state, "set", "nope", "drain", zones=ROOT / "zones")
    assert unknown.returncode == 1 and "nope: no such target" in unknown.stderr
    assert admin(state, "show").stdout.splitlines() == ["downloads/bj\tup", "fra\tdown"]


def test_admin_checks_ids_against_the_zones_by_default(tmp_path):
    state = tmp_path / "state.toml"
    plain = [sys.executable, "-m", "router", "admin", "--state", str(state), "set"]
    typo = subprocess.run([*plain, "googel", "drain"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)  # ./zones: the example zone
    assert typo.returncode == 1 and "googel: no such target in zones" in typo.stderr
    assert not state.exists()
    known = subprocess.run([*plain, "google", "drain"], cwd=ROOT, capture_output=True,
                           text=True, timeout=30)
    assert known.returncode == 0, known.stderr
    assert admin(state, "show").stdout.splitlines() == ["google\tdrain"]


def test_admin_never_creates_the_state_folder(tmp_path):
    state = tmp_path / "var" / "lib" / "mirror-router" / "state.toml"
    done = admin(state, "set", "tyo", "drain")
    assert done.returncode == 1
    assert f"{state.parent}: no such folder" in done.stderr
    assert not (tmp_path / "var").exists()


def test_default_state_file_follows_systemd():
    assert default_path(lambda _: None) is None
    assert str(default_path({"STATE_DIRECTORY": "/var/lib/mirror-router"}.get)) == \
        "/var/lib/mirror-router/state.toml"


def test_a_scheduled_drain_starts_and_ends_on_time(router, state):
    """admin set tyo drain --from T --until T+3s: Japan moves off Tokyo at T and back at
    T+3s (each within the poll and a loaded machine's room), /status lists the window
    while it is coming and while it holds, admin show says which, and it is gone after."""
    start = int(time.time()) + 3
    window = (f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start))}",
              f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start + 3))}")
    done = admin(state, "set", "tyo", "drain", "--from", window[0], "--until", window[1],
                 zones=router.zones)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tyo: drain from {window[0]} until {window[1]} in {state}"
    assert "(coming)" in admin(state, "show").stdout
    wait_until(lambda: json.loads(request(router.http_port, "/status.json").body)["windows"],
               3, what="the window on /status")
    assert japan(router) == TOKYO  # not yet
    wait_until(lambda: japan(router) == BEIJING, start + 2.0 - time.time(), interval=0.02,
               what="the drain to start")
    began = time.time() - start
    assert "(now)" in admin(state, "show").stdout
    page = request(router.http_port, "/status").body.decode()
    assert "Maintenance windows: tyo drain" in page and "(now)" in page
    wait_until(lambda: japan(router) == TOKYO, start + 3 + 2.0 - time.time(), interval=0.02,
               what="the drain to end")
    ended = time.time() - (start + 3)
    assert -0.05 <= began <= 2.0 and -0.05 <= ended <= 2.0, (began, ended)
    started, finished = router.wait_for("window_started"), router.wait_for("window_ended")
    assert started["target"] == "tyo" and 0 <= started["late_s"] <= 1.0
    assert finished["target"] == "tyo" and 0 <= finished["late_s"] <= 1.0
    assert json.loads(request(router.http_port, "/status.json").body)["windows"] == []


@pytest.mark.parametrize(("args", "reason"), [
    (("--from", "+1h"), "needs both --from and --until"),
    (("--from", "+2h", "--until", "+1h"), "is not after --from"),
    (("--from", "2026-13-01T00:00Z", "--until", "+1h"), "is not a date"),
])
def test_a_bad_window_is_refused_with_the_reason(tmp_path, args, reason):
    state = tmp_path / "state.toml"
    done = admin(state, "set", "tyo", "drain", *args)
    assert done.returncode == 1 and reason in done.stderr, done.stderr
    assert not state.exists()
