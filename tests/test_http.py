"""The HTTP redirector, black-box: a real router, real loopback mirrors, independent clients
(http.client from the stdlib, raw sockets, curl)."""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest

from tests.conftest import write_zone
from tests.harness import CITIES, RouterProcess, wait_until
from tests.test_failover import DOWN_BOUND, UP_BOUND

FILE = "go1.22.5.linux-amd64.tar.gz"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    @property
    def links(self) -> list[str]:
        return self.headers.get_all("Link") or []


def request(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            source: str | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def raw_request(port: int, data: bytes) -> int:
    """Send raw bytes; return the status code of the reply (0 if the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split()[1]) if reply.startswith(b"HTTP/") else 0


def xff(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def file_url(mirrors, tid: str, name: str = FILE) -> str:
    return f"{mirrors[tid].base}/dl/{name}"


# X-Forwarded-For → the cities by great-circle distance from GeoLite2's point for it, worked
# out by the spherical law of cosines (km in comments): the first is the Location, the
# rest are the Link alternates in order.
NEAREST = [
    ("1.0.16.1", ["tyo", "bj", "fra", "iad", "gru"]),       # 6, 2098, 9335, 10869, 18532
    ("5.9.0.1", ["fra", "iad", "bj", "tyo", "gru"]),        # 144, 6545, 7654, 9194, 9959
    ("202.106.0.20", ["bj", "tyo", "fra", "iad", "gru"]),   # 3, 2095, 7778, 11121, 17596
    ("8.8.8.8", ["iad", "fra", "gru", "tyo", "bj"]),        # 1774, 7894, 8662, 9930, 10702
    ("200.160.0.1", ["gru", "iad", "fra", "bj", "tyo"]),    # 358, 7749, 9580, 17317, 18559
    ("41.0.0.1", ["gru", "fra", "bj", "iad", "tyo"]),       # 7459, 8663, 11666, 13082, 13503
    ("2001:200::1", ["tyo", "bj", "fra", "iad", "gru"]),    # 13, 2082, 9329, 10880, 18543
]


@pytest.mark.parametrize(("client", "order"), NEAREST, ids=[c for c, _ in NEAREST])
def test_redirect_goes_to_the_nearest_healthy_mirror(five_cities, city_mirrors, client, order):
    r = request(five_cities.http_port, "/" + FILE, xff(client))
    assert r.status == 302
    assert r.location == file_url(city_mirrors, order[0])
    assert r.headers["Cache-Control"] == "private, no-store"
    expected = [f"<{file_url(city_mirrors, tid)}>; rel=duplicate; pri={i}; "
                f"geo={CITIES[tid][3].lower()}" for i, tid in enumerate(order[1:], 1)]
    assert r.links == expected  # the next-ranked mirrors, in order (link_alternates = 4)
    assert r.body == b""


def test_head_is_answered_like_get(five_cities, city_mirrors):
    r = request(five_cities.http_port, "/" + FILE, xff("1.0.16.1"), method="HEAD")
    assert r.status == 302 and r.location == file_url(city_mirrors, "tyo")


def test_headers_from_an_untrusted_peer_change_nothing(five_cities, city_mirrors):
    # 127.0.0.2 is not a trusted proxy: it is the client, and unlocated (default: Ashburn).
    for client, _order in NEAREST:
        r = request(five_cities.http_port, "/" + FILE, {
            "X-Forwarded-For": client, "Forwarded": f'for="{client}"'}, source="127.0.0.2")
        assert r.location == file_url(city_mirrors, "iad")
    warned = five_cities.find("forwarded_from_untrusted_peer")
    assert len(warned) == 1 and warned[0]["peer"] == "127.0.0.2"  # once, naming the peer
    assert "trusted_proxies" in warned[0]["hint"]


@pytest.mark.parametrize(("headers", "city"), [
    # (no proto=https: an HTTPS client is never sent to these http:// mirrors,
    # tests/test_downgrade.py)
    ({"Forwarded": 'for="[2001:200::1]:4711";proto=http'}, "tyo"),
    ({"Forwarded": "for=5.9.0.1, for=127.0.0.1"}, "fra"),      # a trusted hop is skipped
    ({"X-Forwarded-For": "1.0.16.1, 127.0.0.1"}, "tyo"),       # a trusted hop is skipped
    ({"X-Forwarded-For": "8.8.8.8, 1.0.16.1"}, "tyo"),         # spoofed left hop: not read
    ({"X-Forwarded-For": "garbage, 202.106.0.20"}, "bj"),
    ({"X-Forwarded-For": "unknown"}, "iad"),                   # cannot name it: the proxy
    ({}, "iad"),                                               # 127.0.0.1 itself: unlocated
])
def test_forwarded_headers_are_walked_from_the_right(five_cities, city_mirrors, headers, city):
    r = request(five_cities.http_port, "/" + FILE, headers)
    assert r.location == file_url(city_mirrors, city)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_curl_follows_the_redirect_and_gets_the_file_byte_for_byte(five_cities, city_mirrors,
                                                                   tmp_path):
    body = os.urandom(3 * 1024 * 1024 + 17)
    city_mirrors["tyo"].files["/dl/" + FILE] = body
    out = tmp_path / FILE
    done = subprocess.run(["curl", "-sSfL", "-H", "X-Forwarded-For: 1.0.16.1", "-o", str(out),
                           "-w", "%{url_effective} %{num_redirects}",
                           f"http://127.0.0.1:{five_cities.http_port}/{FILE}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{file_url(city_mirrors, 'tyo')} 1"
    assert out.read_bytes() == body
    assert "/dl/" + FILE in city_mirrors["tyo"].hits


def test_mirrorlist_json_agrees_with_the_redirect(five_cities, city_mirrors):
    redirect = request(five_cities.http_port, "/" + FILE, xff("41.0.0.1"))
    listing = request(five_cities.http_port, f"/{FILE}?mirrorlist=json", xff("41.0.0.1"))
    assert listing.status == 200
    data = json.loads(listing.body)
    assert data["candidates"][0]["file_url"] == redirect.location == data["location"]
    assert data["links"] == redirect.links
    assert [c["id"] for c in data["candidates"]] == ["gru", "fra", "bj", "iad", "tyo"]
    first = data["candidates"][0]
    assert first["state"] == "up" and first["country"] == "BR"
    assert 7000 < first["distance_km"] < 7600 and first["cost"] == first["distance_km"]
    assert first["reason"] == "lowest cost"
    assert data["client"]["country"] == "ZA" and data["client_address"] == "41.0.0.1"
    by_accept = request(five_cities.http_port, f"/{FILE}?mirrorlist",
                        {**xff("41.0.0.1"), "Accept": "application/json"})
    assert json.loads(by_accept.body)["location"] == redirect.location


def test_mirrorlist_shows_this_clients_figures_when_another_shares_its_outcome(five_cities):
    """Clients with the same ranking share a cached entry (router.http.decisions); the
    mirrorlist still gives each its own location and distances."""
    for address in ("41.0.0.1", "41.1.0.1"):  # Pretoria, then the middle of South Africa
        assert request(five_cities.http_port, "/" + FILE, xff(address)).status == 302
    pretoria, middle = (
        json.loads(request(five_cities.http_port, f"/{FILE}?mirrorlist=json", xff(a)).body)
        for a in ("41.0.0.1", "41.1.0.1"))
    assert [c["id"] for c in pretoria["candidates"]] == [c["id"] for c in middle["candidates"]]
    assert pretoria["client"]["network"] != middle["client"]["network"]
    assert pretoria["candidates"][0]["distance_km"] != middle["candidates"][0]["distance_km"]
    assert middle["client_address"] == "41.1.0.1"


def test_mirrorlist_html_lists_every_mirror(five_cities):
    r = request(five_cities.http_port, f"/{FILE}?mirrorlist", xff("1.0.16.1"))
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    page = r.body.decode()
    assert all(f"<td>{tid}</td>" in page for tid in CITIES)
    assert "1.0.16.0/20" in page and "Tokyo" in page


def test_other_methods_get_405_with_allow(five_cities):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = request(five_cities.http_port, "/" + FILE, method=method)
        assert r.status == 405
        assert {"GET", "HEAD"} <= {m.strip() for m in r.headers["Allow"].split(",")}


HOSTILE = [
    "/../etc/passwd", "/a/../../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E/etc/passwd",
    "/.%2e/etc/passwd", "/%2e./etc/passwd", "/a/%2e%2e/%2e%2e/x", "/..;/x", "/./x", "/a/./b",
    "/a/.", "/a/..", "//evil.example/x", "/a//b", "///x", "/%2f%2fevil.example/x",
    "/a%2f..%2fb", "/a\\b", "/%5c..%5cx", "/..%5c..%5cx", "/a%00b", "/a%0d%0aLocation:%20x",
    "/a%0aSet-Cookie:%20x=1", "/a%0d", "/%7f", "/a%01b", "/%c0%ae%c0%ae/x", "/%ff",
    "/" + "a" * 1100, "/" + "%61" * 400, "/%252e%252e/x", "/https://evil.example/",
    "/@evil.example", "/x?url=https://evil.example/", "/%09x", "/ok#frag",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_paths_get_400_or_stay_on_a_configured_mirror(five_cities, city_mirrors, path):
    r = request(five_cities.http_port, path, xff("1.0.16.1"))
    bases = [f"{m.base}/dl/" for m in city_mirrors.values()]
    if r.status == 302:
        assert any(r.location.startswith(b) for b in bases), r.location
        rest = r.location.split("/dl/", 1)[1]
        assert ".." not in rest.split("/") and "//" not in rest and "\\" not in rest
        assert "?" not in r.location  # the query is not passed on (pass_query = false)
    else:
        assert r.status == 400, (path, r.status)


def test_there_are_at_least_30_hostile_paths():
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("line", [
    b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
    b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
])
def test_malformed_and_oversized_requests_get_4xx_and_the_server_goes_on(five_cities,
                                                                          city_mirrors, line):
    status = raw_request(five_cities.http_port, line)
    assert status in (0, 400, 405, 414, 431)
    r = request(five_cities.http_port, "/" + FILE, xff("1.0.16.1"))
    assert r.location == file_url(city_mirrors, "tyo")


def test_health_endpoints(five_cities):
    assert request(five_cities.http_port, "/healthz").status == 200
    assert request(five_cities.http_port, "/readyz").body == b"ready\n"


@pytest.mark.timing
def test_taking_the_nearest_mirror_down_moves_the_redirect_without_5xx(five_cities,
                                                                         city_mirrors):
    tokyo = city_mirrors["tyo"]
    statuses: list[int] = []

    def answer() -> str | None:
        r = request(five_cities.http_port, "/" + FILE, xff("1.0.16.1"))
        statuses.append(r.status)
        assert r.status == 302
        return r.location

    assert answer() == file_url(city_mirrors, "tyo")
    tokyo.stop()
    started = time.monotonic()
    try:
        wait_until(lambda: answer() == file_url(city_mirrors, "bj"), DOWN_BOUND,
                   what="the redirect to leave Tokyo")
        assert time.monotonic() - started <= DOWN_BOUND
    finally:
        tokyo.start()
    wait_until(lambda: answer() == file_url(city_mirrors, "tyo"), UP_BOUND,
               what="the redirect to come back to Tokyo")
    assert set(statuses) == {302}


# ---------------------------------------------------------------- a zone with two prefixes

TWO_SERVICES = """
[zone]
origin = "dl.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.com"

[services.files]
http_prefix = "/files/"
km_per_ms = 0
on_all_down = "empty"
health = {{ path = "/health", interval = "300ms", timeout = "300ms", rise = 1, fall = 1 }}

[[services.files.targets]]
id = "a"
url = "{a}/pub/"
location = {{ lat = 50.11, lon = 8.68 }}
country = "DE"

[services.mod]
http_prefix = "/mod"
km_per_ms = 0
pass_query = true
link_alternates = 0
on_all_down = "fallback"
fallback = ["origin"]
health = {{ path = "/health", interval = "300ms", timeout = "300ms", rise = 1, fall = 1 }}

[[services.mod.targets]]
id = "near"
url = "{b}/proxy/"
location = {{ lat = 50.11, lon = 8.68 }}

[[services.mod.targets]]
id = "origin"
url = "{c}/"
location = "anycast"
"""


@pytest.fixture(scope="module")
def two_services(tmp_path_factory, farm):
    mirrors = {name: farm.mirror(name) for name in ("a", "b", "c")}
    zone = TWO_SERVICES.format(**{k: m.base for k, m in mirrors.items()})
    zones = write_zone(tmp_path_factory.mktemp("zones"), zone, "dl.example.com.toml")
    router = RouterProcess(zones, "--access-log", "--trusted-proxy", "127.0.0.1")
    yield router, mirrors
    assert router.stop() == 0


def test_a_path_under_no_prefix_is_404(two_services):
    router, _ = two_services
    assert request(router.http_port, "/elsewhere/x").status == 404
    assert request(router.http_port, "/").status == 404


def test_module_paths_keep_escapes_and_query_passes_when_allowed(two_services):
    router, mirrors = two_services
    path = "/mod/github.com/!azure/go-autorest/@v/list"
    r = request(router.http_port, path + "?go-get=1", xff("5.9.0.1"))
    assert r.status == 302
    assert r.location == f"{mirrors['b'].base}/proxy/github.com/!azure/go-autorest/@v/list?go-get=1"
    assert r.links == []  # link_alternates = 0
    files = request(router.http_port, "/files/x.tar.gz?token=1", xff("5.9.0.1"))
    assert files.location == f"{mirrors['a'].base}/pub/x.tar.gz"  # pass_query = false


def test_all_down_empty_is_503_with_retry_after_and_fallback_still_redirects(two_services):
    router, mirrors = two_services
    for m in mirrors.values():
        m.health_status = 503
    try:
        def files_gone():
            return request(router.http_port, "/files/x", xff("5.9.0.1")).status == 503
        wait_until(files_gone, 3, what="503 once every files mirror is down")
        r = request(router.http_port, "/files/x", xff("5.9.0.1"))
        assert r.headers["Retry-After"] == "1"
        origin = f"{mirrors['c'].base}/golang.org/x/text/@v/list"

        def mod_on_origin():  # each mirror is probed on its own clock: wait for "near" too
            mod = request(router.http_port, "/mod/golang.org/x/text/@v/list", xff("5.9.0.1"))
            assert mod.status == 302  # on_all_down = "fallback": the origin, down or not
            return mod.location == origin
        wait_until(mod_on_origin, 3, what="the module proxy to fall back to the origin")
    finally:
        for m in mirrors.values():
            m.health_status = 200
    near = f"{mirrors['b'].base}/proxy/golang.org/x/text/@v/list"
    # Leave the fixture as it was found: both services back on their nearest mirror.
    wait_until(lambda: request(router.http_port, "/files/x").status == 302 and request(
        router.http_port, "/mod/golang.org/x/text/@v/list", xff("5.9.0.1")).location == near,
        3, what="both services to come back")


def test_access_log_line_names_client_path_target_and_latency(two_services):
    router, _ = two_services
    request(router.http_port, "/files/some.iso", xff("202.106.0.20"))
    line = wait_until(lambda: next((e for e in router.find("request")
                                    if e["path"] == "/files/some.iso"), None), 5,
                      what="the access log line")
    assert line["client"] == "202.106.0.20" and line["target"] == "a"
    assert line["status"] == 302 and line["ms"] >= 0


def test_a_module_path_goes_to_the_nearest_healthy_proxy_intact(two_services):
    router, mirrors = two_services
    path = "/mod/github.com/!azure/go-autorest/@v/v14.2.0+incompatible.info"
    near, origin = (f"{mirrors[k].base}{p}{path[5:]}" for k, p in (("b", "/proxy/"), ("c", "/")))
    assert request(router.http_port, path, xff("5.9.0.1")).location == near
    mirrors["b"].health_status = 503
    try:
        wait_until(lambda: request(router.http_port, path, xff("5.9.0.1")).location == origin,
                   3, what="the proxy to move to the next healthy one")
    finally:
        mirrors["b"].health_status = 200
    wait_until(lambda: request(router.http_port, path, xff("5.9.0.1")).location == near, 3,
               what="the nearest proxy to come back")


def test_every_new_client_is_sent_where_a_fresh_decision_sends_it(five_cities):
    """New clients are read the quick way, located without a per-network cache, and a new
    place finds its shared decision by ``steering.stage`` (router.http.redirect): for 150
    addresses across the world, each asked twice in between others (the second a memo
    hit), the redirect is the first of the mirror list, which is decided afresh."""
    rnd = random.Random(5)
    addresses = [f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}.9"
                 for _ in range(150)]
    for address in addresses + addresses[::-1]:
        redirect = request(five_cities.http_port, "/" + FILE, xff(address)).location
        listing = request(five_cities.http_port, f"/{FILE}?mirrorlist=json", xff(address))
        assert json.loads(listing.body)["location"] == redirect, address
