"""Capacity, black-box and pure: a target over its capacity sheds client networks to the
next targets and takes them back with hysteresis; the spill spreads over near-equal next
targets; slow start ramps a recovered target's networks from 0 to all; a load_url that
fails or gives garbage is unknown, never down. Real loopback mirrors and a real server;
client networks from the embedded GeoLite2 (each a GeoIP network of its own)."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections import Counter

import dns.edns
import dns.message
import dns.query
import maxminddb
import pytest

from router.core import capacity as cap
from router.core.geo import embedded_database
from router.core.load import BadFigure, figure
from router.core.overrides import Override, Window, render
from tests.conftest import write_zone
from tests.harness import RouterProcess, wait_until
from tests.test_http import request, xff

TOKYO, OSAKA = (35.68, 139.69), (34.69, 135.50)


def networks(count: int, country: str | None = None, every: int = 1) -> list[str]:
    """An address in each of ``count`` IPv4 GeoIP networks (of ``country``; one in
    ``every``) that have a location: each a client network of its own."""
    found: list[str] = []
    with maxminddb.open_database(str(embedded_database())) as db:
        for n, (network, record) in enumerate(db):
            if n % every:
                continue
            if network.version != 4 or not isinstance(record, dict) \
                    or "location" not in record or network.prefixlen > 24:
                continue
            if country is not None and record.get("country", {}).get("iso_code") != country:
                continue
            found.append(str(network.network_address + 1))
            if len(found) == count:
                return found
    raise AssertionError(f"only {len(found)} networks")


def zone(mirrors: dict, service_keys: str = "", health_keys: str = "",
         tyo_keys: str = "", fall: int = 1) -> str:
    """``tyo`` in Tokyo and two mirrors at one place in Osaka (near-equal for everyone)."""
    places = {"tyo": TOKYO, "osa1": OSAKA, "osa2": OSAKA}
    targets = "".join(f'''
[[services.downloads.targets]]
id = "{tid}"
url = "{mirrors[tid].base}/dl/"
location = {{ lat = {lat}, lon = {lon} }}
addresses = ["192.0.2.{n}"]
{tyo_keys if tid == "tyo" else ""}
''' for n, (tid, (lat, lon)) in enumerate(places.items(), 1))
    return f'''
[zone]
origin = "cap.example.com"
hostmaster = "hostmaster@example.com"
nameservers = ["ns1.example.net"]

[services.downloads]
http_prefix = "/"
dns_names = ["@"]
km_per_ms = 0
{service_keys}
health = {{ path = "/health", interval = "500ms", timeout = "500ms", fall = {fall}{health_keys} }}
{targets}'''


@pytest.fixture(scope="module")
def mirrors(farm):
    return {tid: farm.mirror(tid) for tid in ("tyo", "osa1", "osa2")}


def status_of(router: RouterProcess, tid: str) -> dict:
    doc = json.loads(request(router.http_port, "/status.json").body)
    return next(t for t in doc["services"][0]["targets"] if t["id"] == tid)


def sent_to(router: RouterProcess, client: str) -> str:
    r = request(router.http_port, "/f.tar.gz", xff(client))
    assert r.status == 302, r.status
    return next(tid for tid, port in PORTS.items() if f":{port}/" in r.location)


PORTS: dict[str, int] = {}


class Steady:
    """Redirects at a steady rate, each from the next of ``clients``, in a thread."""

    def __init__(self, router: RouterProcess, clients: list[str], per_second: float) -> None:
        self.router, self.clients, self.gap = router, clients, 1 / per_second
        self.stop = threading.Event()
        self.sent: Counter[str] = Counter()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i, due = 0, time.monotonic()
        while not self.stop.is_set():
            self.sent[sent_to(self.router, self.clients[i % len(self.clients)])] += 1
            i += 1
            due += self.gap
            self.stop.wait(max(0.0, due - time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


# ---------------------------------------------------------------- pure


def test_shedding_lands_between_the_watermarks_and_holds():
    c = cap.Capacity(requests=100)
    shed, offered = 0.0, 200.0  # twice what it can take
    seen = []
    for _ in range(30):
        ratio = offered * (1 - shed) / 100
        shed = cap.shed_next(shed, ratio, c)
        seen.append(shed)
    assert c.low <= offered * (1 - shed) / 100 <= c.high
    assert seen[-1] == seen[-10]  # no flapping under a steady load
    for _ in range(30):  # the load falls: networks taken back, all of them
        shed = cap.shed_next(shed, 50 * (1 - shed) / 100, c)
    assert shed == 0.0


def test_a_share_is_stable_and_even():
    shares = [cap.share(bytes([1, 0, i // 256, i % 256, 24]), "tyo") for i in range(4000)]
    assert shares == [cap.share(bytes([1, 0, i // 256, i % 256, 24]), "tyo")
                      for i in range(4000)]
    assert abs(sum(s < 0.3 for s in shares) / 4000 - 0.3) < 0.03
    assert cap.pressure(0.0, None, 0.5).keep == 0.5
    assert 0.7 <= cap.pressure(0.25, 1, None).keep <= 0.75  # down to the grid


def test_the_border_goes_first():
    """Under one bar, networks whose next mirror is as good are shed more than those
    with none near: the share raised to a power that grows with the regret."""
    p = cap.pressure(0.5, 1.2, None)
    nets = [bytes([1, 0, i // 256, i % 256, 24]) for i in range(2000)]
    near = sum(p.keeps(n, "tyo", 0.0) for n in nets) / 2000
    middle = sum(p.keeps(n, "tyo", 3000.0) for n in nets) / 2000
    far = sum(p.keeps(n, "tyo", 7000.0) for n in nets) / 2000
    alone = sum(p.keeps(n, "tyo", float("inf")) for n in nets) / 2000
    assert near < 0.55 < middle < far and far > 0.88 and alone == 1.0, (near, far, alone)


@pytest.mark.parametrize("text, metric, expected", [
    ("42\n", None, (42.0, False)),
    ('# TYPE nginx_connections_active gauge\nnginx_connections_active 17\n',
     "nginx_connections_active", (17.0, False)),
    ('node_network_transmit_bytes_total{device="eth0"} 1e6\n'
     'node_network_transmit_bytes_total{device="lo"} 5\n',
     'node_network_transmit_bytes_total{device="eth0"}', (1e6, True)),
    ('# TYPE sent counter\nsent{a="1"} 2\nsent{a="2"} 3\n', "sent", (5.0, True)),
])
def test_a_load_figure_is_read_from_a_number_or_prometheus_text(text, metric, expected):
    assert figure(text, metric) == expected


@pytest.mark.parametrize("text, metric", [
    ("<html>", None), ("nan", None), ("-3", None), ("other 1\n", "mine"),
    ('mine{x="1"} 1\n', 'mine{x="2"}'), ("mine abc\n", "mine")])
def test_a_page_without_the_figure_is_refused(text, metric):
    with pytest.raises(BadFigure):
        figure(text, metric)


# ---------------------------------------------------------------- a real server


def test_over_capacity_sheds_to_the_next_targets_spread_and_takes_them_back(tmp_path,
                                                                           mirrors):
    PORTS.update({tid: int(m.base.rsplit(":", 1)[1]) for tid, m in mirrors.items()})
    zones = write_zone(tmp_path, zone(mirrors, tyo_keys="capacity = { requests = 10 }"))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32")
    try:
        clients = [c for c in networks(500, "JP") if sent_to(router, c) == "tyo"][:300]
        assert len(clients) >= 200
        assert status_of(router, "tyo")["capacity"]["requests"] == 10
        load = Steady(router, clients, 25)  # 2.5 times what Tokyo can take
        try:
            wait_until(lambda: status_of(router, "tyo")["shed"] > 0, 20,
                       what="Tokyo to shed")
            wait_until(lambda: 0.7 <= (status_of(router, "tyo")["load_ratio"] or 0) <= 0.95,
                       30, what="Tokyo's load to land between the watermarks")
            keeps = set()
            for _ in range(6):  # steady load, steady share: no flapping
                keeps.add(status_of(router, "tyo")["keep"])
                time.sleep(0.5)
            assert len(keeps) <= 2, keeps
            row = status_of(router, "tyo")
            assert row["pressure"].startswith("shed (load "), row
            load.sent.clear()
            time.sleep(4)
            split = dict(load.sent)
        finally:
            load.close()
        assert split.get("osa1", 0) > 10 and split.get("osa2", 0) > 10, split  # spread
        moved = [c for c in clients[:100] if sent_to(router, c) != "tyo"]
        listing = json.loads(request(router.http_port, "/f.tar.gz?mirrorlist=json",
                                     xff(moved[0])).body)
        tyo = next(c for c in listing["candidates"] if c["id"] == "tyo")
        assert tyo["exclusion"] == "shed" and tyo["reason"].startswith("shed (load"), tyo
        wait_until(lambda: status_of(router, "tyo")["shed"] == 0, 30,
                   what="Tokyo to take every network back once the load is gone")
        assert all(sent_to(router, c) == "tyo" for c in moved)
        metrics = request(router.http_port, "/metrics").body.decode()
        assert 'mirror_router_target_capacity{kind="requests",service="downloads",' \
               'target="tyo"} 10.0' in metrics
        assert "mirror_router_target_shed_ratio" in metrics
    finally:
        router.stop()


def test_a_file_no_catalog_lists_is_sized_by_one_head_and_counted(tmp_path, mirrors):
    """No catalog: the first redirect of a path asks its mirror for the size (one HEAD, in
    the background), and the redirects after it add that size to the target's load."""
    PORTS.update({tid: int(m.base.rsplit(":", 1)[1]) for tid, m in mirrors.items()})
    mirrors["tyo"].files["/dl/big.bin"] = b"x" * 1_000_000
    zones = write_zone(tmp_path, zone(mirrors, tyo_keys="capacity = { mbps = 1000 }"))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32")
    japan = next(c for c in networks(50, "JP") if sent_to(router, c) == "tyo")
    try:
        for _ in range(3):
            assert request(router.http_port, "/big.bin", xff(japan)).status == 302
        wait_until(lambda: mirrors["tyo"].heads("/dl/big.bin") == 1, 10, what="one HEAD")

        def mbps() -> float:
            assert request(router.http_port, "/big.bin", xff(japan)).status == 302
            return (status_of(router, "tyo")["load"] or {}).get("mbps") or 0.0
        wait_until(lambda: mbps() > 1.0, 15, interval=0.05,
                   what="the redirects' bytes in Tokyo's load")
        assert mirrors["tyo"].heads("/dl/big.bin") == 1  # asked once, remembered
    finally:
        mirrors["tyo"].files.pop("/dl/big.bin", None)
        router.stop()


