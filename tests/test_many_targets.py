"""A service of many targets: the DNS answer and the HTTP redirect rank only the targets
near the client (``core.nearest``), and still say what ``explain``, which ranks them
all, says (a real server, ``--no-probe``; 150 targets spread over the world)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from tests.conftest import write_zone
from tests.harness import ROOT, RouterProcess
from tests.test_dns import addresses, ask
from tests.test_http import request, xff

CLIENTS = ["1.0.16.1", "5.9.0.1", "202.106.0.20", "8.8.8.8", "200.160.0.1", "41.0.0.1",
           "1.120.0.1", "81.2.69.160", "93.184.216.34", "103.1.0.1"]


def zone(count: int) -> str:
    rnd = random.Random(28)
    targets = "".join(f'''
[[services.many.targets]]
id = "m{n}"
url = "http://m{n}.mirror.example.net/dl/"
location = {{ lat = {rnd.uniform(-45, 65):.2f}, lon = {rnd.uniform(-125, 150):.2f} }}
addresses = ["198.18.{n // 250}.{n % 250 + 1}"]
weight = {rnd.choice((50, 100, 100, 200))}
''' for n in range(count))
    return f'''
[zone]
origin = "many.example.com"
nameservers = ["ns1.many.example.com"]
hostmaster = "hostmaster@example.com"

[[zone.records]]
name = "ns1"
type = "A"
data = "198.51.100.53"

[services.many]
dns_names = ["dl"]
http_prefix = "/"
answers = 2
anycast_km = 3000
{targets}'''


def explain(zones, client: str, what: str, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "router", "explain", "--zones", str(zones),
                          "--client", client, "--json", *extra, what], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_dns_and_http_with_many_targets_say_what_explain_says(tmp_path):
    zones = write_zone(tmp_path / "zones", zone(150), "many.toml")
    router = RouterProcess(zones, "--no-probe", "--trusted-proxy", "127.0.0.1")
    try:
        for client in CLIENTS:
            whole = explain(zones, client, "dl.many.example.com", "--type", "A")
            answered = addresses(ask(router, "dl.many.example.com.", "A", ecs=(client, 32)))
            assert answered == sorted(whole["answer"]), (client, answered, whole["answer"])
            first = explain(zones, client, "/go.tar.gz")["candidates"][0]
            r = request(router.http_port, "/go.tar.gz", xff(client))
            assert r.status == 302 and r.location == first["url"] + "go.tar.gz", client
    finally:
        assert router.stop() == 0
