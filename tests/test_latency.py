"""Latency in the cost, and the config keys of issue 5: pure, table-driven.

The health board publishes each target's server wait quantized (10 ms steps, with
hysteresis); ``rank()`` charges ``km_per_ms`` per millisecond above the fastest usable
target. The generation bumps only when a published figure (or a status) changes.
"""

from __future__ import annotations

import pytest

from router.core.config import (
    DEFAULT_KM_PER_MS,
    PASSING,
    ConfigError,
    HealthCheck,
    ServerConfig,
)
from router.core.health import (
    LATENCY_STEP_MS,
    Board,
    Health,
    Phases,
    Result,
    Status,
    observe,
    quantize,
)
from router.core.steering import Standing, Want, rank
from router.core.zonefile import load_server
from tests.test_config import problems_of, service_of, write, zone_toml
from tests.test_steering import client, service, target


def phases(wait_ms: float, rtt_ms: float = 2.0, tls_ms: float | None = None) -> Phases:
    """A check that waited ``wait_ms`` on the server, ``rtt_ms`` away."""
    dns = 0.001
    connect = dns + rtt_ms / 1000
    tls = None if tls_ms is None else connect + tls_ms / 1000
    sent = tls or connect
    ttfb = sent + (rtt_ms + wait_ms) / 1000
    return Phases(dns, connect, tls, sent, ttfb, ttfb + 0.001)


def test_wait_removes_one_round_trip_whatever_the_distance():
    for rtt in (0.1, 30.0, 250.0):
        for tls in (None, 3 * rtt):
            assert phases(120.0, rtt, tls).wait == pytest.approx(0.120)
    # a negative estimate (the connect was slower than the request) counts as no wait
    assert Phases(0.0, 0.5, None, 0.5, 0.6, 0.7).wait == 0.0


@pytest.mark.parametrize(("published", "seconds", "expected"), [
    (None, None, None),     # no figure, none published
    (None, 0.004, 0),       # first figure: nearest step
    (None, 0.006, 10),
    (None, 0.8, 800),
    (0, 0.0074, 0),         # within the hysteresis band: unchanged
    (0, 0.0076, 10),
    (10, 0.0026, 10),
    (10, 0.0024, 0),
    (800, 0.795, 800),
    (800, 0.400, 400),
    (30, None, 30),         # no new figure: keep the published one
])
def test_quantize_with_hysteresis(published, seconds, expected):
    assert quantize(seconds, published) == expected


def test_generation_bumps_when_the_published_latency_changes_only():
    board, check, key = Board(), HealthCheck(rise=1, fall=1), ("dl", "a")
    waits = [0.001, 0.003, 0.002, 0.800, 0.790, 0.020, 0.005, 0.001]
    seen = []
    for i, wait in enumerate(waits):
        before = board.snapshot.generation
        board.record(key, Result(ok=True, at=float(i), phases=phases(wait * 1000)), check)
        seen.append((board.snapshot.get(*key).latency_ms, board.snapshot.generation - before))
    # the first result is a status change; noise around 0 ms never bumps
    assert seen[:3] == [(0, 1), (0, 0), (0, 0)]
    assert seen[3][0] == 400 and seen[3][1] == 1  # EWMA 0.5: half-way to 800 ms
    assert all(ms % LATENCY_STEP_MS == 0 for ms, _ in seen)
    assert sum(b for _, b in seen) == 1 + len({ms for ms, _ in seen[2:]}) - 1


def test_failures_do_not_move_the_latency_figures():
    h = observe(Health(), Result(ok=True, at=1, phases=phases(100)), HealthCheck())
    after = observe(h, Result(ok=False, at=2, error="HTTP 500", phases=phases(900)),
                    HealthCheck())
    assert (after.wait_ewma, after.latency_ms) == (h.wait_ewma, h.latency_ms)
    assert h.latency_ms == 100 and h.wait_ewma == pytest.approx(0.1)


def test_snapshot_latency_view():
    board = Board()
    board.record(("dl", "a"), Result(ok=True, at=1, phases=phases(800)), HealthCheck())
    view = board.snapshot.latency("dl")
    assert view("a") == 800 and view("b") is None
    assert board.snapshot.latency("other")("a") is None


# ---------------------------------------------------------------- steering

NEAR = target("near", "frankfurt", "DE")
FAR = target("far", "london", "GB")  # 637 km further from a Frankfurt client


def ranked(latency: dict[str, int], **kw: float) -> list[tuple[str, float]]:
    svc = service(NEAR, FAR, **kw)
    d = rank(svc, client("frankfurt", "DE"), lambda t: Status.UP, Want.ANY,
             latency=latency.get)
    return [(c.target.id, round(c.latency_km)) for c in d.ranked]