def test_every_worker_shows_the_load_the_supervisor_measures(tmp_path, mirrors):
    """With ``--workers 2``: the supervisor sums the workers' redirects, and whichever
    worker answers /status.json shows the load (the figures are handed on beside the
    snapshot, which carries only what steering reads)."""
    PORTS.update({tid: int(m.base.rsplit(":", 1)[1]) for tid, m in mirrors.items()})
    zones = write_zone(tmp_path, zone(mirrors, tyo_keys="capacity = { requests = 1000 }"))
    router = RouterProcess(zones, "--workers", "2", "--trusted-proxy", "127.0.0.1/32")
    try:
        japan = next(c for c in networks(50, "JP") if sent_to(router, c) == "tyo")

        def shown() -> set[float]:
            for _ in range(10):
                sent_to(router, japan)
            return {(status_of(router, "tyo")["load"] or {}).get("requests") or 0.0
                    for _ in range(6)}
        wait_until(lambda: min(shown()) > 0, 15, what="the load on every worker's /status")
    finally:
        router.stop()


def test_spill_from_a_failed_target_spreads_over_the_near_equal_next(tmp_path, mirrors):
    PORTS.update({tid: int(m.base.rsplit(":", 1)[1]) for tid, m in mirrors.items()})
    zones = write_zone(tmp_path, zone(mirrors))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32")
    try:
        clients = [c for c in networks(300, "JP") if sent_to(router, c) == "tyo"][:200]
        mirrors["tyo"].health_status = 503
        wait_until(lambda: status_of(router, "tyo")["state"] == "down", 10, what="Tokyo down")
        went = Counter(sent_to(router, c) for c in clients)
        assert went["tyo"] == 0 and min(went["osa1"], went["osa2"]) >= len(clients) // 4, went
    finally:
        mirrors["tyo"].health_status = 200
        router.stop()


