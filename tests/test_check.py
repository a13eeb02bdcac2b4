"""One timed health check (``router.watch.check``) against real loopback mirrors, one over HTTPS
with a certificate from a throw-away CA, so that TLS verification is real."""

from __future__ import annotations

import asyncio

import pytest

from router import __version__
from router.core.checks import probes
from router.core.config import Config, HealthCheck, Kind, Service, Target, Zone
from router.core.health import Board, Result, Status
from router.watch import kinds
from router.watch.check import USER_AGENT, check_once, new_session
from router.watch.prober import Prober
from tests.tls import make_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure(farm, pki):
    return farm.mirror("secure", tls=pki.server_context(), host="localhost")


@pytest.fixture(scope="module")
def plain(farm):
    return farm.mirror("plain")


def check(url: str, ca=None, **kw) -> Result:
    async def run() -> Result:
        async with new_session(ca) as session:
            return await check_once(session, url, HealthCheck(timeout=kw.pop("timeout", 3.0),
                                                              **kw))
    return asyncio.run(run())


def test_https_check_times_every_phase_in_order(secure, pki):
    secure.delay = 0.2
    try:
        r = check(secure.base + "/health", pki.ca)
    finally:
        secure.delay = 0.0
    assert r.ok and r.http_status == 200 and r.error is None
    p = r.phases
    assert p is not None and p.tls is not None
    assert 0 < p.dns <= p.connect < p.tls <= p.sent < p.ttfb <= p.total  # a real lookup
    assert 0.2 <= p.ttfb < 2.0 and 0.2 <= p.wait <= p.ttfb - p.sent  # the server's delay
    assert r.ttfb == p.ttfb and r.total == p.total


def test_plain_http_has_no_tls_phase(plain):
    r = check(plain.base + "/health")
    assert r.ok and r.phases is not None
    assert r.phases.tls is None and r.phases.dns == 0.0  # an IP literal: no lookup
    assert r.phases.connect <= r.phases.sent <= r.phases.ttfb


def test_verification_is_real_without_the_ca(secure):
    r = check(secure.base + "/health")
    assert not r.ok and r.phases is None
    assert "CERTIFICATE_VERIFY_FAILED" in r.error


def test_user_agent_names_the_router_and_its_version(plain):
    plain.agents.clear()
    check(plain.base + "/health")
    assert plain.agents == [USER_AGENT]
    assert USER_AGENT.startswith(f"mirror-router/{__version__} ")


@pytest.mark.parametrize(("status", "expect", "ok"), [
    (200, ((200, 399),), True),
    (302, ((200, 399),), True),
    (404, ((200, 399),), False),
    (503, ((200, 399),), False),
    (404, ((404, 404),), True),
    (204, ((200, 200),), False),
])
def test_expect_status(plain, status, expect, ok):
    plain.health_status = status
    try:
        r = check(plain.base + "/health", expect_status=expect)
    finally:
        plain.health_status = 200
    assert (r.ok, r.http_status) == (ok, status)
    assert r.error == (None if ok else f"HTTP {status}")


def test_expect_body_reads_the_first_64_kib(plain):
    plain.body = "x" * 60_000 + "mirror ok" + "y" * 10_000 + "too late"
    try:
        assert check(plain.base + "/health", expect_body="mirror ok").ok
        late = check(plain.base + "/health", expect_body="too late")
    finally:
        plain.body = "plain\n"
    assert not late.ok and late.error == "body lacks 'too late'"
    assert late.phases is not None  # timed all the same


def test_a_timeout_is_a_failure_with_a_reason(plain):
    plain.delay = 1.0
    try:
        r = check(plain.base + "/health", timeout=0.2)
    finally:
        plain.delay = 0.0
    assert not r.ok and r.error == "timeout after 0.2s"


def test_every_kind_of_check_has_a_checker_and_the_prober_runs_it(farm):
    """The seam (``core.checks.Checker``): each ``health.kind`` has its checker in
    ``watch.kinds``, and a prober checks a real mirror with the kind its config names."""
    assert set(kinds.KINDS) == set(Kind)
    mirror = farm.mirror("kinds")
    zone = Config((Zone("k.example.", ("ns1.k.example.",), "h.k.example.", services=(
        Service("s", "k.example.", (Target("m", None, url=mirror.base + "/",
                                           health_url=mirror.base + "/health"),),
                health=HealthCheck(kind=Kind.HTTP, timeout=2.0)),)),))
    assert [p.check.kind for p in probes(zone)] == [Kind.HTTP]
    board = Board()

    async def run() -> None:
        prober = Prober(board)
        await prober.start(zone)
        await prober.first_round()
        await prober.close()

    asyncio.run(run())
    health = board.snapshot.get("s", "m")
    assert health.status is Status.UP and health.last is not None and health.last.ok
