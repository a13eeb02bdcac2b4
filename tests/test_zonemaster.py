"""Zonemaster (zonemaster-cli, Debian package zonemaster-cli) on the example zone's
defaults: its Zone tests (SOA refresh, retry, expire, minimum, MNAME, MX) and Nameserver
tests (EDNS, case, unknown opcodes and types, AXFR refused, ...) find nothing to
note. Zonemaster asks port 53 only: the router listens on 127.0.0.1:53 too (the test
skips where that port cannot be had), and the zone's name server addresses are moved
to loopback in the test's copy."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest

from tests.harness import ROOT, RouterProcess

ZONEMASTER = shutil.which("zonemaster-cli")
EXPECTED = {"Zone": {"REFRESH_MINIMUM_VALUE_OK", "RETRY_MINIMUM_VALUE_OK",
                     "EXPIRE_MINIMUM_VALUE_OK", "SOA_DEFAULT_TTL_MAXIMUM_VALUE_OK"},
            "Nameserver": {"EDNS0_SUPPORT", "AXFR_FAILURE", "CASE_QUERIES_RESULTS_OK",
                           "NO_RECURSOR"}}
LOOPBACK_ONLY = {"Z01_MNAME_HAS_LOCALHOST_ADDR"}  # the test's loopback name servers


def port_53_free() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 53))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("module", ["Zone", "Nameserver"])
def test_zonemaster_notes_nothing_on_the_defaults(tmp_path, module):
    if ZONEMASTER is None:
        pytest.skip("needs zonemaster-cli (Debian package; .ci/run installs it)")
    if not port_53_free():
        pytest.skip("zonemaster asks port 53 only, and 127.0.0.1:53 is taken here")
    text = (ROOT / "zones" / "go.example.com.toml").read_text()
    (tmp_path / "go.example.com.toml").write_text(
        text.replace("198.51.100.53", "127.0.0.1").replace("203.0.113.53", "127.0.0.1"))
    router = RouterProcess(tmp_path, "--no-probe", "--dns", "127.0.0.1:53")
    try:
        done = subprocess.run(
            [ZONEMASTER, "go.example.com", "--ns", "ns1.go.example.com/127.0.0.1",
             "--ns", "ns2.go.example.com/127.0.0.1", "--no-ipv6", "--test", module,
             "--level", "INFO", "--json"], capture_output=True, text=True, timeout=120,
            check=False)
    finally:
        assert router.stop() == 0
    found = json.loads(done.stdout or "[]")
    assert done.returncode == 0, done.stderr
    noted = [m for m in found if m["level"] != "INFO" and m["tag"] not in LOOPBACK_ONLY]
    assert not noted, noted
    passed = {m["tag"] for m in found if m["level"] == "INFO"}  # it did ask us
    assert passed >= EXPECTED[module], passed