def dns_answer(router: RouterProcess, client: str) -> str:
    q = dns.message.make_query("cap.example.com.", "A", use_edns=0,
                               options=[dns.edns.ECSOption(client, 24)])
    reply = dns.query.udp(q, "127.0.0.1", port=router.dns_port, timeout=3)
    return reply.answer[0][0].address


def kept_share(router: RouterProcess, clients: list[str]) -> float:
    return sum(dns_answer(router, c) == "192.0.2.1" for c in clients) / len(clients)


def test_slow_start_ramps_a_recovered_target_over_2000_networks(tmp_path, mirrors):
    """``tyo`` is anycast and cheapest for everyone: every network is its own once it is
    fully back. Measured over 2,000 networks at the start, middle and end of its 20 s
    ramp."""
    zones = write_zone(tmp_path, zone(mirrors, 'anycast_km = 0.001', ', slow_start = "20s"',
                                      'weight = 1000', fall=3)
                       .replace('location = { lat = 35.68, lon = 139.69 }',
                                'location = "anycast"'))
    router = RouterProcess(zones)
    clients = networks(2000)
    try:
        assert kept_share(router, clients) == 1.0  # up from the start: no ramp
        mirrors["tyo"].health_status = 503
        wait_until(lambda: status_of(router, "tyo")["state"] == "down", 10, what="Tokyo down")
        assert kept_share(router, clients[:200]) == 0.0
        mirrors["tyo"].health_status = 200
        wait_until(lambda: status_of(router, "tyo")["ramping"] is not None, 10,
                   what="Tokyo back, ramping")
        seen = []
        for goal in (0.0, 0.5):
            wait_until(lambda g=goal: status_of(router, "tyo")["ramping"] is not None
                       and status_of(router, "tyo")["ramping"] >= g, 20,
                       what=f"the ramp at {goal:.0%}")
            before = status_of(router, "tyo")["keep"]
            share = kept_share(router, clients)
            after = status_of(router, "tyo")["keep"]
            seen.append((before, share, after))
            assert before - 0.05 <= share <= after + 0.05, seen
        # about none at the start and half in the middle (a sweep takes a second or two
        # of a 20 s ramp: the bars around it bound it tighter, above)
        assert seen[0][1] <= 0.2 and 0.3 <= seen[1][1] <= 0.7, seen
        wait_until(lambda: status_of(router, "tyo")["ramping"] is None, 25,
                   what="the ramp to end")
        assert kept_share(router, clients) == 1.0
    finally:
        mirrors["tyo"].health_status = 200
        router.stop()


