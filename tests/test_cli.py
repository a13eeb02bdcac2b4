"""The command line, black-box: explain and the example zone the README shows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import ROOT, RouterProcess
from tests.test_dns import addresses, ask, ecs_of


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("mirror-router ")


def test_explain_prints_the_ranking_with_figures():
    out = run("explain", "--client", "1.0.16.1", "go.example.com")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "1.0.16.0/20" in lines[1] and "JP" in lines[1]
    table = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [row[1] for row in table][:2] == ["google", "aliyun"]
    assert table[0][0] == "1*"  # chosen
    assert lines[-1].startswith("answer: 192.0.2.10")


def test_explain_json_agrees_with_the_server_answer():
    out = run("explain", "--client", "202.106.0.20", "--type", "AAAA", "--json", "go.example.com")
    data = json.loads(out.stdout)
    assert data["client"]["country"] == "CN"
    assert data["candidates"][0]["id"] == "tuna" and data["candidates"][0]["chosen"]
    assert data["answer"] == ["2001:db8::13"]
    assert all({"distance_km", "cost", "reason", "state"} <= set(c) for c in data["candidates"])


def test_explain_unknown_name_fails():
    out = run("explain", "--client", "1.0.16.1", "nope.example.org")
    assert out.returncode == 1
    assert "not a steered name" in out.stderr


@pytest.fixture(scope="module")
def example():
    router = RouterProcess(ROOT / "zones", "--no-probe")
    yield router
    assert router.stop() == 0


def test_readme_dig_example(example):
    """README: dig @127.0.0.1 -p 5300 go.example.com +subnet=1.0.16.0/24."""
    msg = ask(example, "go.example.com.", "A", ecs=("1.0.16.0", 24))
    assert addresses(msg) == ["192.0.2.10"]
    assert ecs_of(msg).scopelen == 20
    assert addresses(ask(example, "go.example.com.", "A", ecs=("202.106.0.0", 24))) == [
        "192.0.2.13"]


def test_example_zone_serves_its_static_records(example):
    assert addresses(ask(example, "ns1.go.example.com.", "A")) == ["198.51.100.53"]
    cname = ask(example, "www.go.example.com.", "A", ecs=("202.106.0.0", 24))
    assert addresses(cname) == ["192.0.2.13"]
