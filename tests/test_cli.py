"""The command line, black-box: explain and the example zone the README shows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import ROOT, RouterProcess
from tests.test_dns import addresses, ask, ecs_of
from tests.test_http import request, xff


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("mirror-router ")


def test_explain_prints_the_ranking_with_figures():
    out = run("explain", "--client", "1.0.16.1", "dl.go.example.com")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "not known offline" in lines[1]  # said first: what explain could not know
    assert "1.0.16.0/20" in lines[2] and "JP" in lines[2]
    table = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [row[1] for row in table][:2] == ["nrt", "sin"]
    assert table[0][0] == "1*"  # chosen
    assert {row[2] for row in table} == {"up"}  # as a --no-probe server sees them
    assert lines[-2].startswith("answer: 192.0.2.25")
    assert lines[-1] == "zone go.example.com. is unsigned"


def test_explain_json_agrees_with_the_server_answer():
    out = run("explain", "--client", "202.106.0.20", "--type", "AAAA", "--json",
              "dl.go.example.com")
    data = json.loads(out.stdout)
    assert data["client"]["country"] == "CN"
    assert data["candidates"][0]["id"] == "nrt" and data["candidates"][0]["chosen"]
    assert data["answer"] == ["2001:db8::25"]
    assert all({"distance_km", "cost", "reason", "state"} <= set(c) for c in data["candidates"])


def test_explain_and_mirrorlist_agree_on_the_state(example):
    out = json.loads(run("explain", "--client", "1.0.16.1", "--json", "--no-fetch",
                         "/go1.22.5.linux-amd64.tar.gz").stdout)
    listing = json.loads(request(example.http_port, "/go1.22.5.linux-amd64.tar.gz?mirrorlist=json",
                                 xff("1.0.16.1")).body)
    assert [(c["id"], c["state"]) for c in out["candidates"]] == \
        [(c["id"], c["state"]) for c in listing["candidates"]]


def test_explain_unknown_name_fails():
    out = run("explain", "--client", "1.0.16.1", "nope.example.org")
    assert out.returncode == 1
    assert "not a steered name" in out.stderr


@pytest.fixture(scope="module")
def example():
    router = RouterProcess(ROOT / "zones", "--no-probe", "--trusted-proxy", "127.0.0.1/32")
    yield router
    assert router.stop() == 0


def test_the_dns_steered_name_answers_the_nearest_host_we_run(example):
    msg = ask(example, "dl.go.example.com.", "A", ecs=("1.0.16.0", 24))
    assert addresses(msg) == ["192.0.2.25"]  # Tokyo
    assert ecs_of(msg).scopelen == 20
    assert addresses(ask(example, "dl.go.example.com.", "A", ecs=("5.9.0.0", 24))) == [
        "192.0.2.21"]  # Frankfurt


def test_the_redirectors_name_is_static_whoever_asks(example):
    """go.example.com is the redirector's own name: its nodes, not a mirror's address."""
    nodes = ["198.51.100.53", "203.0.113.53"]
    for subnet in (("1.0.16.0", 24), ("202.106.0.0", 24), None):
        msg = ask(example, "go.example.com.", "A", ecs=subnet)
        assert sorted(addresses(msg)) == nodes
    assert addresses(ask(example, "ns1.go.example.com.", "A")) == ["198.51.100.53"]
    assert sorted(addresses(ask(example, "www.go.example.com.", "A"))) == nodes


# ---------------------------------------------------------------- the modules service

MODULE_PATHS = [
    "github.com/!azure/go-autorest/@v/list",
    "github.com/!burnt!sushi/toml/@v/v1.3.2.info",
    "golang.org/x/text/@v/v0.14.0.mod",
    "github.com/docker/docker/@v/v24.0.7+incompatible.zip",
    "gopkg.in/yaml.v3/@latest",
    "example.com/~user/mod/@v/list",
]


@pytest.mark.parametrize("path", MODULE_PATHS)
def test_goproxy_paths_go_to_the_nearest_module_proxy_intact(example, path):
    """GOPROXY=https://go.example.com/mod: Beijing gets goproxy.cn, Frankfurt the Go mirror."""
    for client, base in (("202.106.0.20", "https://goproxy.cn/"),
                         ("5.9.0.1", "https://proxy.golang.org/")):
        r = request(example.http_port, "/mod/" + path, xff(client))
        assert r.status == 302 and r.location == base + path
        assert r.links == []  # link_alternates = 0


@pytest.mark.parametrize("path", ["/mod/golang.org/x/../../../etc/passwd",
                                  "/mod/golang.org/x/text/@v/%2e%2e/list", "/mod/a//@v/list",
                                  "/mod/golang.org/x/text/@v/list%0d%0aX:%20y"])
