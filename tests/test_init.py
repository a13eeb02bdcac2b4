"""``mirror-router init`` and what the wheel ships, black-box: a zone written by init
passes ``check`` and a real server redirects by it; bad mirrors are refused with the
reason; ``--print-unit`` prints the unit for this installation; the wheel carries the
example zone, the unit, a server.toml and the Dockerfile under share/mirror-router/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.harness import ROOT, RouterProcess
from tests.test_http import request, xff

TOKYO, FRANKFURT = "1.0.16.1", "5.9.0.1"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_zone_from_init_passes_check_and_steers(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    out = run("init", "--origin", "dl.example.org", "--ns", "ns1.example.net",
              "--address", "198.51.100.53", "--address", "2001:db8::53",
              "--mirror", "fra=https://fra.example.org/go@DE",
              "--mirror", "tyo=https://tyo.example.org/go/@35.68,139.69",
              "--mirror", "cdn=https://cdn.example.org/go/@anycast",
              "--out", str(zones / "dl.example.org.toml"))
    assert out.returncode == 0, out.stderr
    text = (zones / "dl.example.org.toml").read_text()
    assert 'country = "DE"' in text and "CHANGE" in text
    checked = run("check", "--zones", str(zones))
    assert checked.returncode == 0, checked.stderr
    assert "3 target(s)" in checked.stdout
    again = run("init", "--origin", "dl.example.org", "--ns", "ns1.example.net", "--mirror",
                "a=https://a.example/@DE", "--out", str(zones / "dl.example.org.toml"))
    assert again.returncode == 1 and "exists" in again.stderr  # never over a file
    router = RouterProcess(zones, "--no-probe", "--trusted-proxy", "127.0.0.1/32")
    try:
        for client, want in ((TOKYO, "https://tyo.example.org/go/"),
                             (FRANKFURT, "https://fra.example.org/go/")):
            r = request(router.http_port, "/go1.22.5.src.tar.gz", xff(client))
            assert r.status == 302 and r.location == want + "go1.22.5.src.tar.gz", client
    finally:
        assert router.stop() == 0


@pytest.mark.parametrize(("mirror", "reason"), [
    ("fra https://x/", "ID=URL@WHERE"),
    ("fra=ftp://x.example/@DE", "http"),
    ("fra=https://x.example/@91,10", "not LAT,LON"),
    ("fra=https://x.example/@XX", "not a country code"),
])
def test_init_refuses_a_bad_mirror_with_the_reason(mirror, reason):
    out = run("init", "--origin", "dl.example.org", "--ns", "ns1.example.net",
              "--mirror", mirror)
    assert out.returncode == 2 and reason in out.stderr, out.stderr
    assert out.stdout == ""


def test_print_unit_names_this_installations_script():
    out = run("init", "--print-unit")
    assert out.returncode == 0, out.stderr
    assert f"ExecStart={sys.prefix}/bin/mirror-router serve" in out.stdout
    assert "LoadCredential=dnssec.key:" in out.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_wheel_ships_the_example_zone_the_unit_and_the_settings(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path),
                          str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("mirror_router-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shared = {n.split("/data/share/mirror-router/")[1] for n in names
              if "/data/share/mirror-router/" in n}
    assert {"README.md", "go.example.com.toml", "mirror-router.service", "server.toml",
            "Dockerfile", "alerts.yml", "mirror-router.json"} <= shared
    assert "router/core/countries.txt" in names


def test_the_docker_build_context_holds_what_the_wheel_ships():
    """pip install . in the Dockerfile needs every data file: none may be left out of the
    build context (.dockerignore) or left uncopied before the install."""
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    dockerfile = (ROOT / "Dockerfile").read_text()
    before_install = dockerfile[:dockerfile.index("RUN pip install")]
    pyproject = (ROOT / "pyproject.toml").read_text()
    shipped = re.search(r'"share/mirror-router" = \[(.*?)\]', pyproject, re.S)[1]
    for name in re.findall(r'"([^"]+)"', shipped):
        top = name.split("/")[0]
        assert top not in ignored, name
        assert re.search(rf"^COPY .*\b{re.escape(top)}\b", before_install, re.M), name
