"""Never a bad download, black-box: a catalog, per-file availability, freshness, fallback to
the origin, Digest, Metalink (validated, and used by aria2c).

A loopback origin serves a Go-style release list and every file; three loopback mirrors:
``fra`` is complete, ``tyo`` is stale (of the newest release it has only the linux file,
the rest of it is missing), ``bj`` has everything but a truncated copy of the newest linux
file. The origin is anycast at 15,000 km, so it is the last resort for everyone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rnc2rng
from lxml import etree

from tests.conftest import write_zone
from tests.harness import LIST_PATH, ROOT, RouterProcess, downloads_zone, release_list
from tests.test_http import request, xff

TOKYO, BEIJING, FRANKFURT = "1.0.16.1", "202.106.0.20", "5.9.0.1"
NEW, OLD = "go1.22.5", "go1.22.4"
RC = "go1.23rc1"


def body(name: str, size: int = 2000) -> bytes:
    return hashlib.sha256(name.encode()).digest() * (size // 32) + b"!" * (size % 32)


FILES = {
    RC: {f"{RC}.linux-amd64.tar.gz": body("rc")},
    NEW: {f"{NEW}.linux-amd64.tar.gz": body("new-linux", 3000),
          f"{NEW}.darwin-arm64.tar.gz": body("new-darwin", 4 * 1024 * 1024 + 123),
          f"{NEW}.src.tar.gz": body("new-src")},
    OLD: {f"{OLD}.linux-amd64.tar.gz": body("old-linux"),
          f"{OLD}.src.tar.gz": body("old-src"),
          f"{OLD}.windows-amd64.zip": body("old-windows", 1024 * 1024)},  # listed hash is wrong
    "go1.21.0": {"go1.21.0.linux-amd64.tar.gz": body("only-at-origin")},
}
ALL = {name: data for files in FILES.values() for name, data in files.items()}
LIST = release_list([(RC, False, FILES[RC]), (NEW, True, FILES[NEW]), (OLD, True, FILES[OLD]),
                     ("go1.21.0", True, FILES["go1.21.0"])],
                    wrong_sha256=frozenset({f"{OLD}.windows-amd64.zip"}))
SERVICE = """
anycast_km = 15000
availability_wait = "5s"
health = { path = "/health", interval = "300ms", timeout = "1s", rise = 1, fall = 1 }
catalog.refresh = "1h"
"""


def stock(mirror, names):
    mirror.files.update({f"/go/{n}": ALL[n] for n in names})


@pytest.fixture(scope="module")
def site(tmp_path_factory, farm):
    m = {name: farm.mirror(name) for name in ("origin", "fra", "tyo", "bj")}
    m["origin"].files[LIST_PATH] = LIST
    stock(m["origin"], ALL)
    everywhere = [n for n in ALL if not n.startswith("go1.21.0")]
    stock(m["fra"], everywhere)
    stock(m["bj"], everywhere)
    m["bj"].files[f"/go/{NEW}.linux-amd64.tar.gz"] = ALL[f"{NEW}.linux-amd64.tar.gz"][:-500]
    stock(m["tyo"], [*FILES[OLD], f"{NEW}.linux-amd64.tar.gz"])
    zone = downloads_zone(m["origin"], {k: m[k] for k in ("fra", "tyo", "bj")}, SERVICE)
    router = RouterProcess(write_zone(tmp_path_factory.mktemp("zones"), zone, "dl.toml"),
                           "--trusted-proxy", "127.0.0.1/32", "--admin", "127.0.0.1:0")
    # The freshness probe finds tyo stale (it lacks two files of the newest release).
    router.wait_for("mirror_freshness", 10, count=3)
    yield router, m
    assert router.stop() == 0


def mirrorlist(router, path, client):
    return json.loads(request(router.http_port, f"{path}?mirrorlist=json", xff(client)).body)


def where(router, m, path, client):
    """The mirror a GET for ``path`` from ``client`` is sent to."""
    r = request(router.http_port, path, xff(client))
    assert r.status == 302, (r.status, r.body)
    return next(name for name, mirror in m.items() if r.location == f"{mirror.base}/go{path}")


def test_the_freshness_probe_finds_the_stale_mirror(site):
    router, _m = site
    changes = {e["target"]: e["new"] for e in router.find("mirror_freshness")}
    assert changes == {"fra": "fresh", "tyo": "stale", "bj": "fresh"}


@pytest.mark.parametrize("client", [TOKYO, BEIJING])
def test_the_newest_file_never_goes_to_the_stale_or_the_truncated_mirror(site, client):
    router, m = site
    path = f"/{NEW}.linux-amd64.tar.gz"
    for _ in range(3):
        assert where(router, m, path, client) == "fra"
    rows = {r["id"]: r for r in mirrorlist(router, path, client)["candidates"]}
    assert rows["tyo"]["reason"].startswith("stale") and rows["tyo"]["freshness"] == "stale"
    assert rows["bj"]["reason"] == "its copy of this file has the wrong size"
    assert rows["bj"]["file"] == "wrong size" and rows["bj"]["freshness"] == "fresh"
    assert rows["bj"]["file_checked"] == "2500 bytes, the catalog says 3000"
    assert rows["fra"]["file"] == "present" and rows["origin"]["file"] == "origin"


def test_a_good_copy_on_the_truncating_mirror_is_still_used(site):
    router, m = site
    assert where(router, m, f"/{NEW}.darwin-arm64.tar.gz", BEIJING) == "bj"
    assert where(router, m, f"/{NEW}.darwin-arm64.tar.gz", TOKYO) == "bj"  # tyo is stale


def test_older_files_go_to_the_stale_mirror_when_it_is_nearest_and_has_them(site):
    router, m = site
    assert where(router, m, f"/{OLD}.linux-amd64.tar.gz", TOKYO) == "tyo"
    rows = {r["id"]: r for r in mirrorlist(router, f"/{OLD}.src.tar.gz", TOKYO)["candidates"]}
    assert rows["tyo"]["rank"] == 1 and rows["tyo"]["file"] == "present"
    assert rows["tyo"]["freshness"] == "stale"


def test_a_file_no_mirror_has_goes_to_the_origin(site):
    router, m = site
    for client in (TOKYO, BEIJING, FRANKFURT):
        assert where(router, m, "/go1.21.0.linux-amd64.tar.gz", client) == "origin"
    rows = mirrorlist(router, "/go1.21.0.linux-amd64.tar.gz", TOKYO)["candidates"]
    assert [r["id"] for r in rows if not r["excluded"]] == ["origin"]
    assert all(r["reason"] == "known not to have this file" for r in rows if r["excluded"])


@pytest.mark.parametrize("path", ["/go1.22.6.linux-amd64.tar.gz", "/robots.txt",
                                  "/go1.22.5.linux-amd64.tar.gz.asc", "/sub/go1.22.5.src.tar.gz",
                                  "/go1.22.6.src.tar.gz.meta4", "/nope.sha256"])
def test_unlisted_files_get_404_and_no_mirror_is_asked(site, path):
    router, m = site
    before = {name: len(mirror.requests) for name, mirror in m.items()}
    r = request(router.http_port, path, xff(TOKYO))
    assert r.status == 404 and r.location is None
    assert r.body.startswith(b"404 Not Found: ") and b"not in the catalog" in r.body
    assert r.headers["Content-Type"].startswith("text/plain")
    assert all(h != "HEAD" for mirror in m.values() for h, _p in mirror.requests[
        before[mirror.name]:])


def test_the_digest_header_matches_the_listed_sha256(site):
    router, _m = site
    listed = {f["filename"]: f["sha256"] for r in json.loads(LIST) for f in r["files"]}
    for name in (f"{NEW}.linux-amd64.tar.gz", f"{OLD}.src.tar.gz"):
        r = request(router.http_port, f"/{name}", xff(FRANKFURT))
        algorithm, _, value = r.headers["Digest"].partition("=")
        assert algorithm == "sha-256"
        assert base64.b64decode(value).hex() == listed[name]
        assert base64.b64decode(value) == hashlib.sha256(ALL[name]).digest()
        assert f'</{name}.meta4>; rel=describedby; type="application/metalink4+xml"' in r.links


def test_sha256_files_are_served_from_the_catalog(site):
    router, _m = site
    r = request(router.http_port, f"/{NEW}.src.tar.gz.sha256")
    assert r.status == 200
    assert r.body.decode() == hashlib.sha256(ALL[f"{NEW}.src.tar.gz"]).hexdigest()


def test_mode_json_serves_the_cached_list(site):
    router, _m = site
    full = request(router.http_port, "/?mode=json&include=all")
    assert full.status == 200 and full.headers["Content-Type"].startswith("application/json")
    assert json.loads(full.body) == json.loads(LIST)
    current = json.loads(request(router.http_port, "/?mode=json").body)
    assert [r["version"] for r in current] == [NEW, "go1.21.0"]  # stable, newest per line


def test_the_mirrorlist_shows_the_file(site):
    router, _m = site
    data = mirrorlist(router, f"/{OLD}.src.tar.gz", FRANKFURT)
    assert data["file"] == {"name": f"{OLD}.src.tar.gz", "version": OLD, "size": 2000,
                            "sha256": hashlib.sha256(ALL[f"{OLD}.src.tar.gz"]).hexdigest()}
    page = request(router.http_port, f"/{NEW}.linux-amd64.tar.gz?mirrorlist", xff(TOKYO)).body
    assert b"<th>freshness</th>" in page and b"wrong size" in page and b"stale" in page
    shown = mirrorlist(router, f"/{NEW}.linux-amd64.tar.gz", TOKYO)["file"]
    assert f"{shown['size']:,} bytes, SHA-256 <code>{shown['sha256']}</code>".encode() in page
    assert f"File <code>{NEW}.linux-amd64.tar.gz</code> ({NEW})".encode() in page


# ---------------------------------------------------------------- Metalink

SCHEMA = Path(__file__).parent / "data" / "metalink4.rnc"
META = "{urn:ietf:params:xml:ns:metalink}"


@pytest.fixture(scope="module")
def metalink_schema():
    grammar = etree.fromstring(rnc2rng.dumps(rnc2rng.load(str(SCHEMA))).encode())
    return lambda data: (schema := etree.RelaxNG(grammar)).validate(
        etree.fromstring(data)) or pytest.fail(str(schema.error_log))


def test_the_meta4_document_validates_and_lists_the_good_mirrors_in_order(site,
                                                                          metalink_schema):
    router, m = site
    name = f"{NEW}.linux-amd64.tar.gz"
    r = request(router.http_port, f"/{name}.meta4", xff(TOKYO))
    assert r.status == 200 and r.headers["Content-Type"] == "application/metalink4+xml"
    metalink_schema(r.body)
    file = ET.fromstring(r.body).find(f"{META}file")
    assert file.get("name") == name
    assert file.findtext(f"{META}size") == "3000"
    assert file.find(f"{META}hash").get("type") == "sha-256"
    assert file.findtext(f"{META}hash") == hashlib.sha256(ALL[name]).hexdigest()
    urls = [(u.get("priority"), u.get("location"), u.text) for u in file.iter(f"{META}url")]
    # tyo (stale) and bj (truncated) are left out; the origin (anycast) has no country.
    assert urls == [("1", "de", f"{m['fra'].base}/go/{name}"),
                    ("2", None, f"{m['origin'].base}/go/{name}")]


def test_accept_metalink_on_the_file_url_gets_the_same_document(site, metalink_schema):
    router, _m = site
    path = f"/{OLD}.src.tar.gz"
    by_accept = request(router.http_port, path,
                        {**xff(BEIJING), "Accept": "application/metalink4+xml"})
    assert by_accept.status == 200
    metalink_schema(by_accept.body)
    assert by_accept.body == request(router.http_port, path + ".meta4", xff(BEIJING)).body
    urls = [u.text for u in ET.fromstring(by_accept.body).iter(f"{META}url")]
    assert len(urls) == 4 and urls[0].endswith(path)  # bj, tyo, fra, origin


def test_the_schema_rejects_what_rfc_5854_forbids(metalink_schema):
    ok = (b'<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a">'
          b'<url priority="1">http://a/a</url></file></metalink>')
    metalink_schema(ok)
    for bad in (ok.replace(b'priority="1"', b'priority="0"'), ok.replace(b' name="a"', b""),
                ok.replace(b"<file", b"<files").replace(b"</file>", b"</files>")):
        with pytest.raises(pytest.fail.Exception):
            metalink_schema(bad)


def aria2c(tmp_path, meta4: bytes, *options: str):
    source = tmp_path / "file.meta4"
    source.write_bytes(meta4)
    return subprocess.run(
        ["aria2c", "-M", str(source), "--dir", str(tmp_path / "out"), "--split=2",
         # Every loopback mirror is host 127.0.0.1, and aria2c counts connections per host.
         "--max-connection-per-server=2", "--min-split-size=1M", "--max-tries=1",
         "--console-log-level=warn", "--summary-interval=0", "--no-conf",
         "--follow-metalink=mem", *options],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not shutil.which("aria2c") and not os.environ.get("CI"),
                    reason="aria2c is not installed (Debian package aria2)")
def test_aria2c_downloads_through_the_meta4_from_two_mirrors_and_checks_the_hash(site,
                                                                                 tmp_path):
    router, m = site
    name = f"{NEW}.darwin-arm64.tar.gz"
    meta4 = request(router.http_port, f"/{name}.meta4", xff(BEIJING)).body
    before = {k: len(v.requests) for k, v in m.items()}
    done = aria2c(tmp_path, meta4)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / name).read_bytes() == ALL[name]
    used = {k for k, v in m.items() if ("GET", f"/go/{name}") in v.requests[before[k]:]}
    assert used == {"bj", "fra"}  # the two first mirrors of the document, at once


@pytest.mark.skipif(not shutil.which("aria2c") and not os.environ.get("CI"),
                    reason="aria2c is not installed (Debian package aria2)")
def test_aria2c_refuses_a_download_whose_hash_does_not_match(site, tmp_path):
    router, _m = site
    name = f"{OLD}.windows-amd64.zip"  # the catalog lists a sha256 that no copy has
    meta4 = request(router.http_port, f"/{name}.meta4", xff(BEIJING)).body
    done = aria2c(tmp_path, meta4)
    assert done.returncode == 32, done.stdout + done.stderr  # checksum validation failed


def explain(router, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "explain", "--zones",
                           str(router.zones), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_explain_server_says_what_the_router_does_with_a_truncated_copy(site):
    """explain --server asks the running router: Beijing's truncated copy of the newest
    file is never the answer, the stale Tokyo mirror is never a Link, as the 302 says."""
    router, m = site
    name = f"{NEW}.linux-amd64.tar.gz"
    sent = request(router.http_port, f"/{name}", xff(BEIJING))
    server = f"http://127.0.0.1:{router.admin_port}"
    live = explain(router, "--server", server, "--client", BEIJING, f"/{name}")
    assert live.returncode == 0, live.stderr
    assert f"302 Location: {sent.location}" in live.stdout
    assert sent.location == f"{m['fra'].base}/go/{name}"
    assert "tyo" not in "".join(x for x in live.stdout.splitlines() if "Link:" in x)
    data = json.loads(explain(router, "--server", server, "--client", BEIJING, "--json",
                              f"/{name}").stdout)
    rows = {row["id"]: row for row in data["candidates"]}
    assert rows["bj"]["file"] == "wrong size" and rows["bj"]["excluded"]
    assert rows["tyo"]["freshness"] == "stale"
    listing = json.loads(request(router.http_port, f"/{name}?mirrorlist=json",
                                 xff(BEIJING)).body)
    assert set(data) - {"known"} == set(listing)  # one shape
    assert data["location"] == listing["location"] == sent.location


def test_explain_offline_reads_the_catalog_and_says_what_it_cannot_know(site, tmp_path):
    router, m = site
    name = f"{NEW}.linux-amd64.tar.gz"
    out = explain(router, "--client", BEIJING, f"/{name}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "per-file checks" in lines[1] and "not known offline" in lines[1]
    assert f"catalog: read from {m['origin'].base}{LIST_PATH}" in lines[2]
    assert f"sha256 {hashlib.sha256(ALL[name]).hexdigest()}" in out.stdout
    unlisted = explain(router, "--client", BEIJING, "/go9.9.9.linux-amd64.tar.gz")
    assert unlisted.returncode == 1 and "not in the catalog" in unlisted.stderr
    listing = tmp_path / "list.json"
    listing.write_bytes(LIST)
    unfetched = explain(router, "--client", BEIJING, "--no-fetch", f"/{name}")
    assert "catalog: not fetched" in unfetched.stdout
    from_file = explain(router, "--client", BEIJING, "--catalog", str(listing), f"/{name}")
    assert f"catalog: read from {listing}" in from_file.stdout


def test_explain_server_refuses_clearly(site):
    router, _m = site
    server = f"http://127.0.0.1:{router.admin_port}"
    unknown = explain(router, "--server", server, "--client", BEIJING, "nope.example.org")
    assert unknown.returncode == 1 and "not a steered name" in unknown.stderr
    gone = explain(router, "--server", "http://127.0.0.1:9", "--client", BEIJING, "/x")
    assert gone.returncode == 1 and "cannot ask the router" in gone.stderr
