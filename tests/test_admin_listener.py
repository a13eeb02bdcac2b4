"""``serve --admin HOST:PORT``, black-box: health, metrics and status on a private
listener and off the public one; no version in any ``Server`` header."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone
from tests.test_http import request, xff

PAGES = ["/metrics", "/status", "/status.json", "/healthz", "/readyz"]


@pytest.fixture(scope="module", params=["1", "2"], ids=["single", "workers"])
def private(request, tmp_path_factory, city_mirrors):
    zones = write_zone(tmp_path_factory.mktemp("zones"), five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--admin", "127.0.0.1:0", "--workers", request.param,
                           "--trusted-proxy", "127.0.0.1/32")
    yield router
    assert router.stop() == 0


@pytest.mark.parametrize("path", PAGES)
def test_the_pages_are_on_the_admin_listener(private, path):
    r = request(private.admin_port, path)
    assert r.status == 200, r.status
    assert r.headers["Server"] == "mirror-router"


def test_metrics_on_the_admin_listener_are_prometheus_text(private):
    body = request(private.admin_port, "/metrics").body.decode()
    assert "mirror_router_target_up{" in body


@pytest.mark.parametrize("path", PAGES)
def test_the_pages_are_not_on_the_public_listener(private, path):
    r = request(private.http_port, path, xff("1.0.16.1"))
    assert r.status == 302  # an ordinary path, redirected to a mirror
    assert r.location.endswith("/dl" + path) and b"mirror_router_" not in r.body


def test_downloads_are_not_on_the_admin_listener(private):
    assert request(private.admin_port, "/go1.22.5.linux-amd64.tar.gz").status == 404


def test_no_server_header_names_a_version(private):
    seen = [request(private.http_port, "/x", xff("1.0.16.1")),  # 302
            request(private.http_port, "/a/../b"),  # 400, ours
            request(private.admin_port, "/nope"),  # 404, aiohttp's
            request(private.http_port, "/x", method="DELETE")]  # 405
    assert [r.status for r in seen] == [302, 400, 404, 405]
    assert {r.headers["Server"] for r in seen} == {"mirror-router"}
    with socket.create_connection(("127.0.0.1", private.http_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")  # aiohttp's own 400
        head = s.recv(4096).decode("latin-1")
    assert " 400 Bad Request" in head.split("\r\n")[0] and "Server: mirror-router\r\n" in head
    assert "aiohttp" not in head and "Python" not in head