def test_a_scheduled_drain_drains_slowly_from_the_windows_start(tmp_path, mirrors):
    """With ``slow_start = "12s"``, a drain window from T: Tokyo keeps all its networks
    before T, never drops them all at once at T (the drain and its first step are one
    snapshot), keeps about half in the middle of the 12 s, says "draining (N%)", and
    none at the end."""
    zones = write_zone(tmp_path, zone(mirrors, 'anycast_km = 0.001', ', slow_start = "12s"',
                                      'weight = 1000', fall=3)
                       .replace('location = { lat = 35.68, lon = 139.69 }',
                                'location = "anycast"'))
    (tmp_path / "state").mkdir()
    state, start = tmp_path / "state" / "state.toml", int(time.time()) + 4
    state.write_text(render({}, (Window("tyo", Override.DRAIN, start, start + 600),)))
    router = RouterProcess(zones, "--state", str(state))
    clients = networks(1000)
    try:
        assert kept_share(router, clients[:100]) == 1.0  # not yet
        first = []  # the share of 40 networks, polled across T
        while time.time() < start + 1.5:
            first.append((round(time.time() - start, 2), kept_share(router, clients[:40])))
        assert any(t < 0 for t, _ in first) and any(t > 0.5 for t, _ in first), first
        assert min(share for _, share in first) >= 0.7, first
        wait_until(lambda: (status_of(router, "tyo")["ramping"] or 1) <= 0.5, 15,
                   what="the drain half-way")
        before = status_of(router, "tyo")
        share = kept_share(router, clients)
        after = status_of(router, "tyo")
        assert before["pressure"].startswith("draining (") and before["admin"] == "drain"
        assert after["keep"] - 0.05 <= share <= before["keep"] + 0.05, (before, share, after)
        assert 0.25 <= share <= 0.6, share
        wait_until(lambda: status_of(router, "tyo")["ramping"] is None, 15,
                   what="the drain to end")
        assert kept_share(router, clients[:200]) == 0.0
    finally:
        router.stop()