def test_goproxy_paths_still_reject_traversal(example, path):
    assert request(example.http_port, path).status == 400


def test_with_no_probe_the_example_contacts_nothing(example):
    """The catalog is not fetched and no mirror is checked: downloads redirect as before."""
    assert example.find("ready")[0]["probing"] is False
    assert not example.find("catalog") and not example.find("catalog_failed")
    r = request(example.http_port, "/go1.22.5.linux-amd64.tar.gz", xff("1.0.16.1"))
    assert r.location == "https://dl.google.com/go/go1.22.5.linux-amd64.tar.gz"
    assert "Digest" not in r.headers  # no catalog without fetching it


def test_status_page_of_the_example_escapes_once(example):
    page = request(example.http_port, "/status").body.decode()
    assert "&amp;ndash;" not in page and "&amp;middot;" not in page
    assert "DNS &ndash; &middot; HTTP /mod/" in page  # modules: no DNS name


@pytest.mark.parametrize("path", ["/mod/example.com/hello/@v/v1.2.0-rc.meta4",
                                  "/mod/sumdb/sum.golang.org/lookup/example.com/hello@v1.2.0-rc.meta4",
                                  "/go1.22.5.linux-amd64.tar.gz.meta4"])
def test_without_a_catalog_a_meta4_path_is_an_ordinary_path(example, path):
    """Only a catalog-listed file has a Metalink of ours; here nothing is listed (no
    catalog fetched), so the path goes to a mirror as it is."""
    r = request(example.http_port, path, xff("5.9.0.1"))
    assert r.status == 302 and r.location.endswith(path.split("/", 2)[-1] if
                                                   path.startswith("/mod/") else path[1:])
    accept = request(example.http_port, "/go1.22.5.linux-amd64.tar.gz",
                     {**xff("5.9.0.1"), "Accept": "application/metalink4+xml"})
    assert accept.status == 302


def test_the_embedded_database_is_old_and_the_log_says_so(example):
    """The GeoLite2 snapshot inside maxminddb-geolite2 dates from July 2018."""
    (warning,) = example.find("geoip_old")
    assert warning["level"] == "warning" and warning["geoip_stale"] is True
    assert warning["geoip"] == "GeoLite2-City built 2018-07-03"
    assert warning["geoip_age_days"] > 60 and "SIGHUP" in warning["hint"]
    ready = example.find("ready")[0]
    assert ready["geoip"] == "GeoLite2-City built 2018-07-03"


def test_a_usage_error_is_two_lines():
    """argparse printed the whole usage (15 lines) with the error at its bottom."""
    out = run("serve", "--workers", "0")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "mirror-router serve: error: argument --workers: '0' is not a whole number of at "
        "least 1", "(see mirror-router serve --help)"]


def test_admin_options_go_before_or_after_the_action(tmp_path):
    """``admin set tyo drain --state F`` failed with "unrecognized arguments"; ``admin
    show`` of a missing file said "no overrides in" it."""
    state = tmp_path / "s.toml"
    missing = run("admin", "show", "--state", str(state))
    assert missing.returncode == 0 and missing.stdout.startswith(f"no state file at {state}")
    after = run("admin", "set", "tyo", "drain", "--any-id", "--state", str(state))
    assert after.returncode == 0, after.stderr
    before = run("admin", "--state", str(state), "--any-id", "set", "fra", "down")
    assert before.returncode == 0, before.stderr
    shown = run("admin", "show", "--state", str(state))
    assert shown.stdout.splitlines() == ["fra\tdown", "tyo\tdrain"]


def test_the_mirrorlist_page_says_when_the_default_location_was_used(example):
    path = "/go1.22.5.linux-amd64.tar.gz?mirrorlist"
    unplaced = request(example.http_port, path, xff("192.0.2.7"))  # documentation: no place
    assert json.loads(request(example.http_port, path + "=json", xff("192.0.2.7")).body)[
        "default_location_used"]
    assert b"ranked from the service's <code>default_location</code>" in unplaced.body
    placed = request(example.http_port, path, xff("1.0.16.1"))
    assert b"default_location" not in placed.body


def test_explain_server_gives_the_running_routers_dns_answer(example):
    """Without an admin listener, /explain is where /status is: on the HTTP listener."""
    out = run("explain", "--server", f"http://127.0.0.1:{example.http_port}", "--client",
              "202.106.0.20", "--type", "AAAA", "--json", "dl.go.example.com")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    answered = addresses(ask(example, "dl.go.example.com.", "AAAA", ecs=("202.106.0.20", 32)))
    assert data["answer"] == answered == ["2001:db8::25"]
    assert data["known"][0].startswith("decided by the running router")
    assert data["dnssec"] == "zone go.example.com. is unsigned"
