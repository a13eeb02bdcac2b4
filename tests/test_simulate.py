"""``mirror-router simulate``: what it predicts is what the server does (1,000 client
networks, each asked of a real server over DNS with ECS), a capacity it sheds to the
next mirrors before any is over, a mirror down moves its traffic, and the flows drawn
on the world map."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_zone
from tests.harness import ROOT, RouterProcess, five_city_zone
from tests.test_capacity import networks
from tests.test_dns import ask

ADDRESSES = {f"192.0.2.{n}": tid for n, tid in enumerate(("bj", "tyo", "fra", "iad", "gru"),
                                                          1)}


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "simulate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def zones(tmp_path_factory, city_mirrors) -> Path:
    return write_zone(tmp_path_factory.mktemp("zones"), five_city_zone(city_mirrors))


def test_simulate_agrees_with_the_server_for_1000_networks(zones, tmp_path):
    clients = networks(1000, every=97)  # from the whole address space
    traffic = tmp_path / "traffic.csv"
    traffic.write_text("prefix,requests_per_second,mean_bytes\n"
                       + "".join(f"{c}/24,1,1000000\n" for c in clients))
    done = simulate("--zones", str(zones), "--traffic", str(traffic), "--json",
                    "--service", "downloads")
    assert done.returncode == 0, done.stderr
    predicted = json.loads(done.stdout)["by_prefix"]
    router = RouterProcess(zones, "--no-probe")
    try:
        served = {f"{c}/24": ADDRESSES[ask(router, "test.example.com.", "A",
                                           ecs=(c, 24)).answer[0][0].address]
                  for c in clients}
    finally:
        router.stop()
    differ = {p: (predicted[p], served[p]) for p in served if predicted[p] != served[p]}
    assert not differ, list(differ.items())[:10]
    assert len(set(served.values())) == 5  # the whole world: every city chosen somewhere


def capacity_zone(city_mirrors) -> str:
    text = five_city_zone(city_mirrors)
    return text.replace('country = "JP"', 'country = "JP"\ncapacity = { mbps = 800 }')


def test_a_capacity_sheds_to_the_next_before_any_is_over(tmp_path, city_mirrors):
    zones = write_zone(tmp_path / "zones", capacity_zone(city_mirrors))
    traffic = tmp_path / "countries.csv"
    traffic.write_text("country,requests_per_second,mean_bytes\n"
                       "JP,2,100000000\nDE,1,100000000\nUS,1,100000000\n")  # JP: 1600 Mbit/s
    done = simulate("--zones", str(zones), "--traffic", str(traffic), "--json",
                    "--service", "downloads", "--svg", str(tmp_path / "flows.svg"))
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    rows = {r["id"]: r for r in doc["targets"]}
    assert doc["overloaded"] == [] and rows["tyo"]["keep"] < 0.6
    assert 0.75 * 800 * 0.95 <= rows["tyo"]["mbps"] <= 0.9 * 800 * 1.05, rows["tyo"]
    assert rows["bj"]["mbps"] > 0  # the spill went next door
    drawing = (tmp_path / "flows.svg").read_text()
    assert drawing.count("class='flow'") >= 4 and "JP → tyo" in drawing
    text = simulate("--zones", str(zones), "--traffic", str(traffic), "--service",
                    "downloads", "--down", "tyo")
    assert text.returncode == 0 and "over capacity: none" in text.stdout
    tyo = next(line for line in text.stdout.splitlines() if line.startswith("tyo "))
    assert " 0.0% " in tyo, text.stdout


def test_bad_traffic_is_refused_with_the_reason(tmp_path, zones):
    bad = tmp_path / "bad.csv"
    bad.write_text("city,requests_per_second,mean_bytes\nTokyo,1,2\n")
    done = simulate("--zones", str(zones), "--traffic", str(bad))
    assert done.returncode == 1 and "first column is country or prefix" in done.stderr
    bad.write_text("country,rps\n")
    done = simulate("--zones", str(zones), "--traffic", str(bad))
    assert done.returncode == 1 and "header" in done.stderr
