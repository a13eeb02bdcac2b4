"""The inventory over time, black-box: catalog refreshes (good, new, failed), the bounded
wait for availability checks, and the bound on checks in flight per mirror.

A loopback origin (anycast, the fallback) and one mirror in Tokyo; clients in Tokyo. The
catalog is fetched every 300 ms, a request waits at most 300 ms for checks, at most two
HEADs run at once per mirror, and negative results are checked again after 1 s.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.conftest import write_zone
from tests.harness import (
    LIST_PATH,
    RouterProcess,
    downloads_zone,
    release_list,
    wait_until,
)
from tests.test_http import request, xff

TOKYO = "1.0.16.1"
NEWEST = {f"go1.22.5.{p}.tar.gz": b"n" * 1000 for p in ("linux-amd64", "src")}
OLD = {f"go1.21.0.os{i}-amd64.tar.gz": b"o" * (100 + i) for i in range(24)}
NEXT = {f"go1.22.6.{p}.tar.gz": b"x" * 1200 for p in ("linux-amd64", "src")}
RELEASES = [("go1.22.5", True, NEWEST), ("go1.21.0", True, OLD)]

SERVICE = """
availability_wait = "300ms"
availability_checks = 2
availability_negative_ttl = "1s"
health = { path = "/health", interval = "1s", timeout = "2s" }
catalog.refresh = "300ms"
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory, farm):
    origin, near = farm.mirror("origin"), farm.mirror("tyo")
    origin.files[LIST_PATH] = release_list(RELEASES)
    for mirror in (origin, near):
        mirror.files.update({f"/go/{n}": b for n, b in {**NEWEST, **OLD}.items()})
    zone = downloads_zone(origin, {"tyo": near}, SERVICE)
    router = RouterProcess(write_zone(tmp_path_factory.mktemp("zones"), zone, "dl.toml"),
                           "--trusted-proxy", "127.0.0.1/32")
    router.wait_for("mirror_freshness", 10)
    yield router, origin, near
    assert router.stop() == 0


def goes_to(router, origin, near, name):
    r = request(router.http_port, f"/{name}", xff(TOKYO))
    assert r.status == 302, (r.status, r.body)
    return {f"{origin.base}/go/{name}": "origin", f"{near.base}/go/{name}": "near"}[r.location]


def availability(router, name):
    data = json.loads(request(router.http_port, f"/{name}?mirrorlist=json", xff(TOKYO)).body)
    return {row["id"]: row["file"] for row in data["candidates"]}["tyo"]


@pytest.mark.timing
def test_a_request_waits_at_most_availability_wait_then_takes_the_next(live):
    router, origin, near = live
    name = "go1.21.0.os0-amd64.tar.gz"
    near.head_delay = 1.9  # the HEAD timeout is 2 s
    try:
        started = time.monotonic()
        first = goes_to(router, origin, near, name)
        elapsed = time.monotonic() - started
        # It waited for the check of the nearest mirror (300 ms), not for its answer (1.9 s).
        assert first == "origin" and 0.25 <= elapsed < 1.5, elapsed
        wait_until(lambda: availability(router, name) == "present", 10,
                   what="the slow check to land")
    finally:
        near.head_delay = 0.0
    assert goes_to(router, origin, near, name) == "near"
    assert near.heads(f"/go/{name}") == 1  # the requests after the first reused its check


def test_checks_run_at_most_availability_checks_at_once_per_mirror(live):
    router, origin, near = live
    names = [f"go1.21.0.os{i}-amd64.tar.gz" for i in range(4, 16)]
    near.head_delay, near.most_heads_active = 0.2, 0
    try:
        threads = [threading.Thread(target=goes_to, args=(router, origin, near, n))
                   for n in names for _twice in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wait_until(lambda: all(near.heads(f"/go/{n}") for n in names), 15,
                   what="every file to be checked")
    finally:
        near.head_delay = 0.0
    assert near.most_heads_active == 2  # availability_checks = 2, though 12 were wanted
    assert all(near.heads(f"/go/{n}") == 1 for n in names)  # one HEAD per file, shared


def test_a_new_release_is_listed_probed_and_used_once_the_mirror_has_it(live):
    router, origin, near = live
    name = "go1.22.6.linux-amd64.tar.gz"
    assert request(router.http_port, f"/{name}", xff(TOKYO)).status == 404
    def stale_events():
        return len([e for e in router.find("mirror_freshness") if e["new"] == "stale"])

    stale_before = stale_events()
    origin.files.update({f"/go/{n}": b for n, b in NEXT.items()})
    origin.files[LIST_PATH] = release_list([("go1.22.6", True, NEXT), *RELEASES])
    try:
        # Listed at the next refresh; the freshness probe finds the mirror without it.
        wait_until(lambda: stale_events() > stale_before, 5, what="the mirror to turn stale")
        assert goes_to(router, origin, near, name) == "origin"
        listing = json.loads(request(router.http_port, "/?mode=json").body)
        assert [r["version"] for r in listing] == ["go1.22.6", "go1.21.0"]
        near.files.update({f"/go/{n}": b for n, b in NEXT.items()})
        # Checked again once the negative TTL (1 s) is over, at a refresh (300 ms).
        wait_until(lambda: goes_to(router, origin, near, name) == "near", 5,
                   what="the mirror to be fresh again")
    finally:
        origin.files[LIST_PATH] = release_list(RELEASES)


@pytest.mark.parametrize("breakage", ["not json", "missing"])
def test_a_failed_refresh_keeps_the_last_good_copy_and_is_logged(live, breakage):
    router, origin, near = live
    good = origin.files[LIST_PATH]
    failures = len(router.find("catalog_failed"))
    if breakage == "missing":
        del origin.files[LIST_PATH]
    else:
        origin.files[LIST_PATH] = b"<html>maintenance</html>"
    try:
        event = router.wait_for("catalog_failed", 5, count=failures + 1)
        assert event["keeping"] == "the last good copy"
        assert event["error"] == ("HTTP 404" if breakage == "missing" else event["error"])
        assert "not JSON" in event["error"] or breakage == "missing"
        assert goes_to(router, origin, near, "go1.22.5.src.tar.gz") == "near"
        assert request(router.http_port, "/go1.99.0.src.tar.gz").status == 404
        assert json.loads(request(router.http_port, "/?mode=json&include=all").body)
    finally:
        origin.files[LIST_PATH] = good