def test_a_load_url_that_fails_or_lies_is_unknown_never_down(tmp_path, mirrors):
    tyo = mirrors["tyo"]
    tyo.files["/metrics"] = b'# TYPE nginx_connections_active gauge\n' \
                            b'nginx_connections_active{server="a"} 30\n'
    keys = (f'capacity = {{ load = 100 }}\nload_url = "{tyo.base}/metrics"\n'
            'load_metric = "nginx_connections_active"')
    zones = write_zone(tmp_path, zone(mirrors, tyo_keys=keys))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32")
    try:
        wait_until(lambda: (status_of(router, "tyo")["load"] or {}).get("load") == 30.0, 10,
                   what="the load_url's figure")
        assert status_of(router, "tyo")["load_ratio"] == 0.3
        tyo.files["/metrics"] = b"<html>busy</html>"  # garbage
        router.wait_for("load_read_failed", 20)
        wait_until(lambda: (status_of(router, "tyo")["load"] or {}).get("load") is None, 10,
                   what="the load to be unknown")
        row = status_of(router, "tyo")
        assert row["state"] == "up" and row["shed"] == 0.0 and row["load_ratio"] is None
        tyo.files.pop("/metrics")  # 404: failing
        time.sleep(1.5)
        assert status_of(router, "tyo")["state"] == "up"
    finally:
        router.stop()


def test_networks_are_distinct_client_networks():
    found = networks(50, "JP")
    nets = {ipaddress.ip_network(f"{a}/24", strict=False) for a in found}
    assert len(found) == 50 and len(nets) >= 40


def test_a_fleet_sums_every_nodes_load(tmp_path, city_mirrors, store):
    """Redirects through n1 only: n2 and n3 see Tokyo's load from the store."""
    from tests.test_fleet import three_nodes
    from tests.test_simulate import capacity_zone
    zones = write_zone(tmp_path / "zones", capacity_zone(city_mirrors).replace(
        "capacity = { mbps = 800 }", "capacity = { requests = 1000 }"))
    PORTS.update({tid: int(m.base.rsplit(":", 1)[1]) for tid, m in city_mirrors.items()})
    with three_nodes(zones, store, tmp_path, {}) as nodes:
        load = Steady(nodes["n1"], ["1.0.16.1"], 20)
        try:
            def others_see_it() -> bool:
                return all(((status_of(nodes[n], "tyo")["load"] or {}).get("requests") or 0)
                           > 5 for n in ("n2", "n3"))
            wait_until(others_see_it, 20, what="n2 and n3 to count n1's redirects")
        finally:
            load.close()
