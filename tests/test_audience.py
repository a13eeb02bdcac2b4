"""Who each mirror may serve: private mirrors (only_networks, only_asns), mirrors preferred
for their own networks and ASes (networks, asns), continent rules, and routes per client
network; an ECS scope that never carries a rule's answer outside it. City and ASN
databases written by the test (mmdb-writer), a real router, dnspython and unbound."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

from router.core.asn import AsnDb
from router.core.audience import Placer, Rules
from router.core.config import ConfigError
from router.core.geo import Locator
from router.core.prefixes import PrefixTable
from router.core.zonefile import load
from tests.conftest import write_zone
from tests.harness import RouterProcess, wait_until
from tests.test_http import request, xff
from tests.test_unbound import running_unbound

# The test world: three /16s, each one GeoIP network; two ASes in the Tokyo one.
FRANKFURT, TOKYO, SAO_PAULO = "81.0.0.0/16", "82.0.0.0/16", "83.0.0.0/16"
UNI = "81.0.5.0/24"  # a university's network, inside Frankfurt's
PLACES = {FRANKFURT: (50.11, 8.68, "DE", "EU"), TOKYO: (35.68, 139.69, "JP", "AS"),
          SAO_PAULO: (-23.55, -46.63, "BR", "SA")}
ASES = {"82.0.0.0/17": (64500, "Example ISP"), "82.0.128.0/17": (64501, "Other ISP")}

ZONE = """
[zone]
origin = "test.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.net"

[services.dl]
dns_names = ["www"]
http_prefix = "/"
ttl = 30
{extra}

[[services.dl.targets]]
id = "fra"                      # public, Frankfurt
url = "https://fra.example.net/"
location = {{ lat = 50.11, lon = 8.68 }}
addresses = ["192.0.2.1"]
health_url = "{fra_health}/health"

[[services.dl.targets]]
id = "uni"                      # the university's own: its network only, far as it is
url = "https://uni.example.net/"
location = {{ lat = 40.71, lon = -74.0 }}
addresses = ["192.0.2.2"]
health_url = "{ok_health}/health"
only_networks = ["{uni}"]

[[services.dl.targets]]
id = "tyo"                      # public, Tokyo
url = "https://tyo.example.net/"
location = {{ lat = 35.68, lon = 139.69 }}
addresses = ["192.0.2.3"]
health_url = "{ok_health}/health"

[[services.dl.targets]]
id = "isp"                      # the ISP's own, in Osaka: preferred for its AS
url = "https://isp.example.net/"
location = {{ lat = 34.69, lon = 135.50 }}
addresses = ["192.0.2.4"]
health_url = "{ok_health}/health"
asns = [64500]

[[services.dl.targets]]
id = "sao"                      # public, Sao Paulo, for South America only
url = "https://sao.example.net/"
location = {{ lat = -23.55, lon = -46.63 }}
addresses = ["192.0.2.5"]
health_url = "{ok_health}/health"
only_continents = ["SA"]

