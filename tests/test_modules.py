"""The go command's contract, kept (GOPROXY=<router>/mod): a module version no proxy has
is a 404 (or the service's ``missing_status``), so the go command moves on to its next
GOPROXY entry; a proxy whose version list is behind the freshest is not used for a
module's ``@v/list`` or ``@latest`` until it catches up. Real loopback module proxies,
a real router, and the real go command."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess, module_files, proxy_targets, wait_until

GO = shutil.which("go")
needs_go = pytest.mark.skipif(GO is None, reason="the go command is not installed "
                                                 "(.ci/run installs golang-go)")
MODULE = "example.com/m"
EXTRA = "example.com/extra"


def zone(proxies: dict, extra: str = "") -> str:
    targets = proxy_targets(proxies)
    return f'''
[zone]
origin = "test.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.net"

[services.modules]
http_prefix = "/mod/"
link_alternates = 0
default_location = {{ lat = 50.11, lon = 8.68 }}   # 127.0.0.1 is measured from Frankfurt
immutable = ["*/@v/*.info", "*/@v/*.mod", "*/@v/*.zip"]
mutable = ["*/@v/list", "*/@latest"]
mutable_ttl = "1s"
availability_wait = "3s"
availability_negative_ttl = "1s"
health = {{ path = "/health", interval = "500ms", timeout = "2s", rise = 1, fall = 1 }}
{extra}
{targets}'''


@pytest.fixture(scope="module")
def proxies(farm):
    """Frankfurt (nearest) and Ashburn, both with example.com/m v1.0.0, neither with
    example.com/extra; Ashburn also has v1.1.0 (Frankfurt's list is behind)."""
    found = {name: farm.mirror(name) for name in ("fra-proxy", "iad-proxy")}
    found["fra-proxy"].files.update(module_files(MODULE, ["v1.0.0"]))
    found["iad-proxy"].files.update(module_files(MODULE, ["v1.0.0", "v1.1.0"]))
    return found


@pytest.fixture(scope="module")
def elsewhere(farm):
    """The next GOPROXY entry: a proxy the router does not know, that has extra."""
    m = farm.mirror("next-proxy")
    m.files.update(module_files(EXTRA, ["v1.0.0"]))
    return m


@pytest.fixture(scope="module")
def router(tmp_path_factory, proxies):
    zones = write_zone(tmp_path_factory.mktemp("modules"), zone(proxies))
    r = RouterProcess(zones)
    yield r
    assert r.stop() == 0


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, Location, body) of one GET, redirects not followed."""
    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None
    opener = urllib.request.build_opener(Stay)
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers.get("Location", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location", ""), e.read().decode()


def go(*args: str, proxy: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(Path(GO or "go").parent), "HOME": str(home), "GOPATH": str(home / "go"),
           "GOCACHE": str(home / "cache"), "GOFLAGS": "-modcacherw", "GOSUMDB": "off",
           "GOPROXY": proxy, "GOTOOLCHAIN": "local", "GO111MODULE": "on",
           "GONOSUMCHECK": "1", "GOINSECURE": "*"}
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run([GO or "go", *args], env=env, cwd=home, capture_output=True,
                          text=True, timeout=120)


def test_a_version_no_proxy_has_is_a_404_the_go_command_prints(router, proxies):
    status, where, body = get(router.http_port, f"/mod/{EXTRA}/@v/v1.0.0.info")
    assert (status, where) == (404, "")
    assert f"no mirror has {EXTRA}/@v/v1.0.0.info" in body
    for m in proxies.values():  # asked, found missing: a 404 is not "nobody is up"
        assert ("HEAD", f"/{EXTRA}/@v/v1.0.0.info") in m.requests


def test_a_version_one_proxy_has_is_sent_there(router, proxies):
    status, where, _ = get(router.http_port, f"/mod/{MODULE}/@v/v1.1.0.zip")
    assert (status, where) == (302, f"{proxies['iad-proxy'].base}/{MODULE}/@v/v1.1.0.zip")


def test_missing_status_410(tmp_path, proxies):
    zones = write_zone(tmp_path, zone(proxies, 'missing_status = 410'))
    r = RouterProcess(zones)
    try:
        status, _, body = get(r.http_port, f"/mod/{EXTRA}/@v/v1.0.0.mod")
        assert status == 410 and body.startswith("410 Gone")
    finally:
        assert r.stop() == 0


def test_nobody_up_is_still_a_503(tmp_path, farm):
    down = {"fra-proxy": farm.mirror("down-proxy")}
    down["fra-proxy"].health_status = 503
    zones = write_zone(tmp_path, zone(down, 'on_all_down = "empty"'))
    r = RouterProcess(zones)
    try:
        status, _, _ = get(r.http_port, f"/mod/{EXTRA}/@v/v1.0.0.info")
        assert status == 503
    finally:
        assert r.stop() == 0


@needs_go
def test_the_go_command_falls_through_to_the_next_goproxy_entry(router, elsewhere, tmp_path):
    proxy = f"http://127.0.0.1:{router.http_port}/mod,{elsewhere.base}"
    done = go("mod", "download", "-json", f"{EXTRA}@v1.0.0", proxy=proxy, home=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["Version"] == "v1.0.0"
    assert ("GET", f"/{EXTRA}/@v/v1.0.0.zip") in elsewhere.requests


def go_gets(m, path: str) -> int:
    """GETs of ``path`` the go command made (not the router's own reads)."""
    return sum(1 for (method, p), agent in zip(m.requests, m.agents, strict=True)
               if method == "GET" and p == path and "mirror-router" not in agent)


@needs_go
def test_a_proxy_whose_list_is_behind_is_not_used_until_it_catches_up(router, proxies,
                                                                     tmp_path):
    fra, iad = proxies["fra-proxy"], proxies["iad-proxy"]
    proxy = f"http://127.0.0.1:{router.http_port}/mod"
    done = go("mod", "download", "-json", f"{MODULE}@latest", proxy=proxy,
              home=tmp_path / "first")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["Version"] == "v1.1.0"  # not Frankfurt's older view
    listed = f"/{MODULE}/@v/list"
    assert go_gets(fra, listed) == 0 and go_gets(iad, listed) >= 1
    status, _, body = get(router.http_port, f"/mod{listed}?mirrorlist=json")
    assert status == 200
    rows = {row["id"]: row for row in json.loads(body)["candidates"]}
    assert rows["fra-proxy"]["file"] == "behind" and rows["fra-proxy"]["excluded"]
    assert "behind" in rows["fra-proxy"]["reason"]
    # Frankfurt catches up: after mutable_ttl it is the nearest fresh proxy again
    fra.files.update(module_files(MODULE, ["v1.0.0", "v1.1.0"]))

    def fresh_again() -> bool:
        return get(router.http_port, f"/mod{listed}")[1].startswith(fra.base)
    wait_until(fresh_again, 15, interval=0.3, what="Frankfurt's list to count as fresh")
    before = go_gets(fra, listed)
    done = go("mod", "download", "-json", f"{MODULE}@latest", proxy=proxy,
              home=tmp_path / "second")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["Version"] == "v1.1.0"
    assert go_gets(fra, listed) > before
