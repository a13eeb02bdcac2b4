"""Bounded resources, black-box: idle keep-alive connections are closed, requests with
too many or too large header lines are refused, and the DNS UDP buffer is asked for."""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone, wait_until


@pytest.fixture(scope="module")
def limited(tmp_path_factory, city_mirrors):
    zones = write_zone(tmp_path_factory.mktemp("zones"), five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--keepalive", "1")
    yield router
    assert router.stop() == 0


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        return s.recv(65536)


@pytest.mark.timing
def test_an_idle_keepalive_connection_is_closed(limited):
    with socket.create_connection(("127.0.0.1", limited.http_port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        idle = time.monotonic()
        assert s.recv(4096) == b""  # the server hung up ...
        assert time.monotonic() - idle < 1.0 + 5.0  # ... after --keepalive 1, not an hour


def test_too_many_header_lines_are_refused(limited):
    headers = b"".join(b"X-%d: y\r\n" % i for i in range(41))
    reply = _exchange(limited.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers
                      + b"\r\n")
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"431")
    ok = b"".join(b"X-%d: y\r\n" % i for i in range(30))
    assert _exchange(limited.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + ok
                     + b"\r\n").startswith(b"HTTP/1.1 200")


def test_a_header_line_over_4_kib_is_refused(limited):
    big = b"X-Big: " + b"a" * 5000 + b"\r\n"
    reply = _exchange(limited.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big
                      + b"\r\n")
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"431")
    assert _exchange(limited.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     ).startswith(b"HTTP/1.1 200")  # and the server goes on


def test_the_udp_receive_buffer_is_asked_for_and_the_log_says_what_was_given(limited):
    (line,) = limited.find("udp_receive_buffer")
    assert line["asked"] == 4 << 20 and line["granted"] > 0
    assert line["capped"] is (line["granted"] < line["asked"])


def test_malformed_requests_log_one_json_line_and_then_a_count(limited):
    """aiohttp's report of a malformed request goes through structlog (one JSON line, no
    traceback), and the same report again within 10 s is counted, not written."""
    bad = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
    for _ in range(30):
        _exchange(limited.http_port, bad)
    def reports() -> list[dict]:
        return [e for e in limited.find("Error handling request from 127.0.0.1")
                if "Invalid header token" in e.get("error", "")]
    wait_until(reports, 10, what="the report of the malformed request")
    assert len(reports()) == 1
    first = reports()[0]
    assert first["logger"] == "aiohttp.server" and "exception" not in first
    assert all(line.startswith("{") for line in limited.raw)  # every line is JSON

    def counted() -> bool:
        _exchange(limited.http_port, bad)
        later = reports()
        return len(later) > 1 and later[-1].get("suppressed", 0) >= 29
    wait_until(counted, 30, interval=0.5, what="the next report with the count")


def test_the_rate_limit_counts_what_it_drops():
    from router.log import RateLimit
    now = [0.0]
    limit = RateLimit(quiet=10.0, clock=lambda: now[0])
    assert limit.admit("a", "boom") == 0  # the first: written
    assert [limit.admit("a", "boom") for _ in range(3)] == [None, None, None]
    assert limit.admit("a", "other") == 0  # another kind: written
    now[0] = 10.5
    assert limit.admit("a", "boom") == 3  # written, with the count left out
    assert limit.admit("a", "boom") is None


def test_a_zone_file_that_hangs_stops_nothing(tmp_path, city_mirrors):
    """A FIFO in place of the zone file: the reload's read hangs in a thread of its own;
    DNS and HTTP go on with the old config, and the process still stops at once."""
    import os
    import signal

    from tests.test_dns import ZONE, addresses, ask
    from tests.test_http import request
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones)
    try:
        (zones / "test.example.com.toml").unlink()
        os.mkfifo(zones / "test.example.com.toml")  # opening it for reading blocks
        router.signal(signal.SIGHUP)
        for _ in range(20):  # served all along, by the old config
            assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.2"]
            assert request(router.http_port, "/healthz").status == 200
    finally:
        assert router.stop(timeout=15) == 0  # the hung read does not hold the exit
