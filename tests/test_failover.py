"""Health-driven failover, black-box: real loopback mirrors go down and come back.

The test zone probes every 500 ms with a 500 ms timeout, rise 2, fall 2. A target must
leave the answers within fall x interval + timeout + 1 s of failing, and come back within
rise x interval + 1 s of recovering, with no failed query in between.
"""

from __future__ import annotations

import time

import dns.rcode
import pytest

from tests.harness import wait_until
from tests.test_dns import ZONE, addresses, ask

INTERVAL, TIMEOUT, RISE, FALL = 0.5, 0.5, 2, 2
DOWN_BOUND = FALL * INTERVAL + TIMEOUT + 1.0
UP_BOUND = RISE * INTERVAL + 1.0
JAPAN = ("1.0.16.0", 24)
GERMANY = ("5.9.0.0", 16)


def _answer_never_fails(router, subnet):
    """One query; it must succeed with exactly one address, whatever the health."""
    msg = ask(router, ZONE, "A", ecs=subnet)
    assert msg.rcode() == dns.rcode.NOERROR
    found = addresses(msg)
    assert len(found) == 1, msg
    return found[0], msg.answer[0].ttl


def _moves_to(router, subnet, expected, bound):
    started = time.monotonic()
    wait_until(lambda: _answer_never_fails(router, subnet)[0] == expected, bound,
               what=f"{subnet} to be answered {expected}")
    return time.monotonic() - started


@pytest.mark.timing
def test_tokyo_down_and_back(five_cities, city_mirrors):
    tokyo = city_mirrors["tyo"]
    assert _answer_never_fails(five_cities, JAPAN)[0] == "192.0.2.2"
    tokyo.stop()  # connection refused from now on
    try:
        took = _moves_to(five_cities, JAPAN, "192.0.2.1", DOWN_BOUND)  # Beijing, next nearest
    finally:
        tokyo.start()
    assert took <= DOWN_BOUND
    back = _moves_to(five_cities, JAPAN, "192.0.2.2", UP_BOUND)
    assert back <= UP_BOUND

    def logged() -> set[tuple[str, str, str]]:
        return {(e["target"], e["old"], e["new"]) for e in five_cities.find("target_state")}

    # The log line is read by another thread: it may land just after the answer changed.
    wait_until(lambda: {("tyo", "up", "suspect"), ("tyo", "suspect", "down"),
                        ("tyo", "down", "up")} <= logged(), 5, what="the state changes logged")


@pytest.mark.timing
def test_a_hanging_mirror_is_down_after_the_timeout(five_cities, city_mirrors):
    frankfurt = city_mirrors["fra"]
    assert _answer_never_fails(five_cities, GERMANY)[0] == "192.0.2.3"
    frankfurt.delay = 3.0  # every check now times out
    try:
        _moves_to(five_cities, GERMANY, "192.0.2.4", DOWN_BOUND)  # Ashburn is next nearest
    finally:
        frankfurt.delay = 0.0
    _moves_to(five_cities, GERMANY, "192.0.2.3", UP_BOUND + TIMEOUT)
    downs = [e for e in five_cities.find("target_state")
             if e["target"] == "fra" and e["new"] == "down"]
    assert downs and "timeout" in downs[0]["error"]
    # which URL was checked, and a warning (a mirror going down was logged at info)
    assert downs[0]["url"] == frankfurt.base + "/health" and downs[0]["level"] == "warning"


@pytest.mark.timing
def test_an_http_error_status_counts_as_down(five_cities, city_mirrors):
    beijing = city_mirrors["bj"]
    china = ("202.106.0.0", 24)
    beijing.health_status = 503
    try:
        _moves_to(five_cities, china, "192.0.2.2", DOWN_BOUND)  # Tokyo
    finally:
        beijing.health_status = 200
    _moves_to(five_cities, china, "192.0.2.1", UP_BOUND)


@pytest.mark.timing
def test_all_down_fails_open_with_a_short_ttl(five_cities, city_mirrors):
    for m in city_mirrors.values():
        m.health_status = 503
    try:
        def degraded():
            address, ttl = _answer_never_fails(five_cities, JAPAN)
            return ttl == 1 and address
        # on_all_down defaults to "all" (fail open): still the nearest, but a 1 s TTL
        # (the probe interval) so that resolvers come back soon.
        assert wait_until(degraded, DOWN_BOUND, what="degraded answer") == "192.0.2.2"
    finally:
        for m in city_mirrors.values():
            m.health_status = 200
    wait_until(lambda: _answer_never_fails(five_cities, JAPAN)[1] == 30, UP_BOUND,
               what="healthy answer")


# ---------------------------------------------------------------- suspect: fast failover

SLOW, FAST, FALL3, TIMEOUT_FAST = 5.0, 0.3, 3, 0.5


@pytest.fixture(scope="module")
def fast_failover(tmp_path_factory, farm):
    from tests.conftest import write_zone
    from tests.harness import RouterProcess, five_city_zone
    mirrors = {tid: farm.mirror(tid) for tid in ("bj", "tyo", "fra", "iad", "gru")}
    zone = five_city_zone(mirrors, interval=f"{SLOW}s", timeout=f"{TIMEOUT_FAST}s", fall=FALL3,
                          suspect_interval=f"{FAST}s")
    router = RouterProcess(write_zone(tmp_path_factory.mktemp("zones"), zone),
                           "--trusted-proxy", "127.0.0.1/32")
    yield router, mirrors
    assert router.stop() == 0


@pytest.mark.timing
def test_a_dead_mirror_is_out_within_fall_fast_checks_of_its_first_failure(fast_failover):
    """The normal interval (5 s) is over ten times the suspect interval (0.3 s): after the
    first failed check the next come every 0.3 s, so fall = 3 failures take about 0.6 s
    more, not 10 s. Measured from the first failed check (logged as up -> suspect)."""
    from tests.test_http import FILE, request, xff
    router, mirrors = fast_failover
    tokyo = mirrors["tyo"]
    assert _answer_never_fails(router, JAPAN)[0] == "192.0.2.2"
    seen = len(router.find("target_state"))
    tokyo.stop()
    try:
        router.wait_for("target_state", SLOW + 2, count=seen + 1)  # the first failure
        suspected = time.monotonic()
        event = router.find("target_state")[seen]
        assert (event["target"], event["old"], event["new"]) == ("tyo", "up", "suspect")
        took = _moves_to(router, JAPAN, "192.0.2.1", FALL3 * FAST + TIMEOUT_FAST + 1.0)
        r = request(router.http_port, "/" + FILE, xff("1.0.16.1"))
        assert "/dl/" in r.location and mirrors["bj"].base in r.location
        assert time.monotonic() - suspected <= FALL3 * FAST + TIMEOUT_FAST + 1.0, took
        status = [e for e in router.find("target_state") if e["target"] == "tyo"]
        assert [(e["old"], e["new"]) for e in status][-2:] == [("up", "suspect"),
                                                             ("suspect", "down")]
    finally:
        tokyo.start()