@pytest.mark.parametrize(("latency", "expected"), [
    ({}, [("near", 0), ("far", 0)]),                           # no figures: distance only
    ({"near": 20, "far": 20}, [("near", 0), ("far", 0)]),      # equally fast: distance only
    ({"near": 0}, [("near", 0), ("far", 0)]),                  # far has no figure: no penalty
    ({"near": 10, "far": 0}, [("far", 0), ("near", 1000)]),    # 10 ms = 1,000 km > ~640 km
    ({"near": 800, "far": 0}, [("far", 0), ("near", 80000)]),
    ({"near": 0, "far": 800}, [("near", 0), ("far", 80000)]),
    ({"near": 4990, "far": 5000}, [("near", 0), ("far", 1000)]),  # relative to the fastest
])
def test_latency_term_is_km_per_ms_above_the_fastest(latency, expected):
    assert ranked(latency) == expected


def test_km_per_ms_is_a_service_key_and_zero_turns_latency_off():
    assert DEFAULT_KM_PER_MS == 100.0
    assert ranked({"near": 800, "far": 0}, km_per_ms=0.0) == [("near", 0), ("far", 0)]
    assert ranked({"near": 10, "far": 0}, km_per_ms=50.0) == [("near", 500), ("far", 0)]
    assert ranked({"near": 10, "far": 0}, km_per_ms=70.0) == [("far", 0), ("near", 700)]


def test_the_fastest_is_taken_among_usable_targets_only():
    svc = service(NEAR, FAR)
    down_fast = rank(svc, client("frankfurt", "DE"),
                     lambda t: Status.DOWN if t == "far" else Status.UP, Want.ANY,
                     latency={"near": 300, "far": 0}.get)
    (only,) = down_fast.ranked
    assert (only.target.id, only.latency_km, only.standing) == ("near", 0.0, Standing.NEAREST)
    (excluded,) = down_fast.excluded
    assert excluded.latency_ms == 0


def test_weight_divides_the_latency_term_too():
    heavy = target("near", "frankfurt", "DE", weight=200)
    d = rank(service(heavy, FAR), client("frankfurt", "DE"), lambda t: Status.UP, Want.ANY,
             latency={"near": 100, "far": 0}.get)
    near = next(c for c in d.ranked if c.target.id == "near")
    assert near.latency_km == 10_000 and near.cost == pytest.approx(
        (near.distance_km + 10_000) / 2)


# ---------------------------------------------------------------- config keys


def test_health_expectations_and_km_per_ms_defaults(tmp_path):
    svc = service_of(tmp_path)
    assert svc.km_per_ms == DEFAULT_KM_PER_MS
    assert svc.health.expect_status == PASSING and svc.health.expect_body is None
    assert svc.health.passes(204) and svc.health.passes(302) and not svc.health.passes(404)


@pytest.mark.parametrize(("literal", "ranges"), [
    ("200", ((200, 200),)),
    ('"200-299"', ((200, 299),)),
    ('[200, "300 - 304"]', ((200, 200), (300, 304))),
])
def test_expect_status_forms(tmp_path, literal, ranges):
    svc = service_of(tmp_path, ('timeout = "3s"', f'timeout = "3s", expect_status = {literal},'
                                                  ' expect_body = "ok"'),
                     ("ttl = 30", "ttl = 30\nkm_per_ms = 50"))
    assert svc.health.expect_status == ranges and svc.health.expect_body == "ok"
    assert svc.km_per_ms == 50.0


@pytest.mark.parametrize(("edit", "key", "reason"), [
    (('timeout = "3s"', 'timeout = "3s", expect_status = 700'), "services.dl.health.expect_status",
     "700 is not an HTTP status (100 to 599)"),
    (('timeout = "3s"', 'timeout = "3s", expect_status = "299-200"'),
     "services.dl.health.expect_status", "the range is backwards"),
    (('timeout = "3s"', 'timeout = "3s", expect_status = ["2xx"]'),
     "services.dl.health.expect_status", "item 1 ('2xx'): '2xx' is not a status or a range"),
    (('timeout = "3s"', 'timeout = "3s", expect_status = []'),
     "services.dl.health.expect_status", "must not be empty"),
    (('timeout = "3s"', 'timeout = "3s", expect_body = ""'), "services.dl.health.expect_body",
     "must be 1 to 1024 characters long"),
    (("ttl = 30", "ttl = 30\nkm_per_ms = -1"), "services.dl.km_per_ms",
     "must be between 0 and 40000, not -1"),
])
def test_bad_new_keys_name_file_key_and_reason(tmp_path, edit, key, reason):
    path = write(tmp_path, zone_toml(edit))
    (problem,) = problems_of(tmp_path)
    assert (problem.file, problem.key) == (str(path), key)
    assert reason in problem.reason


def test_server_tls_ca_is_relative_to_the_settings_file(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    path = tmp_path / "server.toml"
    path.write_text('[server]\ntls_ca = "ca.pem"\n')
    assert load_server(path) == ServerConfig(tls_ca=tmp_path / "ca.pem")
    path.write_text('[server]\ntls_ca = "missing.pem"\n')
    with pytest.raises(ConfigError) as info:
        load_server(path)
    (problem,) = info.value.problems
    assert (problem.key, problem.reason) == (  # where it was looked for
        "server.tls_ca", f"'missing.pem': no such file ({tmp_path / 'missing.pem'})")
