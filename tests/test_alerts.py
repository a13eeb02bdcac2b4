"""The operator's kit in deploy/: Prometheus alert rules (``promtool check rules``, and
``promtool test rules`` firing each alert on the series that should raise it and not on
the ones that should not), and a Grafana dashboard. Every series either names is one a
real server exports (scraped from a signed zone with a state file) or, for those only
traffic or a fleet brings, one the README's table documents."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT, RouterProcess
from tests.test_dnssec import cli
from tests.test_observability import scrape
from tests.test_rollover import CHILD, ZONE

PROMTOOL = shutil.which("promtool")
DEPLOY = ROOT / "deploy"
SERIES = re.compile(r"\bmirror_router_[a-z0-9_]+")


def named(text: str) -> set[str]:
    """The series a rule or panel names (a histogram's or counter's family, not its
    _bucket or _total sample, is what /metrics and the README call it)."""
    return set(SERIES.findall(text))


@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"],
                                  ["test", "rules", "alerts_test.yml"]])
def test_promtool_accepts_the_rules_and_they_fire_as_meant(args):
    if PROMTOOL is None:
        pytest.skip("needs promtool (Debian package prometheus; .ci/run installs it)")
    done = subprocess.run([PROMTOOL, *args], cwd=DEPLOY / "prometheus", capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_every_series_in_the_rules_and_the_dashboard_exists(tmp_path):
    zones = tmp_path / "zones"
    (zones / "keys").mkdir(parents=True)
    assert cli("dnssec", "keygen", "--zone", CHILD, "--out", str(zones / "keys" / "k.key")
               ).returncode == 0
    (zones / "go.toml").write_text(ZONE)
    state = tmp_path / "state.toml"
    state.write_text("")
    router = RouterProcess(zones, "--no-probe", "--state", str(state))
    try:
        exported = set(scrape(router))
    finally:
        assert router.stop() == 0
    exported |= {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in exported}
    readme = (ROOT / "README.md").read_text()
    documented = {f"mirror_router_{n}" for n in re.findall(r"^\| `([a-z0-9_]+)`", readme, re.M)}
    documented |= {f"mirror_router_{n}" for row in re.findall(r"^\| (`[^|]+)\|", readme, re.M)
                   for n in re.findall(r"`([a-z0-9_]+)`", row)}
    dashboard = json.loads((DEPLOY / "grafana" / "mirror-router.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = named((DEPLOY / "prometheus" / "alerts.yml").read_text()) | named(exprs) | named(
        json.dumps(dashboard["templating"]))
    assert len(used) >= 20
    unknown = {n for n in used if n not in exported and n not in documented}
    assert not unknown, unknown
    assert len(used & exported) >= 12  # most are on the scrape (no fleet, no traffic)
    assert {p["title"] for p in dashboard["panels"]} >= {"Targets up (1) or down (0)",
                                                         "DNSSEC keys and the next key event"}


def test_the_alerts_cover_what_an_operator_must_hear_of():
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    alerts = set(re.findall(r"alert: (\w+)", text))
    assert alerts == {"MirrorRouterReloadFailed", "MirrorRouterStateFileInvalid",
                      "MirrorRouterTargetDown", "MirrorRouterTargetCorrupt",
                      "MirrorRouterServiceAllDown", "MirrorRouterGeoIPStale",
                      "MirrorRouterFleetDisconnected", "MirrorRouterDnssecKeyOld"}
    assert Path(DEPLOY / "prometheus" / "alerts_test.yml").exists()
