"""No scheme downgrade: a client that came over HTTPS (to us, or to a trusted proxy in
front that says so) is never redirected to an http:// mirror, unless the service sets
``allow_downgrade``. Real HTTPS listeners, real loopback mirrors, curl as the client."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess
from tests.tls import make_ca

ZONE = """
[zone]
origin = "test.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.net"

[services.dl]
http_prefix = "/"
{keys}
default_location = {{ lat = 50.11, lon = 8.68 }}
health = {{ path = "/health", interval = "500ms", timeout = "2s", rise = 1, fall = 1 }}

[[services.dl.targets]]
id = "near-http"
url = "{near}/"
location = {{ lat = 50.11, lon = 8.68 }}

[[services.dl.targets]]
id = "far-https"
url = "{far}/"
location = {{ lat = 39.04, lon = -77.49 }}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mirrors(farm, pki):
    return {"near": farm.mirror("near-http"),
            "far": farm.mirror("far-https", tls=pki.server_context(), host="localhost")}


def start(tmp_path, pki, mirrors, keys: str = "") -> RouterProcess:
    zones = write_zone(tmp_path / "zones", ZONE.format(
        keys=keys, near=mirrors["near"].base, far=mirrors["far"].base))
    return RouterProcess(zones, "--https", "127.0.0.1:0", "--trusted-proxy", "127.0.0.1/32",
                         "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
                         "--ca-file", str(pki.ca))


def curl(pki, url: str, *headers: str) -> tuple[int, str]:
    args = ["curl", "-sS", "--cacert", str(pki.ca), "-o", "/dev/null", "-w",
            "%{http_code} %{redirect_url}"]
    for h in headers:
        args += ["-H", h]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    code, _, where = done.stdout.partition(" ")
    return int(code), where


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, pki, mirrors):
    r = start(tmp_path_factory.mktemp("guarded"), pki, mirrors)
    yield r
    assert r.stop() == 0


def test_an_https_client_never_gets_an_http_location(guarded, pki, mirrors):
    code, where = curl(pki, f"https://127.0.0.1:{guarded.https_port}/f.tar.gz")
    assert (code, where) == (302, f"{mirrors['far'].base}/f.tar.gz")


def test_a_plain_client_still_gets_the_nearest(guarded, pki, mirrors):
    code, where = curl(pki, f"http://127.0.0.1:{guarded.http_port}/f.tar.gz")
    assert (code, where) == (302, f"{mirrors['near'].base}/f.tar.gz")


@pytest.mark.parametrize("header", ["X-Forwarded-Proto: https",
                                    "Forwarded: for=1.0.16.1;proto=https"])
def test_a_trusted_proxy_that_saw_https_counts(guarded, pki, mirrors, header):
    code, where = curl(pki, f"http://127.0.0.1:{guarded.http_port}/g.tar.gz", header)
    assert code == 302 and where.startswith("https://")


def test_the_mirror_list_says_why(guarded, pki, mirrors):
    done = subprocess.run(["curl", "-sS", "--cacert", str(pki.ca),
                           f"https://127.0.0.1:{guarded.https_port}/f.tar.gz?mirrorlist=json"],
                          capture_output=True, text=True, timeout=30)
    rows = {r["id"]: r for r in json.loads(done.stdout)["candidates"]}
    assert rows["near-http"]["excluded"] and "http:// mirror" in rows["near-http"]["reason"]


def test_allow_downgrade_lets_an_https_client_go_to_an_http_mirror(tmp_path, pki, mirrors):
    r = start(tmp_path, pki, mirrors, "allow_downgrade = true")
    try:
        code, where = curl(pki, f"https://127.0.0.1:{r.https_port}/f.tar.gz")
        assert (code, where) == (302, f"{mirrors['near'].base}/f.tar.gz")
    finally:
        assert r.stop() == 0
