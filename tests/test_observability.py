"""Seeing it all, black-box: ``/metrics`` (parsed by prometheus-client's own parser) and the
``/status`` page, rendered by a real headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router import __version__
from router.core.earth import Point
from router.http.status.worldmap import RADIUS, Box, Marker, place, project, svg
from tests.browser import Browser
from tests.conftest import write_zone
from tests.harness import CITIES, RouterProcess, five_city_zone, wait_until
from tests.png import near, pixels
from tests.test_dns import ZONE, ask
from tests.test_http import FILE, request, xff

CHROMIUM = shutil.which("chromium")
GREEN, RED, OCEAN, LAND = (22, 163, 74), (220, 38, 38), (219, 234, 254), (231, 229, 224)


def scrape(router) -> dict[str, dict[tuple, float]]:
    r = request(router.http_port, "/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(metrics, name: str, **labels: str) -> float:
    return metrics.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_parse_and_carry_every_per_target_series(five_cities):
    m = scrape(five_cities)
    for tid in CITIES:
        t = {"service": "downloads", "target": tid}
        assert value(m, "mirror_router_target_up", **t) == 1.0
        assert value(m, "mirror_router_target_override", **t, state="auto") == 1.0
        assert value(m, "mirror_router_target_override", **t, state="drain") == 0.0
        assert 0 < value(m, "mirror_router_target_ttfb_ewma_seconds", **t) < 1
        assert value(m, "mirror_router_target_wait_steering_seconds", **t) >= 0
        assert value(m, "mirror_router_probes_total", **t, result="ok") >= 1
        for phase in ("dns", "connect", "ttfb", "total"):
            count = value(m, "mirror_router_probe_phase_seconds_count", **t, phase=phase)
            assert count >= 1
            assert value(m, "mirror_router_probe_phase_seconds_bucket", **t, phase=phase,
                         le="+Inf") == count
        assert ("phase", "tls") not in {kv for k in m["mirror_router_probe_phase_seconds_count"]
                                        for kv in k if k[2] == ("target", tid)}  # plain HTTP
    assert value(m, "mirror_router_ready") == 1.0
    assert value(m, "mirror_router_health_generation") >= 1
    assert m["mirror_router_build_info"] == {(("version", __version__),): 1.0}
    assert "process_resident_memory_bytes" in m


def test_counters_count_exactly_what_was_served(five_cities):
    before = scrape(five_cities)
    for _ in range(3):
        ask(five_cities, ZONE, "A", ecs=("1.0.16.0", 24))  # Tokyo
    ask(five_cities, "nope." + ZONE, "AAAA")
    ask(five_cities, "example.org.", "A")
    for _ in range(2):
        request(five_cities.http_port, "/" + FILE, xff("5.9.0.1"))  # Frankfurt
    request(five_cities.http_port, "/" + FILE, method="POST")
    after = scrape(five_cities)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("mirror_router_dns_queries_total", qtype="A", rcode="NOERROR") == 3
    assert delta("mirror_router_dns_queries_total", qtype="AAAA", rcode="NXDOMAIN") == 1
    assert delta("mirror_router_dns_queries_total", qtype="A", rcode="REFUSED") == 1
    chosen = "mirror_router_target_chosen_total"
    assert delta(chosen, service="downloads", target="tyo", face="dns") == 3
    # The same Tokyo question three times: at least the last two are answer-cache hits
    # (the first may be too, if an earlier test asked it), and each 302 read a decision:
    # per place first (Frankfurt ranks without hashing, so it is kept there).
    events = "mirror_router_cache_events_total"
    assert delta(events, cache="dns", event="hit") >= 2
    assert delta(events, cache="dns", event="hit") + delta(events, cache="dns",
                                                           event="miss") >= 5
    assert delta(events, cache="http_places", event="hit") + delta(
        events, cache="http_places", event="miss") >= 2
    assert delta(events, cache="http_places", event="hit") >= 1  # the second 302
    assert value(after, "mirror_router_cache_entries", cache="dns") >= 1
    assert value(after, "mirror_router_cache_entries", cache="geoip") >= 1
    assert delta(chosen, service="downloads", target="fra", face="http") == 2
    assert delta(chosen, service="downloads", target="tyo", face="http") == 0
    assert delta("mirror_router_http_responses_total", status="302") == 2
    assert delta("mirror_router_http_responses_total", status="405") == 1
    assert delta("mirror_router_http_responses_total", status="200") == 1  # the 1st scrape


def test_status_json_and_the_viewers_marker(five_cities):
    ask(five_cities, ZONE, "A", ecs=("1.0.16.0", 24))
    data = json.loads(request(five_cities.http_port, "/status.json", xff("1.0.16.1")).body)
    (service,) = data["services"]
    assert [t["id"] for t in service["targets"]] == list(CITIES)
    assert abs(sum(t["share"] for t in service["targets"]) - 1) < 0.01
    tokyo = service["targets"][1]
    assert tokyo["state"] == "up" and tokyo["colour"] == "green" and tokyo["ttfb_ms"] > 0
    assert data["client"]["country"] == "JP"
    page = request(five_cities.http_port, "/status", xff("1.0.16.1")).body.decode()
    assert "id='marker-client'" in page and "<script" not in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # no external asset


def chromium(*args: str, tmp_path) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,1000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_status_page_renders_every_target_and_a_map_in_chromium(five_cities, city_mirrors,
                                                                  tmp_path):
    url = f"http://127.0.0.1:{five_cities.http_port}/status"
    city_mirrors["gru"].health_status = 503  # one red marker
    try:
        wait_until(lambda: b'"colour": "red"' in request(five_cities.http_port,
                                                          "/status.json").body, 5,
                   what="Sao Paulo to be down")
        dom = chromium("--dump-dom", url, tmp_path=tmp_path)
        shot = tmp_path / "status.png"
        taken = chromium(f"--screenshot={shot}", url, tmp_path=tmp_path)
    finally:
        city_mirrors["gru"].health_status = 200
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert re.search(r'<svg id="map"[^>]*viewBox="0 0 360 180"', html)
    assert '<path id="land" d="M' in html
    for tid in CITIES:
        assert f'<tr id="target-downloads-{tid}">' in html
        assert re.search(rf'<g id="marker-downloads-{tid}" class="marker">.*?<circle', html)
        assert re.search(rf'<text class="label"[^>]*>{tid}</text>', html)
    assert "&amp;" not in html.replace("&amp;include", "")  # nothing escaped twice
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    width, height, counts = pixels(shot)
    assert (width, height) == (1280, 1000)
    assert near(counts, OCEAN) > 100_000 and near(counts, LAND) > 50_000  # the map painted
    assert near(counts, GREEN) > 4 * 60  # four green markers (and the legend's dot)
    assert near(counts, RED) > 60  # Sao Paulo


# ---------------------------------------------------------------- the map's labels

CHINA = {"tuna": (40.00, 116.33), "aliyun": (30.27, 120.16), "ustc": (31.84, 117.26),
         "nju": (32.06, 118.78), "tencent": (23.13, 113.26), "goproxy-cn": (31.23, 121.47),
         "aliyun-goproxy": (30.27, 120.16), "tencent-goproxy": (23.13, 113.26),
         "bj": (39.90, 116.40), "tyo": (35.68, 139.69)}


def test_labels_never_overlap_each_other_or_a_marker():
    """The example zone's mirrors crowd eastern China: every label finds a free spot."""
    markers = [Marker(f"m-{tid}", tid, Point(lat, lon), "green", tid)
               for tid, (lat, lon) in CHINA.items()]
    labels = place(markers)
    assert sorted(label.text for label in labels) == sorted(
        ["tuna", "aliyun, aliyun-goproxy", "ustc", "nju", "tencent, tencent-goproxy",
         "goproxy-cn", "bj", "tyo"])  # two places hold two mirrors each: one label
    dots = [Box(x - RADIUS, y - RADIUS, 2 * RADIUS, 2 * RADIUS)
            for x, y in {project(m.point) for m in markers}]
    for i, a in enumerate(labels):
        assert not any(a.box.overlaps(b.box) for b in labels[i + 1:]), a
        assert not any(a.box.overlaps(d) for d in dots), a
    page = svg(markers)
    assert page.count("<text class='label'") == len(labels)
    assert page.count("<line ") == sum(label.leader for label in labels)


