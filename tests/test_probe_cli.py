"""``mirror-router probe``, black-box: the table operators build by hand with ``curl -w``
loops, against real loopback mirrors, one of them over HTTPS with a real CA."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from tests.harness import CITIES, ROOT, five_city_zone
from tests.tls import make_ca


@pytest.fixture(scope="module")
def setup(farm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    pki = make_ca(folder)
    mirrors = {tid: farm.mirror(tid, host="localhost") for tid in ("bj", "tyo", "fra", "iad")}
    mirrors["gru"] = farm.mirror("gru", tls=pki.server_context(), host="localhost")
    zones = folder / "zones"
    zones.mkdir()
    zone = five_city_zone(mirrors, timeout="3s", km_per_ms=100)  # the rank column prices waits
    (zones / "test.example.com.toml").write_text(zone)
    return zones, pki, mirrors


def probe(zones, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-m", "router", "probe", "--zones", str(zones),
                           *args], cwd=ROOT, text=True, timeout=60, **kw)


def rows(out: str) -> dict[str, list[str]]:
    lines = out.split("\n\n")[0].splitlines()
    head = ["target", "DNS", "connect", "TLS", "TTFB", "wait", "total", "rank", "status"]
    assert lines[0].split() in (head, head[:7] + head[8:])
    return {line.split()[0]: line.split(maxsplit=len(lines[0].split()) - 1)[1:]
            for line in lines[1:]}


def test_one_row_per_target_with_every_phase_sorted_by_first_byte(setup):
    zones, pki, mirrors = setup
    mirrors["fra"].delay = 0.3
    try:
        done = probe(zones, "--ca-file", str(pki.ca), "--client", "1.0.16.1")
    finally:
        mirrors["fra"].delay = 0.0
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    assert set(table) == set(CITIES)
    for tid, (dns, connect, tls, ttfb, wait, total, _rank, status) in table.items():
        for cell in (dns, connect, ttfb, wait, total):
            assert float(cell) >= 0, (tid, cell)
        assert float(dns) > 0  # "localhost" is looked up for real
        assert float(dns) <= float(connect) <= float(ttfb) <= float(total)
        assert status == "200"
        assert (tls != "-") == (tid == "gru")  # only the HTTPS mirror has a handshake
    assert float(table["gru"][1]) <= float(table["gru"][2]) <= float(table["gru"][3])
    ttfbs = [float(cells[3]) for cells in table.values()]
    assert ttfbs == sorted(ttfbs) and list(table)[-1] == "fra"  # the slow one last
    assert float(table["fra"][3]) >= 300 and float(table["fra"][4]) >= 250
    assert table["tyo"][6] == "1" and table["bj"][6] == "2"  # as a client in Tokyo gets
    assert table["fra"][6] == "5"  # 300 ms of waiting costs 30,000 km
    assert "rank for 1.0.16.0/20 (Tokyo)" in done.stdout


def test_without_the_ca_the_https_mirror_fails_verification(setup):
    zones, _, _ = setup
    done = probe(zones)
    assert done.returncode == 2  # some target failed its check
    table = rows(done.stdout)
    assert list(table)[-1] == "gru"  # failures sort last
    assert table["gru"][:6] == ["-"] * 6
    assert table["gru"][6].startswith("TLS: certificate verify failed: unable to get local")
    failed = [line for line in done.stdout.splitlines() if " failed: checked " in line]
    assert len(failed) == 1 and failed[0].startswith("gru failed: checked https://localhost:")
    assert failed[0].endswith("/health")


def test_count_and_json(setup):
    zones, pki, _ = setup
    done = probe(zones, "--ca-file", str(pki.ca), "--count", "2", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["count"] == 2 and len(data["targets"]) == 5
    for t in data["targets"]:
        assert len(t["checks"]) == 2 and all(c["ok"] for c in t["checks"])
        assert t["status"] == "200 (2/2 ok)"
        assert (t["median_ms"]["tls"] is not None) == (t["id"] == "gru")
        assert t["median_ms"]["ttfb"] <= t["median_ms"]["total"]


def test_a_progress_line_shows_on_a_terminal(setup):
    zones, pki, _ = setup
    leader, follower = pty.openpty()
    try:
        done = probe(zones, "--ca-file", str(pki.ca), "--count", "2", stderr=follower,
                     capture_output=False, stdout=subprocess.PIPE)
        os.set_blocking(leader, False)
        shown = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 0
    assert "\r\x1b[Kprobing [" in shown and "] 10/10" in shown
    assert shown.endswith("\r\x1b[K")  # cleared when done
    assert "probing" not in done.stdout