[[services.dl.routes]]
name = "south-to-fra"           # South America's network goes to Frankfurt first
networks = ["{south}"]
targets = ["fra"]
"""


def city(lat: float, lon: float, country: str, continent: str) -> dict:
    return {"location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)},
            "country": {"iso_code": country}, "continent": {"code": continent}}


@pytest.fixture(scope="module")
def databases(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mmdb")
    c = MMDBWriter(ip_version=6, database_type="Test-City", ipv4_compatible=True)
    for network, (lat, lon, country, continent) in PLACES.items():
        c.insert_network(IPSet([network]), city(lat, lon, country, continent))
    c.to_db_file(str(folder / "city.mmdb"))
    a = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    for network, (number, org) in ASES.items():
        a.insert_network(IPSet([network]), {"autonomous_system_number": number,
                                            "autonomous_system_organization": org})
    a.to_db_file(str(folder / "asn.mmdb"))
    return folder / "city.mmdb", folder / "asn.mmdb"


def zone_text(extra: str = "", fra_health: str = "http://127.0.0.1:9",
              ok_health: str = "http://127.0.0.1:9") -> str:
    """The zone; each target's health checked at a loopback mirror (none is ever probed
    at its public name)."""
    return ZONE.format(extra=extra, fra_health=fra_health, ok_health=ok_health, uni=UNI,
                       south=SAO_PAULO)


# ---------------------------------------------------------------- the pure parts


def net(text: str) -> int:
    return int(ipaddress.ip_address(text))


def test_a_prefix_table_finds_every_network_holding_an_address():
    table = PrefixTable([(ipaddress.ip_network("198.18.0.0/15"), "a"),
                         (ipaddress.ip_network("198.19.0.0/16"), "b"),
                         (ipaddress.ip_network("2001:db8::/32"), "v6")])
    assert table.match(net("198.19.2.3"), 4) == [(16, ["b"]), (15, ["a"])]
    assert table.match(net("198.18.0.1"), 4) == [(15, ["a"])]
    assert table.match(net("11.0.0.1"), 4) == []
    assert table.match(net("2001:db8::1"), 6) == [(32, ["v6"])]


@pytest.mark.parametrize(("address", "prefix", "narrowed"), [
    ("81.0.0.1", 16, 22),    # 81.0.0.0/22 is the widest that holds no part of 81.0.5.0/24
    ("81.0.6.1", 16, 23),    # 81.0.6.0/23: just past it
    ("81.0.200.1", 16, 17),  # the other half of the /16
    ("81.0.5.7", 16, 16),    # inside the /24: nothing to split off (it matches it)
    ("81.0.0.1", 23, 23),    # already narrow enough
])
def test_a_network_is_narrowed_past_rules_it_does_not_match(address, prefix, narrowed):
    table = PrefixTable([(ipaddress.ip_network(UNI), "uni")])
    assert table.split(net(address), 4, prefix) == narrowed


networks = st.builds(lambda first, length: ipaddress.IPv4Network(
    (first >> (32 - length) << (32 - length), length)),
    st.integers(0, 2**32 - 1), st.integers(8, 32))


@given(st.lists(networks, max_size=12), st.lists(st.integers(0, 2**32 - 1), max_size=20),
       st.integers(0, 32))
def test_the_span_index_agrees_with_every_network_tried_in_turn(nets, addresses, prefix):
    """``match`` and ``split`` (one bisection into spans) against the definitions: every
    network holding the address, longest first; the shortest network of at least
    ``prefix`` bits around the address holding no network that does not hold it."""
    table = PrefixTable([(n, str(n)) for n in nets])
    for value in addresses:
        address = ipaddress.IPv4Address(value)
        holding = sorted({n for n in nets if address in n}, key=lambda n: -n.prefixlen)
        assert [(length, sorted(v)) for length, v in table.match(value, 4)] == [
            (n.prefixlen, sorted(str(m) for m in nets if m == n)) for n in holding]
        length = next(
            length for length in range(prefix, 33)
            if not any(ipaddress.IPv4Network((value, length), strict=False).overlaps(n)
                       and address not in n for n in nets))
        assert table.split(value, 4, prefix) == length, (nets, address, prefix)


def test_rules_place_a_client_by_network_and_as(databases, tmp_path):
    city_db, asn_db = databases
    config = load(write_zone(tmp_path, zone_text()))
    asn = AsnDb(asn_db)
    placer = Placer(Locator(city_db), Rules(config, asn), asn)  # AS rules: the AS's networks
    inside = placer.locate("81.0.5.9")
    assert inside.network == ipaddress.ip_network(UNI)  # the rule's network: never wider
    assert {r.subject for r in inside.matched} == {"uni"}
    outside = placer.locate("81.0.0.9")
    assert outside.network == ipaddress.ip_network("81.0.0.0/22") and not outside.matched
    isp = placer.locate("82.0.1.1")
    assert isp.asn == 64500 and {r.subject for r in isp.matched} == {"isp"}
    assert isp.network == ipaddress.ip_network("82.0.0.0/17")  # the AS's own prefix counts


# ---------------------------------------------------------------- a real router


@pytest.fixture(scope="module")
def router(tmp_path_factory, databases, farm):
    city_db, asn_db = databases
    fra_health, ok_health = farm.mirror("audience-fra"), farm.mirror("audience-ok")
    zones = write_zone(tmp_path_factory.mktemp("zones"), zone_text(
        'health = { path = "/health", interval = "300ms", timeout = "1s", rise = 1, fall = 1 }',
        fra_health.base, ok_health.base))
    r = RouterProcess(zones, "--geoip", str(city_db), "--asn-db", str(asn_db),
                      "--trusted-proxy", "127.0.0.1/32")
    r.fra_health = fra_health
    yield r
    assert r.stop() == 0


def dns_answer(router: RouterProcess, subnet: str, port: int | None = None
               ) -> tuple[list[str], int]:
    address, _, prefix = subnet.partition("/")
    q = dns.message.make_query("www.test.example.com", "A", use_edns=0,
                               options=[dns.edns.ECSOption(address, int(prefix or 32))])
    r = dns.query.udp(q, "127.0.0.1", port=port or router.dns_port, timeout=5)
    ecs = next((o for o in r.options if isinstance(o, dns.edns.ECSOption)), None)
    return sorted(rd.address for rrset in r.answer for rd in rrset), \
        ecs.scopelen if ecs else -1


def redirect(router: RouterProcess, client: str) -> str:
    where = request(router.http_port, "/f.tar.gz", xff(client)).location or ""
    return where.removeprefix("https://").partition(".")[0]


@pytest.mark.parametrize(("client", "target"), [
    ("81.0.5.9", "uni"),      # inside the private mirror's prefix: its own mirror
    ("81.0.0.9", "fra"),      # outside: never the private one
    ("81.0.255.1", "fra"),
    ("82.0.1.1", "isp"),      # AS64500: its ISP's mirror, though Tokyo is nearer
    ("82.0.200.1", "tyo"),    # AS64501: the nearest
    ("83.0.0.9", "fra"),      # routed to Frankfurt first (South America's route)
])
def test_both_faces_decide_by_the_rules(router, client, target):
    assert redirect(router, client) == target
    addresses, _scope = dns_answer(router, f"{client}/32")
    assert addresses == [f"192.0.2.{['fra', 'uni', 'tyo', 'isp', 'sao'].index(target) + 1}"]


def test_a_route_falls_back_to_steering_when_its_targets_are_down(router):
    router.fra_health.health_status = 503
    try:
        wait_until(lambda: redirect(router, "83.0.0.9") == "sao", 10,
                   what="steering to take over from the route")
    finally:
        router.fra_health.health_status = 200
    wait_until(lambda: redirect(router, "83.0.0.9") == "fra", 10, what="the route again")


def test_continent_rules(router):
    r = request(router.http_port, "/f.tar.gz?mirrorlist=json", xff("81.0.0.9"))
    rows = {row["id"]: row for row in json.loads(r.body)["candidates"]}
    assert rows["sao"]["excluded"] and "only_continents" in rows["sao"]["reason"]
    assert rows["uni"]["exclusion"] == "not_for_network"
    assert rows["uni"]["rule"] == "only_networks 81.0.5.0/24"
    assert rows["sao"]["exclusion"] == "not_for_continent"
    assert rows["sao"]["rule"] == "only_continents SA"


def test_the_mirror_list_names_the_rule(router):
    r = request(router.http_port, "/f.tar.gz?mirrorlist=json", xff("82.0.1.1"))
    isp = next(row for row in json.loads(r.body)["candidates"] if row["id"] == "isp")
    assert isp["rank"] == 1 and isp["rule"] == "asns 64500" and "preferred" in isp["reason"]
    r = request(router.http_port, "/f.tar.gz?mirrorlist=json", xff("83.0.0.9"))
    fra = next(row for row in json.loads(r.body)["candidates"] if row["id"] == "fra")
    assert fra["rule"] == f"route south-to-fra ({SAO_PAULO})"


def test_the_ecs_scope_never_carries_a_rules_answer_outside_it(router):
    assert dns_answer(router, "81.0.0.0/16") == (["192.0.2.1"], 22)  # split off the /24
    assert dns_answer(router, "81.0.5.0/24") == (["192.0.2.2"], 24)
    assert dns_answer(router, "82.0.0.0/16")[1] == 17  # the AS's own prefix


def test_status_shows_the_asn_database(router):
    status = json.loads(request(router.http_port, "/status.json").body)
    assert status["asn_db"]["asn_db"].startswith("GeoLite2-ASN")
    rows = {t["id"]: t for t in status["services"][0]["targets"]}
    assert rows["uni"]["rules"] == [f"only_networks {UNI}"]
    assert rows["sao"]["rules"] == ["only_continents SA"] and rows["fra"]["rules"] == []
    viewer = json.loads(request(router.http_port, "/status.json", xff("82.0.1.1")).body)
    assert viewer["client"]["asn"] == 64500 and viewer["client"]["rules"] == ["dl: asns 64500"]
    page = request(router.http_port, "/status").body.decode()
    assert f"<small>only_networks {UNI}</small>" in page
    metrics = request(router.http_port, "/metrics").body.decode()
    assert "mirror_router_asn_db_build_timestamp_seconds" in metrics


@pytest.fixture
def unbound(tmp_path, router):
    with running_unbound(tmp_path, "test.example.com", router.dns_port) as port:
        yield port


@pytest.mark.parametrize("first", ["outside", "inside"])
def test_unbounds_subnet_cache_keeps_the_private_answer_inside(router, unbound, first):
    """A /16 query outside the private mirror's /24 must not hand its answer to a client
    inside the /24, and the reverse, whichever unbound caches first."""
    asks = [("81.0.0.0/16", ["192.0.2.1"]), ("81.0.5.0/24", ["192.0.2.2"])]
    for subnet, expected in (asks if first == "outside" else asks[::-1]) * 2:
        assert dns_answer(router, subnet, unbound)[0] == expected, subnet


# ---------------------------------------------------------------- check


@pytest.mark.parametrize(("extra_target", "key", "reason"), [
    ('only_asn = [64500]', "services.dl.targets[tyo].only_asn", "unknown key"),
    ('asns = ["not-a-number"]', "services.dl.targets[tyo].asns", "must be an integer"),
    ('only_networks = ["81.0.0.1/16"]', "services.dl.targets[tyo].only_networks",
     "has host bits set"),
    ('only_continents = ["XX"]', "services.dl.targets[tyo].only_continents",
     "is not a continent code"),
])
def test_check_errors_name_the_rule(tmp_path, extra_target, key, reason):
    text = zone_text().replace('addresses = ["192.0.2.3"]',
                               f'addresses = ["192.0.2.3"]\n{extra_target}')
    with pytest.raises(ConfigError) as e:
        load(write_zone(tmp_path, text))
    (problem,) = e.value.problems
    assert problem.key == key and reason in problem.reason


def test_a_route_tie_is_a_check_error(tmp_path):
    text = zone_text() + f'''
[[services.dl.routes]]
name = "again"
networks = ["{SAO_PAULO}"]
targets = ["tyo"]
'''
    with pytest.raises(ConfigError) as e:
        load(write_zone(tmp_path, text))
    assert any("is also in route south-to-fra" in p.reason for p in e.value.problems)


def test_check_refuses_rules_by_as_without_an_asn_database(tmp_path, databases):
    zones = write_zone(tmp_path, zone_text())
    done = subprocess.run([sys.executable, "-m", "router", "check", "--zones", str(zones)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "services.dl.targets[isp].asns: needs an ASN database: --asn-db FILE" in done.stderr
    done = subprocess.run([sys.executable, "-m", "router", "check", "--zones", str(zones),
                           "--asn-db", str(databases[1])], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr


def test_a_prefix_file_is_watched_and_reloaded(tmp_path, databases, farm):
    """``only_networks_file``: one prefix a line, comments allowed; a change is served
    without a SIGHUP, a bad line keeps the last good list serving."""
    city_db, asn_db = databases
    ok = farm.mirror("audience-list")
    nets = tmp_path / "zones" / "uni-nets.txt"
    nets.parent.mkdir()
    nets.write_text("# the university's networks\n81.0.5.0/24  # campus\n")
    text = zone_text(fra_health=ok.base, ok_health=ok.base).replace(
        f'only_networks = ["{UNI}"]', 'only_networks_file = "uni-nets.txt"')
    router = RouterProcess(write_zone(tmp_path / "zones", text), "--geoip", str(city_db),
                           "--asn-db", str(asn_db), "--trusted-proxy", "127.0.0.1/32")
    try:
        assert redirect(router, "81.0.5.9") == "uni" and redirect(router, "81.0.7.9") == "fra"
        nets.write_text("81.0.5.0/24\n81.0.7.0/24\n")
        wait_until(lambda: redirect(router, "81.0.7.9") == "uni", 20,
                   what="the changed prefix file to be served")
        assert dns_answer(router, "81.0.7.0/24")[0] == ["192.0.2.2"]
        nets.write_text("81.0.5.0/24\nnot-a-prefix\n")
        failed = router.wait_for("reload_failed", 20)
        assert any("uni-nets.txt:2" in p for p in failed["problems"])
        assert redirect(router, "81.0.7.9") == "uni"  # the last good list still serves
    finally:
        assert router.stop() == 0


def test_a_new_asn_database_moves_the_as_rules_with_it(tmp_path, databases, farm):
    """The AS rules are matched against the networks the ASN database in force gives:
    a replaced database (renamed over the old one) is followed without a restart."""
    city_db, asn_db = databases
    ok = farm.mirror("audience-asn")
    live = tmp_path / "asn.mmdb"
    live.write_bytes(asn_db.read_bytes())
    zones = write_zone(tmp_path / "zones", zone_text(fra_health=ok.base, ok_health=ok.base))
    router = RouterProcess(zones, "--geoip", str(city_db), "--asn-db", str(live),
                           "--trusted-proxy", "127.0.0.1/32")
    try:
        assert redirect(router, "82.0.200.1") == "tyo"
        moved = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
        moved.insert_network(IPSet([TOKYO]), {"autonomous_system_number": 64500,
                                              "autonomous_system_organization": "Example ISP"})
        moved.to_db_file(str(tmp_path / "new.mmdb"))
        (tmp_path / "new.mmdb").rename(live)
        wait_until(lambda: redirect(router, "82.0.200.1") == "isp", 30,
                   what="the new ASN database's networks to be served")
        assert dns_answer(router, "82.0.200.0/24") == (["192.0.2.4"], 16)
    finally:
        assert router.stop() == 0