def test_a_lone_marker_is_labelled_right_beside_it():
    (label,) = place([Marker("m", "fra", Point(50.11, 8.68), "green", "fra")])
    x, y = project(Point(50.11, 8.68))
    assert not label.leader and label.box.x == x + 3 and abs(label.box.y + 2 - y) < 0.01


def test_the_public_status_keeps_to_what_a_user_of_the_mirrors_may_see(tmp_path,
                                                                     city_mirrors):
    """Without --admin, /status.json and /status on the public listener published file
    paths, the PID (and in a fleet the store's address); the admin listener has it all."""
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    state = tmp_path / "state.toml"
    state.write_text("[targets]\n")
    alone = RouterProcess(zones, "--state", str(state))
    both = RouterProcess(zones, "--state", str(state), "--admin", "127.0.0.1:0")
    try:
        for path in ("/status.json", "/status"):
            body = request(alone.http_port, path).body.decode()
            assert str(tmp_path) not in body and "GeoLite2-City.mmdb" not in body
        full = request(both.admin_port, "/status.json").body.decode()
        assert str(state) in full and "GeoLite2-City.mmdb" in full
        public = json.loads(request(alone.http_port, "/status.json").body)
        assert "pid" not in public and public["state_file"] == {"ok": True, "error": None}
        assert json.loads(request(both.admin_port, "/status.json").body)["pid"] == \
            both.proc.pid
    finally:
        assert alone.stop() == 0 and both.stop() == 0


