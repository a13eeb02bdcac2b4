"""Content verification, black-box: a mirror with a right-sized but corrupt copy is found
within the budget (its copy fetched whole, hashed, compared with the catalog's digest)
and never chosen for that file again until a later verification passes; curl and aria2c
through the router get correct bytes; ``corrupt_after`` corrupt copies make the whole
mirror corrupt for the service. Real loopback mirrors and origin, a real router."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from tests.conftest import write_zone
from tests.harness import LIST_PATH, RouterProcess, downloads_zone, release_list, wait_until
from tests.test_http import request, xff

FRANKFURT = "5.9.0.1"
NEW = "go1.22.5"


def body(name: str, size: int = 3000) -> bytes:
    return hashlib.sha256(name.encode()).digest() * (size // 32) + b"!" * (size % 32)


FILES = {f"{NEW}.linux-amd64.tar.gz": body("linux"), f"{NEW}.src.tar.gz": body("src"),
         f"{NEW}.darwin-arm64.tar.gz": body("darwin"),
         f"{NEW}.windows-amd64.zip": body("windows")}
LINUX, SRC, DARWIN = (f"{NEW}.linux-amd64.tar.gz", f"{NEW}.src.tar.gz",
                      f"{NEW}.darwin-arm64.tar.gz")
SERVICE = """
anycast_km = 15000
availability_wait = "5s"
health = { path = "/health", interval = "300ms", timeout = "1s", rise = 1, fall = 1 }
verify = { bytes_per_day = "1GiB", every = "150ms" }
corrupt_after = 2
"""


def corrupt(data: bytes) -> bytes:
    """The same length, other bytes: a size check cannot tell."""
    return bytes(b ^ 0x55 for b in data)


@pytest.fixture(scope="module")
def site(tmp_path_factory, farm):
    m = {name: farm.mirror(f"verify-{name}") for name in ("origin", "fra", "bj")}
    m["origin"].files[LIST_PATH] = release_list([(NEW, True, FILES)])
    for mirror in m.values():
        mirror.files.update({f"/go/{n}": data for n, data in FILES.items()})
    m["fra"].files[f"/go/{LINUX}"] = corrupt(FILES[LINUX])
    zone = downloads_zone(m["origin"], {"fra": m["fra"], "bj": m["bj"]}, SERVICE)
    router = RouterProcess(write_zone(tmp_path_factory.mktemp("zones"), zone, "dl.toml"),
                           "--trusted-proxy", "127.0.0.1/32")
    yield router, m
    assert router.stop() == 0


def corrupt_found(router: RouterProcess, file: str, target: str = "fra") -> bool:
    return any(e["file"] == file and e["target"] == target
               for e in router.find("file_corrupt"))


def test_a_right_sized_corrupt_copy_is_found_and_avoided(site):
    router, m = site
    fra = m["fra"].base
    # before it is verified, Frankfurt (nearest, a right size by HEAD) gets the file
    assert request(router.http_port, f"/{LINUX}", xff(FRANKFURT)).location.startswith(fra)
    wait_until(lambda: corrupt_found(router, LINUX), 30, interval=0.1,
               what="the corrupt copy to be found")
    found = next(e for e in router.find("file_corrupt") if e["file"] == LINUX)
    assert found["expected_sha256"] == hashlib.sha256(FILES[LINUX]).hexdigest()
    assert found["got_sha256"] == hashlib.sha256(corrupt(FILES[LINUX])).hexdigest()
    for _ in range(5):  # never chosen for that file again
        where = request(router.http_port, f"/{LINUX}", xff(FRANKFURT)).location
        assert where and not where.startswith(fra)
    r = request(router.http_port, f"/{LINUX}?mirrorlist=json", xff(FRANKFURT))
    rows = {row["id"]: row for row in json.loads(r.body)["candidates"]}
    assert rows["fra"]["file"] == "corrupt" and "corrupt" in rows["fra"]["reason"]
    # other files of Frankfurt's still go there
    assert request(router.http_port, f"/{SRC}", xff(FRANKFURT)).location.startswith(fra)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_curl_and_aria2c_get_correct_bytes_through_the_router(site, tmp_path):
    router, _m = site
    wait_until(lambda: corrupt_found(router, LINUX), 30, interval=0.1, what="verification")
    url = f"http://127.0.0.1:{router.http_port}/{LINUX}"
    got = subprocess.run(["curl", "-sSfL", "-H", f"X-Forwarded-For: {FRANKFURT}", url],
                         capture_output=True, timeout=30)
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(got.stdout).hexdigest() == hashlib.sha256(FILES[LINUX]).hexdigest()
    if shutil.which("aria2c"):  # it asks for the Metalink and downloads from its mirrors
        done = subprocess.run(["aria2c", "-q", "-d", str(tmp_path),
                               f"--header=X-Forwarded-For: {FRANKFURT}", url],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        data = (tmp_path / LINUX).read_bytes()
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(FILES[LINUX]).hexdigest()


def test_corrupt_after_two_files_the_whole_mirror_is_corrupt(site):
    router, m = site
    fra = m["fra"].base
    m["fra"].files[f"/go/{DARWIN}"] = corrupt(FILES[DARWIN])
    assert request(router.http_port, f"/{DARWIN}", xff(FRANKFURT)).location  # HEAD: present
    wait_until(lambda: router.find("target_corrupt"), 30, interval=0.1,
               what="the mirror to be corrupt for the service")
    assert router.find("target_corrupt")[0]["target"] == "fra"
    where = request(router.http_port, f"/{SRC}", xff(FRANKFURT)).location  # a good copy
    assert where and not where.startswith(fra)
    status = json.loads(request(router.http_port, "/status.json").body)
    row = next(t for t in status["services"][0]["targets"] if t["id"] == "fra")
    assert row["corrupt"] and row["colour"] == "red" and LINUX in row["corrupt_files"]
    metrics = request(router.http_port, "/metrics").body.decode()
    assert 'mirror_router_target_corrupt{service="downloads",target="fra"} 1.0' in metrics


def test_a_mirror_that_fixes_its_copies_comes_back(site):
    router, m = site
    wait_until(lambda: router.find("target_corrupt"), 30, interval=0.1, what="corrupt")
    m["fra"].files.update({f"/go/{n}": data for n, data in FILES.items()})
    wait_until(lambda: len(router.find("file_verified")) >= 2, 60, interval=0.1,
               what="both copies to pass a later verification")
    fra = m["fra"].base
    wait_until(lambda: request(router.http_port, f"/{LINUX}",
                               xff(FRANKFURT)).location.startswith(fra), 10,
               what="Frankfurt to be chosen again")
    assert not corrupt_found(router, LINUX, "bj")  # bj's good copies were never marked