def test_a_failed_reload_shows_in_metrics_and_status(tmp_path, city_mirrors):
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones)
    try:
        def figures() -> dict[str, float]:
            text = request(router.http_port, "/metrics").body.decode()
            return {s.name: s.value for f in text_string_to_metric_families(text)
                    for s in f.samples if s.name.startswith("mirror_router_config_")}
        first = figures()
        assert first["mirror_router_config_last_reload_success"] == 1.0
        (zones / "test.example.com.toml").write_text("[zone]\norigin = 1\n")
        router.signal(signal.SIGHUP)
        router.wait_for("reload_failed")
        after = figures()
        assert after["mirror_router_config_last_reload_success"] == 0.0
        assert after["mirror_router_config_last_reload_success_timestamp_seconds"] == \
            first["mirror_router_config_last_reload_success_timestamp_seconds"]
        page = request(router.http_port, "/status").body.decode()
        assert "running the config of " in page and "the last reload failed" in page
        # the public listener (no --admin) says that it failed, not the file's problems
        assert "1 problem(s): details on the admin listener" in page
        assert "zone.origin" not in page and str(zones) not in page
        status = json.loads(request(router.http_port, "/status.json").body)
        assert status["config"]["last_reload"]["ok"] is False
        (zones / "test.example.com.toml").write_text(five_city_zone(city_mirrors))
        router.signal(signal.SIGHUP)
        router.wait_for("reloaded")
        again = figures()
        assert again["mirror_router_config_last_reload_success"] == 1.0
        assert again["mirror_router_config_last_reload_success_timestamp_seconds"] > \
            first["mirror_router_config_last_reload_success_timestamp_seconds"]
    finally:
        assert router.stop() == 0


# ---------------------------------------------------------------- the page's layout

LAYOUT = """JSON.stringify({
  width: innerWidth, scroll: document.documentElement.scrollWidth,
  table: document.querySelector("table").getBoundingClientRect().top,
  map: document.getElementById("map").getBoundingClientRect().top,
  smallest: Math.min(...[...document.querySelectorAll("td, th, p, h2")].filter(
      e => e.getClientRects().length).map(e => parseFloat(getComputedStyle(e).fontSize))),
  labels: [...document.querySelectorAll("#map text")].filter(
      e => e.getClientRects().length).map(e => e.getBoundingClientRect().height),
})"""


@pytest.mark.parametrize(("width", "height"), [(1280, 1000), (400, 900)])
def test_the_status_page_puts_the_tables_first_and_never_scrolls_sideways(
        five_cities, tmp_path, width, height):
    """The map pushed the tables below the fold at 1280x1000, and at 400 px the page
    scrolled sideways with 3 px map labels."""
    if CHROMIUM is None:
        chromium(tmp_path=tmp_path)  # fails on CI, skips elsewhere
    browser = Browser(CHROMIUM, tmp_path / "profile", width, height)
    try:
        browser.open(f"http://127.0.0.1:{five_cities.http_port}/status")
        seen = json.loads(browser.evaluate(LAYOUT))
        shot = tmp_path / f"status-{width}.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot")["data"]))
    finally:
        browser.close()
    assert pixels(shot)[:2] == (width, height)  # what an operator sees first
    assert near(pixels(shot)[2], GREEN) > 60  # a table's dots, in the first screen
    assert seen["width"] == width, seen
    assert seen["scroll"] <= width, seen  # no horizontal scroll
    assert seen["table"] < height / 2 < seen["map"], seen  # the first table above the fold
    assert seen["smallest"] >= 11, seen  # readable text
    assert all(h >= 8 for h in seen["labels"]), seen  # map labels readable, or not shown
