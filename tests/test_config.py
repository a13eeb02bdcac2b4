"""router/core/config.py: TOML zone files -> frozen dataclasses, and ``mirror-router check``.

Most cases are one small edit to a minimal valid zone (``VALID``): a valid edit must load into
the expected values, an invalid one must be reported with its exact key path and reason.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.core.catalog import CatalogFormat
from router.core.config import (
    CatalogSpec,
    Config,
    ConfigError,
    FileChecks,
    HealthCheck,
    OnAllDown,
    Problem,
)
from router.core.earth import Point
from router.core.rdata import Caa, Mx, Srv, Txt, rdata
from router.core.values import parse_duration
from router.core.zonefile import load, load_server

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "go.example.com."

TARGET_A = """
[[services.dl.targets]]
id = "a"
url = "https://a.example.net/go"
location = { lat = 50.0, lon = 8.0 }
country = "de"
addresses = ["192.0.2.1", "2001:db8::1"]
"""

VALID = """\
[zone]
origin = "go.example.com"
nameservers = ["ns1.go.example.com"]
hostmaster = "hostmaster@example.com"
ttl = 600

[[zone.records]]
name = "ns1"
type = "A"
data = "198.51.100.53"

[services.dl]
dns_names = ["@"]
ttl = 30
health = { path = "/", interval = "10s", timeout = "3s" }
fallback = ["a"]
""" + TARGET_A

SECOND_TARGET = """
[[services.dl.targets]]
id = "b"
url = "https://b.example.net/go/"
location = "anycast"
addresses = ["192.0.2.2"]
"""


def zone_toml(*edits: tuple[str, str], append: str = "") -> str:
    """``VALID`` with each ``(old, new)`` replaced (``old`` must occur once) and text appended."""
    text = VALID
    for old, new in edits:
        assert text.count(old) == 1, f"edit target {old!r} must occur exactly once"
        text = text.replace(old, new)
    return text + append


def record(name: str, rtype: str, data: str) -> str:
    """An appended ``[[zone.records]]`` entry; ``data`` is TOML source (quote it yourself)."""
    return f'\n[[zone.records]]\nname = "{name}"\ntype = "{rtype}"\ndata = {data}\n'


def write(folder: Path, text: str, name: str = "go.example.com.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def load_one(tmp_path: Path, text: str) -> Config:
    config = load(write(tmp_path, text))
    assert len(config.zones) == 1
    return config


def service_of(tmp_path: Path, *edits: tuple[str, str], append: str = ""):
    service = load_one(tmp_path, zone_toml(*edits, append=append)).service("dl")
    assert service is not None
    return service


# ---------------------------------------------------------------- the baseline


def test_minimal_zone_loads_into_frozen_values(tmp_path):
    path = write(tmp_path, VALID)
    config = load(tmp_path)
    (zone,) = config.zones
    assert zone.origin == ORIGIN
    assert zone.nameservers == ("ns1.go.example.com.",)
    assert zone.hostmaster == "hostmaster.example.com."
    assert zone.ttl == 600
    assert zone.source == str(path)
    (ns1,) = zone.records
    assert (ns1.name, ns1.type, ns1.data, ns1.ttl) == (
        "ns1.go.example.com.", "A", ipaddress.IPv4Address("198.51.100.53"), 600)
    (service,) = zone.services
    assert (service.name, service.origin, service.source) == ("dl", ORIGIN, str(path))
    assert service.dns_names == (ORIGIN,)
    assert service.health == HealthCheck(path="/", interval=10.0, timeout=3.0)
    (target,) = service.targets
    assert target.location == Point(50.0, 8.0)
    assert not target.anycast
    assert target.addresses == (ipaddress.ip_address("192.0.2.1"),
                                ipaddress.ip_address("2001:db8::1"))
    assert target.addresses_of(6) == (ipaddress.IPv6Address("2001:db8::1"),)
    assert config.service_for_name("GO.example.com") is service
    assert config.service_for_name("other.example.com") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.weight = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        zone.ttl = 1  # type: ignore[misc]


def test_one_file_path_loads_like_a_folder(tmp_path):
    path = write(tmp_path, VALID)
    assert load(path) == load(tmp_path)


# ---------------------------------------------------------------- valid edits


@pytest.mark.parametrize(("literal", "seconds"), [
    ('"10s"', 10.0),
    ('"500ms"', 0.5),
    ('"2m"', 120.0),
    ('"1h"', 3600.0),
    ("3", 3.0),
    ("1.5", 1.5),
])
def test_durations_become_seconds(tmp_path, literal, seconds):
    service = service_of(tmp_path, ('interval = "10s"', f"interval = {literal}"))
    assert service.health.interval == seconds
    assert isinstance(service.health.interval, float)


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0),
    ("7", 7.0), (" 2 s ", 2.0), (".5s", 0.5), (3, 3.0), (1.5, 1.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_country_codes_are_upper_case(tmp_path):
    service = service_of(tmp_path, ('country = "de"',
                                    'country = "de"\nonly_countries = ["us", "Ca"]\n'
                                    'exclude_countries = ["cn"]'))
    (target,) = service.targets
    assert target.country == "DE"
    assert target.only_countries == frozenset({"US", "CA"})
    assert target.exclude_countries == frozenset({"CN"})


@pytest.mark.parametrize(("url", "expected"), [
    ("https://a.example.net/go", "https://a.example.net/go/"),
    ("https://a.example.net/go/", "https://a.example.net/go/"),
    ("http://a.example.net:8080", "http://a.example.net:8080/"),
])
def test_target_url_gets_a_trailing_slash(tmp_path, url, expected):
    service = service_of(tmp_path, ('url = "https://a.example.net/go"', f'url = "{url}"'))
    assert service.targets[0].url == expected


@pytest.mark.parametrize(("edits", "health_url"), [
    pytest.param([], "https://a.example.net/go/", id="default-path"),
    pytest.param([('path = "/"', 'path = "/ok.txt"')], "https://a.example.net/go/ok.txt",
                 id="health-path"),
    pytest.param([('url = "https://a.example.net/go"',
                   'url = "https://a.example.net/go"\nhealth_url = "https://h.example.net/x"')],
                 "https://h.example.net/x", id="explicit-wins"),
    pytest.param([('path = "/"', 'path = "/ok.txt"'),
                  ('url = "https://a.example.net/go"',
                   'url = "https://a.example.net/go"\nhealth_url = "https://h.example.net/x"')],
                 "https://h.example.net/x", id="explicit-wins-over-path"),
    pytest.param([('dns_names = ["@"]', "dns_names = []"),
                  ('url = "https://a.example.net/go"\n', "")], None, id="no-url"),
])
def test_health_url(tmp_path, edits, health_url):
    service = service_of(tmp_path, *edits)
    assert service.targets[0].health_url == health_url


@pytest.mark.parametrize(("edits", "expected"), [
    pytest.param([], OnAllDown.FALLBACK, id="fallback-ids"),
    pytest.param([('fallback = ["a"]', "")], OnAllDown.ALL, id="no-fallback-ids"),
    pytest.param([('fallback = ["a"]', "fallback = []")], OnAllDown.ALL, id="empty-fallback"),
    pytest.param([('fallback = ["a"]', 'fallback = ["a"]\non_all_down = "empty"')],
                 OnAllDown.EMPTY, id="explicit-empty"),
    pytest.param([('fallback = ["a"]', 'fallback = ["a"]\non_all_down = "all"')],
                 OnAllDown.ALL, id="explicit-all"),
])
def test_on_all_down_default(tmp_path, edits, expected):
    assert service_of(tmp_path, *edits).on_all_down is expected


def test_fallback_and_several_targets(tmp_path):
    service = service_of(tmp_path, ('fallback = ["a"]', 'fallback = ["b", "a"]'),
                         append=SECOND_TARGET)
    assert service.fallback == ("b", "a")
    assert [t.id for t in service.targets] == ["a", "b"]
    b = service.target("b")
    assert b is not None and b.anycast and b.location is None
    assert service.target("zzz") is None


def test_at_means_the_apex_and_relative_names_join_the_origin(tmp_path):
    config = load_one(tmp_path, zone_toml(
        ('dns_names = ["@"]', 'dns_names = ["@", "DL", "x.go.example.com."]'),
        append=record("@", "TXT", '"hello"') + record("www", "CNAME", '"go.example.com"')))
    zone = config.zones[0]
    assert config.service("dl").dns_names == (ORIGIN, "dl.go.example.com.", "x.go.example.com.")
    names = {(r.name, r.type): r.data for r in zone.records}
    assert names[(ORIGIN, "TXT")] == Txt((b"hello",))
    assert names[("www.go.example.com.", "CNAME")] == ORIGIN


def test_record_data_list_gives_several_records(tmp_path):
    zone = load_one(tmp_path, zone_toml(
        append=record("www", "a", '["192.0.2.7", "192.0.2.8"]'))).zones[0]
    www = [r for r in zone.records if r.name == "www.go.example.com."]
    assert [(r.type, r.data) for r in www] == [("A", ipaddress.IPv4Address("192.0.2.7")),
                                               ("A", ipaddress.IPv4Address("192.0.2.8"))]


def test_record_ttl_defaults_to_the_zone_ttl(tmp_path):
    text = zone_toml(("ttl = 600", "ttl = 120"),
                     append=record("www", "A", '"192.0.2.7"') + "ttl = 5\n")
    zone = load_one(tmp_path, text).zones[0]
    assert {r.name: r.ttl for r in zone.records} == {"ns1.go.example.com.": 120,
                                                      "www.go.example.com.": 5}


def test_long_txt_is_split_into_255_byte_strings(tmp_path):
    text = "x" * 300 + "é" * 200  # 700 bytes of UTF-8
    zone = load_one(tmp_path, zone_toml(append=record("@", "TXT", f'"{text}"'))).zones[0]
    (txt,) = [r.data for r in zone.records if r.type == "TXT"]
    assert isinstance(txt, Txt)
    assert [len(s) for s in txt.strings] == [255, 255, 190]
    assert b"".join(txt.strings) == text.encode("utf-8")


@given(st.text(max_size=1200))
def test_txt_strings_are_at_most_255_bytes_and_join_back(text):
    strings = rdata("TXT")(text).strings
    assert strings
    assert all(len(s) <= 255 for s in strings)
    assert all(len(s) == 255 for s in strings[:-1])
    assert b"".join(strings) == text.encode("utf-8")


@pytest.mark.parametrize(("rtype", "data", "expected"), [
    ("MX", '"10 mail.example.net"', Mx(10, "mail.example.net.")),
    ("MX", '"0 ."', Mx(0, ".")),  # a null MX (RFC 7505)
    ("SRV", '"10 5 443 dl.go.example.com."', Srv(10, 5, 443, "dl.go.example.com.")),
    ("SRV", '"0 0 0 ."', Srv(0, 0, 0, ".")),
    ("CAA", """'0 issue "letsencrypt.org"'""", Caa(0, "issue", "letsencrypt.org")),
    ("CAA", """'128 ISSUEWILD ";"'""", Caa(128, "issuewild", ";")),
    ("AAAA", '"2001:DB8::7"', ipaddress.IPv6Address("2001:db8::7")),
    ("PTR", '"Host.Example.NET."', "host.example.net."),
    ("NS", '"ns.example.net"', "ns.example.net."),
])
def test_record_data_parses(tmp_path, rtype, data, expected):
    zone = load_one(tmp_path, zone_toml(append=record("sub", rtype, data))).zones[0]
    (rec,) = [r for r in zone.records if r.name == "sub.go.example.com."]
    assert rec.type == rtype
    assert rec.data == expected
    assert type(rec.data) is type(expected)


@pytest.mark.parametrize(("hostmaster", "rname"), [
    ("a@b.com", "a.b.com."),
    ("hostmaster.example.com", "hostmaster.example.com."),
    ("Admin@Example.COM.", "admin.example.com."),
])
def test_hostmaster_becomes_the_soa_rname(tmp_path, hostmaster, rname):
    text = zone_toml(('hostmaster = "hostmaster@example.com"', f'hostmaster = "{hostmaster}"'))
    assert load_one(tmp_path, text).zones[0].hostmaster == rname


def test_two_zones_in_one_folder(tmp_path):
    write(tmp_path, VALID)
    other = zone_toml(('origin = "go.example.com"', 'origin = "dl.example.org"'),
                      ("[services.dl]", "[services.other]"),
                      ("[[services.dl.targets]]", "[[services.other.targets]]"))
    write(tmp_path, other, "dl.example.org.toml")
    config = load(tmp_path)
    assert [z.origin for z in config.zones] == ["dl.example.org.", ORIGIN]  # sorted by file
    assert [s.name for s in config.services] == ["other", "dl"]
    assert config.service_for_name("dl.example.org").name == "other"


def test_the_example_zone_loads():
    config = load(ROOT / "zones" / "go.example.com.toml")
    (zone,) = config.zones
    assert zone.origin == ORIGIN
    assert zone.hostmaster == "hostmaster.example.com."
    service = config.service("downloads")
    assert service is not None
    assert service.dns_names == () and service.http_prefix == "/"  # the redirector's face
    assert all(not t.addresses for t in service.targets)
    edge = config.service_for_name("dl.go.example.com")  # the DNS face: hosts we run
    assert edge is not None and edge.name == "edge" and edge.http_prefix is None
    assert all(t.addresses for t in edge.targets)
    assert config.service_for_name(ORIGIN) is None  # static records: the redirector's nodes
    assert service.fallback == ("google",)
    assert service.on_all_down is OnAllDown.FALLBACK
    google = service.target("google")
    assert google is not None
    assert google.location is None and google.anycast
    assert google.url == "https://dl.google.com/go/"
    assert google.health_url == "https://dl.google.com/go/go1.22.5.src.tar.gz.sha256"
    assert all(t.country == "CN" for t in service.targets if t.id != "google")
    assert load(ROOT / "zones").zones == config.zones


def test_catalog_and_availability_keys(tmp_path):
    plain = service_of(tmp_path)
    assert plain.catalog is None and plain.checks == FileChecks()
    assert FileChecks() == FileChecks(wait=0.3, ttl=3600.0, negative_ttl=300.0, per_mirror=4)
    service = service_of(tmp_path, *CATALOG, ("ttl = 30", 'ttl = 30\ncatalog.refresh = "10m"\n'
                         'availability_wait = "150ms"\navailability_ttl = "2h"\n'
                         'availability_negative_ttl = "30s"\navailability_checks = 8'))
    assert service.catalog == CatalogSpec("https://go.dev/dl/?mode=json&include=all",
                                          CatalogFormat.GO, refresh=600.0, timeout=30.0)
    assert service.checks == FileChecks(wait=0.15, ttl=7200.0, negative_ttl=30.0, per_mirror=8)


# ---------------------------------------------------------------- invalid edits

TARGET = "services.dl.targets[a]"
CATALOG = [('dns_names = ["@"]', 'dns_names = ["@"]\nhttp_prefix = "/"\n'
            'catalog.url = "https://go.dev/dl/?mode=json&include=all"')]

INVALID = [
    # wrong types
    pytest.param([("ttl = 30", 'ttl = "abc"')], "", "services.dl.ttl",
                 "must be an integer, not a string", id="service-ttl-string"),
    pytest.param([("ttl = 600", 'ttl = "abc"')], "", "zone.ttl",
                 "must be an integer, not a string", id="zone-ttl-string"),
    pytest.param([("ttl = 30", "ttl = true")], "", "services.dl.ttl",
                 "must be an integer, not a boolean", id="ttl-boolean"),
    pytest.param([("ttl = 30", "ttl = -1")], "", "services.dl.ttl",
                 "must be between 0 and 86400, not -1", id="ttl-negative"),
    pytest.param([('fallback = ["a"]', 'fallback = "a"')], "", "services.dl.fallback",
                 "must be an array, not a string", id="fallback-string"),
    pytest.param([('country = "de"', 'country = "de"\nenabled = "yes"')], "",
                 f"{TARGET}.enabled", "must be true or false, not a string", id="enabled-string"),
    pytest.param([], "\n[services]\nx = 1\n", "services.x", "must be a table, not an integer",
                 id="service-not-table"),
    # fallback and on_all_down
    pytest.param([('fallback = ["a"]', 'fallback = ["a", "nope"]')], "", "services.dl.fallback",
                 "unknown target id 'nope'", id="fallback-unknown-id"),
    pytest.param([('fallback = ["a"]', 'on_all_down = "fallback"')], "",
                 "services.dl.on_all_down", '"fallback" needs at least one target id in fallback',
                 id="on-all-down-fallback-without-ids"),
    pytest.param([('fallback = ["a"]', 'fallback = ["a"]\non_all_down = "random"')], "",
                 "services.dl.on_all_down", "'random' is not one of \"fallback\", \"all\"",
                 id="on-all-down-bad-value"),
    # CNAME rules
    pytest.param([], record("ns1", "CNAME", '"x.example.net"'),
                 "zone.records[ns1.go.example.com.]", "a CNAME cannot stand beside other data",
                 id="cname-beside-a"),
    pytest.param([], record("www", "CNAME", '["x.example.net", "y.example.net"]'),
                 "zone.records[www.go.example.com.]", "a CNAME cannot stand beside other data",
                 id="two-cnames"),
    pytest.param([('dns_names = ["@"]', 'dns_names = ["dl"]')],
                 record("@", "CNAME", '"x.example.net"'),
                 "zone.records[go.example.com.]", "a CNAME cannot stand at the zone apex",
                 id="cname-at-apex"),
    # record data
    pytest.param([], record("www", "A", '"192.0.2.300"'), "zone.records[#2].data",
                 "'192.0.2.300' is not an IPv4 address", id="a-bad-address"),
    pytest.param([], record("www", "A", '"2001:db8::1"'), "zone.records[#2].data",
                 "'2001:db8::1' is not an IPv4 address", id="a-given-ipv6"),
    pytest.param([], record("www", "AAAA", '"2001:db8::g"'), "zone.records[#2].data",
                 "'2001:db8::g' is not an IPv6 address", id="aaaa-bad-address"),
    pytest.param([], record("www", "A", '["192.0.2.1", "nope"]'), "zone.records[#2].data",
                 "item 2 ('nope'): 'nope' is not an IPv4 address", id="a-list-bad-item"),
    pytest.param([], record("www", "A", "[]"), "zone.records[#2].data", "must not be empty",
                 id="a-empty-list"),
    pytest.param([], record("www", "SPF", '"v=spf1"'), "zone.records[#2].type",
                 "'SPF' is not supported", id="unsupported-type"),
    pytest.param([], record("www", "MX", '"mail.example.net"'), "zone.records[#2].data",
                 "is not of the form 'preference exchange'", id="mx-no-preference"),
    pytest.param([], record("www", "SRV", '"1 2 70000 t.example.net"'), "zone.records[#2].data",
                 "port '70000' is not a number from 0 to 65535", id="srv-bad-port"),
    pytest.param([], record("www", "CAA", """'256 issue "ca.example"'"""),
                 "zone.records[#2].data", "flags '256' is not a number from 0 to 255",
                 id="caa-bad-flags"),
    pytest.param([], record("www", "CNAME", '"bad_-.example.net"'), "zone.records[#2].data",
                 "'bad_-' is not a valid DNS label", id="cname-bad-label"),
    pytest.param([], '\n[[zone.records]]\nname = "www"\ntype = "A"\n', "zone.records[#2].data",
                 "is required", id="record-data-missing"),
    # target fields
    pytest.param([('addresses = ["192.0.2.1", "2001:db8::1"]',
                   'addresses = ["192.0.2.1", "192.0.2.999"]')], SECOND_TARGET,
                 f"{TARGET}.addresses",
                 "item 2 ('192.0.2.999'): '192.0.2.999' is not an IPv4 or IPv6 address",
                 id="target-bad-address"),
    pytest.param([], SECOND_TARGET.replace('id = "b"', 'id = "a"'), f"{TARGET}.id",
                 "duplicate target id 'a'", id="duplicate-target-id"),
    pytest.param([("lat = 50.0", "lat = 91")], "", f"{TARGET}.location.lat",
                 "must be between -90 and 90, not 91", id="latitude-out-of-range"),
    pytest.param([("lon = 8.0", "lon = -180.5")], "", f"{TARGET}.location.lon",
                 "must be between -180 and 180, not -180.5", id="longitude-out-of-range"),
    pytest.param([("lat = 50.0", 'lat = "50"')], "", f"{TARGET}.location.lat",
                 "must be a number, not a string", id="latitude-string"),
    pytest.param([("location = { lat = 50.0, lon = 8.0 }", 'location = "anywhere"')], "",
                 f"{TARGET}.location", 'must be {lat, lon} or "anycast", not \'anywhere\'',
                 id="location-anywhere"),
    pytest.param([("location = { lat = 50.0, lon = 8.0 }", "location = { lat = 50.0 }")], "",
                 f"{TARGET}.location.lon", "is required", id="location-without-lon"),
    pytest.param([('fallback = ["a"]', 'fallback = ["a"]\ndefault_location = "anycast"')], "",
                 "services.dl.default_location", "must be {lat, lon}, not 'anycast'",
                 id="default-location-anycast"),
    pytest.param([('country = "de"', 'country = "DEU"')], "", f"{TARGET}.country",
                 "'DEU' is not a two-letter ISO 3166 country code", id="country-three-letters"),
    pytest.param([('country = "de"', 'country = "de"\nonly_countries = ["de", "x1"]')], "",
                 f"{TARGET}.only_countries", "item 2 ('x1')", id="only-countries-bad-code"),
    pytest.param([('country = "de"',
                   'country = "de"\nonly_countries = ["de"]\nexclude_countries = ["DE"]')], "",
                 f"{TARGET}.exclude_countries", "DE is also in only_countries",
                 id="country-in-only-and-exclude"),
    pytest.param([('url = "https://a.example.net/go"', 'url = "ftp://a.example.net/go"')], "",
                 f"{TARGET}.url", "is not an http:// or https:// URL with a host", id="url-ftp"),
    pytest.param([('url = "https://a.example.net/go"', 'url = "https://a.example.net/?x=1"')],
                 "", f"{TARGET}.url", "must not carry a query or fragment", id="url-query"),
    pytest.param([('url = "https://a.example.net/go"', 'url = "https://a.example.net:99999/"')],
                 "", f"{TARGET}.url", "has an invalid port", id="url-bad-port"),
    pytest.param([('country = "de"', "weight = 0")], "", f"{TARGET}.weight",
                 "must be between 1 and 1000000, not 0", id="weight-zero"),
    pytest.param([('id = "a"', 'id = "a b"'), ('fallback = ["a"]', "")], "",
                 "services.dl.targets[a b].id", "names and ids use letters, digits",
                 id="target-id-space"),
    pytest.param([('addresses = ["192.0.2.1", "2001:db8::1"]', "")], "", "services.dl.dns_names",
                 "no target has addresses, so DNS could never answer",
                 id="dns-names-without-addresses"),
    pytest.param([(TARGET_A, ""), ('fallback = ["a"]\n', "")],
                 "", "services.dl.targets", "a service needs at least one target",
                 id="service-without-targets"),
    # durations
    pytest.param([('interval = "10s"', 'interval = "10 seconds"')], "",
                 "services.dl.health.interval",
                 '\'10 seconds\' is not a duration such as "10s", "500ms", "2m" or "1h"',
                 id="duration-bad-string"),
    pytest.param([('interval = "10s"', 'interval = "-1s"')], "", "services.dl.health.interval",
                 "'-1s' is not a duration", id="duration-negative-string"),
    pytest.param([('interval = "10s"', "interval = -5")], "", "services.dl.health.interval",
                 "must be longer than zero", id="duration-negative-number"),
    pytest.param([('timeout = "3s"', "timeout = 0")], "", "services.dl.health.timeout",
                 "must be longer than zero", id="duration-zero-number"),
    pytest.param([('timeout = "3s"', 'timeout = "0ms"')], "", "services.dl.health.timeout",
                 "must be longer than zero", id="duration-zero-string"),
    pytest.param([('interval = "10s"', 'interval = "10ms"')], "", "services.dl.health.interval",
                 "must be between 0.05s and 86400s, not 0.01s", id="duration-too-short"),
    pytest.param([('interval = "10s"', "interval = true")], "", "services.dl.health.interval",
                 'must be a duration such as "10s" or "500ms", not a boolean',
                 id="duration-boolean"),
    pytest.param([('path = "/"', 'path = "ok"')], "", "services.dl.health.path",
                 "'ok' must be a URL path that starts with '/'", id="health-path-relative"),
    pytest.param([('path = "/"', 'path = "/", kind = "icmp"')], "", "services.dl.health.kind",
                 "'icmp' is not one of \"http\"", id="health-kind-unknown"),
    # unknown keys (typo protection)
    pytest.param([("ttl = 30", "ttl = 30\nanswer = 2")], "", "services.dl.answer", "unknown key",
                 id="typo-service-key"),
    pytest.param([("ttl = 600", "ttl = 600\nnegativ_ttl = 5")], "", "zone.negativ_ttl",
                 "unknown key", id="typo-zone-key"),
    pytest.param([('country = "de"', 'country = "de"\nwieght = 5')], "", f"{TARGET}.wieght",
                 "unknown key", id="typo-target-key"),
    pytest.param([('timeout = "3s"', 'timeout = "3s", rise = 2, fal = 3')], "",
                 "services.dl.health.fal", "unknown key", id="typo-health-key"),
    pytest.param([("lon = 8.0", "lon = 8.0, alt = 3")], "", f"{TARGET}.location.alt",
                 "unknown key", id="typo-location-key"),
    pytest.param([], record("www", "A", '"192.0.2.7"') + 'tll = 5\n', "zone.records[#2].tll",
                 "unknown key", id="typo-record-key"),
    pytest.param([], '\n[servics.x]\nttl = 1\n', "servics", "unknown key", id="typo-top-level"),
    # missing required keys
    pytest.param([('origin = "go.example.com"\n', "")], "", "zone.origin", "is required",
                 id="missing-origin"),
    pytest.param([('hostmaster = "hostmaster@example.com"\n', "")], "", "zone.hostmaster",
                 "is required", id="missing-hostmaster"),
    pytest.param([('id = "a"\n', ""), ('fallback = ["a"]\n', "")], "",
                 "services.dl.targets[#1].id", "is required", id="missing-target-id"),
    pytest.param([("location = { lat = 50.0, lon = 8.0 }\n", "")], "", f"{TARGET}.location",
                 "is required", id="missing-target-location"),
    # names and steering
    pytest.param([], record("@", "A", '"192.0.2.50"'), "services.dl.dns_names",
                 "go.example.com. also has a static A record", id="steered-name-with-static-a"),
    pytest.param([], "\n[services.other]\ndns_names = [\"@\"]\n[[services.other.targets]]\n"
                     'id = "o"\nlocation = "anycast"\naddresses = ["192.0.2.9"]\n',
                 "services.other.dns_names", "go.example.com. is already steered by services.dl",
                 id="two-services-steer-one-name"),
    pytest.param([('nameservers = ["ns1.go.example.com"]',
                   'nameservers = ["ns1.go.example.com", "ns2.go.example.com"]')], "",
                 "zone.nameservers",
                 "ns2.go.example.com. is inside the zone but has no A or AAAA record (glue)",
                 id="in-zone-nameserver-without-glue"),
    pytest.param([('nameservers = ["ns1.go.example.com"]', "nameservers = []")], "",
                 "zone.nameservers", "must not be empty", id="no-nameservers"),
    pytest.param([], record("@", "NS", '"ns9.example.net"'), "zone.records[#2].type",
                 "NS at the apex comes from zone.nameservers; remove this record",
                 id="ns-at-apex"),
    pytest.param([], record("www.go.example.com", "A", '"192.0.2.7"'), "zone.records[#2].name",
                 "'www.go.example.com' looks absolute but has no trailing dot: "
                 "write 'www' or 'www.go.example.com.'", id="relative-name-looks-absolute"),
    pytest.param([], record("go.example.com", "TXT", '"x"'), "zone.records[#2].name",
                 "'go.example.com' looks absolute but has no trailing dot: write '@'",
                 id="apex-name-looks-absolute"),
    pytest.param([], record("www.example.org.", "A", '"192.0.2.7"'), "zone.records[#2].name",
                 "'www.example.org.' is outside the zone go.example.com.", id="name-outside-zone"),
    pytest.param([('dns_names = ["@"]', 'dns_names = ["@", "example.com."]')], "",
                 "services.dl.dns_names", "item 2 ('example.com.'): 'example.com.' is outside",
                 id="dns-name-outside-zone"),
    pytest.param([], record("*", "A", '"192.0.2.7"'), "zone.records[#2].name",
                 "wildcard names are not supported", id="wildcard-name"),
    pytest.param([('hostmaster = "hostmaster@example.com"', 'hostmaster = "a.b@example.com"')],
                 "", "zone.hostmaster", "the mailbox part must be one label", id="hostmaster-dots"),
    pytest.param([("[services.dl]", '[services."bad name"]'),
                  ("[[services.dl.targets]]", '[[services."bad name".targets]]')], "",
                 "services.bad name", "names and ids use letters, digits", id="bad-service-name"),
    # catalogs and availability
    pytest.param([*CATALOG, ("ttl = 30", 'ttl = 30\ncatalog.format = "debian"')], "",
                 "services.dl.catalog.format", "'debian' is not one of \"go\"",
                 id="catalog-format"),
    pytest.param([("ttl = 30", 'ttl = 30\nhttp_prefix = "/"\ncatalog = { format = "go" }')],
                 "", "services.dl.catalog.url", "is required", id="catalog-url-missing"),
    pytest.param([("ttl = 30", 'ttl = 30\nhttp_prefix = "/"\n'
                   'catalog = { url = "ftp://go.dev/dl/" }')], "", "services.dl.catalog.url",
                 "is not an http:// or https:// URL with a host", id="catalog-url-ftp"),
    pytest.param([("ttl = 30", 'ttl = 30\nhttp_prefix = "/"\n'
                   'catalog = { url = "https://go.dev/dl/#x" }')], "", "services.dl.catalog.url",
                 "must not carry a fragment", id="catalog-url-fragment"),
    pytest.param([*CATALOG, ("ttl = 30", 'ttl = 30\ncatalog.refresh = "0s"')], "",
                 "services.dl.catalog.refresh", "must be longer than zero",
                 id="catalog-refresh-zero"),
    pytest.param([*CATALOG, ("ttl = 30", "ttl = 30\ncatalog.every = 5")], "",
                 "services.dl.catalog.every", "unknown key", id="catalog-unknown-key"),
    pytest.param([("ttl = 30", 'ttl = 30\ncatalog = { url = "https://go.dev/dl/?mode=json" }')],
                 "", "services.dl.catalog", "needs http_prefix", id="catalog-without-http"),
    pytest.param([("ttl = 30", 'ttl = 30\navailability_wait = "1s"')], "",
                 "services.dl.availability_wait", "has no effect without a catalog",
                 id="availability-without-catalog"),
    pytest.param([*CATALOG, ("ttl = 30", 'ttl = 30\navailability_wait = "2m"')], "",
                 "services.dl.availability_wait", "must be between 0.001s and 60s, not 120s",
                 id="availability-wait-too-long"),
    pytest.param([*CATALOG, ("ttl = 30", "ttl = 30\navailability_checks = 0")], "",
                 "services.dl.availability_checks", "must be between 1 and 64, not 0",
                 id="availability-checks-zero"),
    # HTTP keys
    pytest.param([("ttl = 30", 'ttl = 30\nhttp_prefix = "dl/"')], "", "services.dl.http_prefix",
                 "must be a URL path that starts with '/'", id="prefix-no-slash"),
    pytest.param([("ttl = 30", 'ttl = 30\nhttp_prefix = "/a//b/"')], "",
                 "services.dl.http_prefix", "must be a plain path", id="prefix-double-slash"),
    pytest.param([("ttl = 30", 'ttl = 30\nhttp_prefix = "/a/../b/"')], "",
                 "services.dl.http_prefix", "must not contain . or .. segments",
                 id="prefix-dotdot"),
    pytest.param([("ttl = 30", "ttl = 30\nlink_alternates = 17")], "",
                 "services.dl.link_alternates", "must be between 0 and 16", id="alternates-range"),
    pytest.param([("ttl = 30", 'ttl = 30\npass_query = "yes"')], "", "services.dl.pass_query",
                 "must be true or false", id="pass-query-string"),
    pytest.param([("ttl = 30", 'ttl = 30\nhttp_prefix = "/"'),
                  ('url = "https://a.example.net/go"\n', "")], "", "services.dl.http_prefix",
                 "no target has a url", id="prefix-without-urls"),
    pytest.param([], '\n[services.other]\nhttp_prefix = "/dl"\n' + TARGET_A.replace(
                     "services.dl.", "services.other.") + "\n[services.dl.x]\n",
                 "services.dl.x", "unknown key", id="unknown-subtable"),
]


@pytest.mark.parametrize(("edits", "append", "key", "reason"), INVALID)
def test_invalid_zone_reports_key_and_reason(tmp_path, edits, append, key, reason):
    path = write(tmp_path, zone_toml(*edits, append=append))
    problems = problems_of(tmp_path)
    assert [p.key for p in problems] == [key], problems
    (problem,) = problems
    assert reason in problem.reason
    assert problem.file == str(path)
    assert str(problem) == f"{path}:{problem.line}: {key}: {problem.reason}"
    # the line is where the key is written, or (missing) the table that lacks it
    written = path.read_text().splitlines()[problem.line - 1]
    names = [part.split("[")[0] for part in key.split(".")[-2:]]
    assert any(n in written for n in names) or written.lstrip().startswith("["), (written, key)


@pytest.mark.parametrize(("literal", "prefix"), [('"/"', "/"), ('"/dl"', "/dl/"),
                                               ('"/mod/"', "/mod/")])
def test_http_prefix_always_ends_with_a_slash(tmp_path, literal, prefix):
    svc = service_of(tmp_path, ("ttl = 30", f"ttl = 30\nhttp_prefix = {literal}"))
    assert (svc.http_prefix, svc.link_alternates, svc.pass_query) == (prefix, 4, False)


def test_two_services_with_one_prefix_in_a_zone(tmp_path):
    other = TARGET_A.replace("services.dl.", "services.other.")
    text = zone_toml(("ttl = 30", 'ttl = 30\nhttp_prefix = "/x"'),
                     append=f'\n[services.other]\nhttp_prefix = "/x/"\n{other}')
    (problem,) = problems_of(write(tmp_path, text))
    assert problem.key == "services.other.http_prefix"
    assert "already served by services.dl" in problem.reason


def test_server_settings_file(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text('[server]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\n'
                    "access_log = true\n")
    settings = load_server(path)
    assert [str(n) for n in settings.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8",
                                                          "::1/128"]
    assert settings.access_log is True


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('[server]\ntrusted_proxies = ["not-a-net"]\n', "server.trusted_proxies",
     "is not an IP network"),
    ("[server]\naccess_log = 1\n", "server.access_log", "must be true or false"),
    ("[server]\ntrusted = []\n", "server.trusted", "unknown key"),
    ("[other]\n", "server", "is required"),
    ('[fleet]\nstore = "http://127.0.0.1:6379"', "fleet.store", "redis://"),
    ('[fleet]\nname = "a"', "fleet.store", "is required"),
    ('[fleet]\nstore = "redis://h"\nobservers = 2\nquorum = 3', "fleet.quorum",
     "more than observers"),
    ('[fleet]\nstore = "redis://h"\nnode = "a b"', "fleet.node", "letters, digits"),
    ('[fleet]\nstore = "redis://h"\nstroe = 1', "fleet.stroe", "unknown key"),
    ('[fleet]\nstore = "redis://:secret@h:99999"', "fleet.store", "invalid port"),
])
def test_server_settings_errors_name_file_key_and_reason(tmp_path, text, key, reason):
    path = tmp_path / "server.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_server(path)
    found = {p.key: p for p in info.value.problems}
    assert key in found and reason in found[key].reason
    assert found[key].file == str(path)


def test_zone_must_be_a_table(tmp_path):
    path = write(tmp_path, "zone = 1\n")
    assert problems_of(path) == [Problem(str(path), "zone", "must be a table, not an integer")]


def test_targets_must_be_an_array_of_tables(tmp_path):
    path = write(tmp_path, zone_toml(("[[services.dl.targets]]", "[services.dl.targets]"),
                                     ('fallback = ["a"]\n', "")))
    assert problems_of(path) == [
        Problem(str(path), "services.dl.targets",
                "must be an array of tables ([[...]]), not a table"),
        Problem(str(path), "services.dl.targets", "a service needs at least one target")]


def test_missing_zone_table(tmp_path):
    path = write(tmp_path, '[services.dl]\nttl = 30\n')
    assert problems_of(path) == [Problem(str(path), "zone", "is required")]


def test_missing_origin_does_not_call_the_other_zone_keys_unknown(tmp_path):
    path = write(tmp_path, zone_toml(('origin = "go.example.com"', 'orign = "go.example.com"')))
    assert problems_of(path) == [Problem(str(path), "zone.origin", "is required"),
                                 Problem(str(path), "zone.orign",
                                         "unknown key (did you mean origin?)")]


def test_an_unknown_key_near_a_known_one_is_named(tmp_path):
    """``trusted_proxie`` was only "unknown key"; the nearest key the table has is named,
    and a key near none is not given a guess."""
    from router.core.config import ConfigError
    from router.core.zonefile import load_server
    server = tmp_path / "server.toml"
    server.write_text('[server]\ntrusted_proxie = ["127.0.0.1/32"]\nzzz = 1\n')
    with pytest.raises(ConfigError) as e:
        load_server(server)
    assert e.value.problems == [
        Problem(str(server), "server.trusted_proxie",
                "unknown key (did you mean trusted_proxies?)"),
        Problem(str(server), "server.zzz", "unknown key")]


def test_targets_without_ids_are_not_called_duplicates(tmp_path):
    path = write(tmp_path, zone_toml(('id = "a"\n', ""), ('fallback = ["a"]\n', ""),
                                     append=SECOND_TARGET.replace('id = "b"\n', "")))
    assert problems_of(path) == [
        Problem(str(path), "services.dl.targets[#1].id", "is required"),
        Problem(str(path), "services.dl.targets[#2].id", "is required")]


def test_every_problem_in_a_file_is_reported_in_one_load(tmp_path):
    path = write(tmp_path, zone_toml(
        ("ttl = 600", 'ttl = "abc"'),
        ("ttl = 30", "ttl = 30\nanswers = 99\nsprad = 2"),
        ('fallback = ["a"]', 'fallback = ["a", "ghost"]\non_all_down = "sometimes"'),
        ('interval = "10s"', 'interval = "soon"'),
        ("lat = 50.0", "lat = -90.5"),
        ('country = "de"', 'country = "Germany"'),
        append=record("www", "AAAA", '"192.0.2.1"') + record("@", "NS", '"ns.example.net"'),
    ))
    problems = problems_of(tmp_path)
    assert {p.file for p in problems} == {str(path)}
    assert sorted(p.key for p in problems) == sorted([
        "zone.ttl",
        "zone.records[#2].data",
        "zone.records[#3].type",
        "services.dl.answers",
        "services.dl.sprad",
        "services.dl.fallback",
        "services.dl.on_all_down",
        "services.dl.health.interval",
        f"{TARGET}.location.lat",
        f"{TARGET}.country",
    ])


# ---------------------------------------------------------------- files and folders


def test_same_origin_in_two_files(tmp_path):
    first = write(tmp_path, VALID, "a.toml")
    second = write(tmp_path, zone_toml(("[services.dl]", "[services.other]"),
                                       ("[[services.dl.targets]]", "[[services.other.targets]]"),
                                       ('origin = "go.example.com"', 'origin = "Go.Example.com."')),
                   "b.toml")
    assert problems_of(tmp_path) == [
        Problem(str(second), "zone.origin", f"go.example.com. is also served by {first}")]


def test_same_service_name_in_two_files(tmp_path):
    first = write(tmp_path, VALID, "a.toml")
    second = write(tmp_path, zone_toml(('origin = "go.example.com"', 'origin = "dl.example.org"')),
                   "b.toml")
    assert problems_of(tmp_path) == [
        Problem(str(second), "services.dl", f"service name is also used in {first}")]


def test_invalid_toml_names_the_file(tmp_path):
    write(tmp_path, VALID, "a.toml")
    broken = write(tmp_path, VALID.replace("[services.dl]", "[services.dl"), "b.toml")
    (problem,) = problems_of(tmp_path)
    assert (problem.file, problem.key) == (str(broken), "")
    assert problem.reason.startswith("not valid TOML: ")
    assert str(problem).startswith(f"{broken}: not valid TOML")


def test_problems_from_several_files_are_all_reported(tmp_path):
    bad_ttl = write(tmp_path, zone_toml(("ttl = 30", 'ttl = "x"')), "a.toml")
    broken = write(tmp_path, "[zone\n", "b.toml")
    assert [(p.file, p.key) for p in problems_of(tmp_path)] == [
        (str(bad_ttl), "services.dl.ttl"), (str(broken), "")]


def test_unreadable_file_is_a_problem(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(VALID.replace("hostmaster@", "h\xe9@").encode("latin-1"))
    (problem,) = problems_of(tmp_path)
    assert (problem.file, problem.key) == (str(path), "")
    assert problem.reason.startswith("cannot read: ")


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not a zone")
    assert problems_of(tmp_path) == [
        Problem(str(tmp_path), "", "no *.toml zone files in this folder")]


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as info:
        load(missing)
    why = "no such file or folder (the zones: --zones DIR, by default ./zones)"
    assert info.value.problems == [Problem(str(missing), "", why)]
    assert str(info.value) == f"{missing}: {why}"


# ---------------------------------------------------------------- mirror-router check


def run_check(zones: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "check", "--zones", str(zones)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_check_accepts_the_example_zones():
    result = run_check("zones")
    assert result.returncode == 0, result.stderr
    files = sorted((ROOT / "zones").glob("*.toml"))
    lines = result.stdout.splitlines()
    assert len(lines) == len(files) >= 1
    for line, path in zip(lines, files, strict=True):
        assert line.startswith(f"zones/{path.name}: ok: ")
    assert "go.example.com. with 12 record(s), 3 service(s), 16 target(s)" in result.stdout


def test_check_prints_every_problem_and_fails(tmp_path):
    write(tmp_path, zone_toml(("ttl = 30", 'ttl = "abc"'), ("lat = 50.0", "lat = 91")), "a.toml")
    write(tmp_path, "[zone\n", "b.toml")
    write(tmp_path, VALID, "c.toml")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    expected = [str(p) for p in info.value.problems]
    assert len(expected) == 3

    result = run_check(tmp_path)
    assert result.returncode == 1
    assert "ok" not in result.stdout
    stderr = result.stderr.splitlines()
    assert stderr[:3] == expected
    text = (tmp_path / "a.toml").read_text().splitlines()
    ttl, lat = (1 + next(i for i, x in enumerate(text) if x.startswith(w))
                for w in ('ttl = "abc"', "location = { lat = 91"))
    assert f"{tmp_path / 'a.toml'}:{ttl}: services.dl.ttl: must be an integer, not a string" \
        in stderr  # file:line: key: reason
    assert (f"{tmp_path / 'a.toml'}:{lat}: {TARGET}.location.lat: must be between -90 and 90, "
            "not 91" in stderr)
    assert stderr[-1] == "3 problem(s) found"


def test_check_fails_on_a_missing_folder(tmp_path):
    result = run_check(tmp_path / "nowhere")
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{tmp_path / 'nowhere'}: no such file or folder (the zones: --zones DIR, by " \
        "default ./zones)" in result.stderr.splitlines()


def test_the_default_serial_comes_from_the_content_not_the_clock(tmp_path):
    """Two nodes deployed from copies of one file answer with one serial; an edit
    changes it; an explicit serial wins."""
    from router.core.zonefile import load

    text = ('[zone]\norigin = "s.example."\nnameservers = ["ns1.elsewhere.example."]\n'
            'hostmaster = "h.s.example."\n')
    serials = []
    for node, mtime in (("a", 1_000_000), ("b", 2_000_000)):  # deployed at different times
        folder = tmp_path / node
        folder.mkdir()
        (folder / "s.toml").write_text(text)
        os.utime(folder / "s.toml", (mtime, mtime))
        serials.append(load(folder).zones[0].serial)
    assert serials[0] == serials[1] != 0
    (tmp_path / "a" / "s.toml").write_text(text + "ttl = 301\n")
    assert load(tmp_path / "a").zones[0].serial != serials[0]
    (tmp_path / "a" / "s.toml").write_text(text.replace("[zone]\n", "[zone]\nserial = 7\n"))
    assert load(tmp_path / "a").zones[0].serial == 7


def test_nsid_is_read_from_the_server_table_and_checked(tmp_path):
    from router.core.zonefile import load_server

    path = tmp_path / "server.toml"
    path.write_text('[server]\nnsid = "fra-1"\n')
    assert load_server(path).nsid == "fra-1"
    path.write_text('[server]\nnsid = "a\\u00e9"\n')
    with pytest.raises(ConfigError) as e:
        load_server(path)
    assert [(p.key, p.reason) for p in e.value.problems] == [
        ("server.nsid", "must be 1 to 64 printable ASCII characters")]


def test_a_relative_zones_folder_that_is_missing_is_named_whole(tmp_path):
    """The zones-folder error gave the path as typed; it names it absolute now, and says
    it is --zones (by default ./zones), as a new user in the wrong folder needs."""
    import subprocess
    import sys

    from tests.harness import ROOT
    done = subprocess.run([sys.executable, "-m", "router", "check"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert f"{tmp_path / 'zones'}: no such file or folder (the zones: --zones DIR, by " \
        "default ./zones)" in done.stderr


HEALTH_ZONE = """
[zone]
origin = "h.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.com"
[services.s]
http_prefix = "/"
health = {health}
[[services.s.targets]]
id = "m"
url = "{url}"
location = "anycast"
"""


@pytest.mark.parametrize(("health", "url", "want"), [
    ('{ path = "/health" }', "https://m.example/golang/", "https://m.example/golang/health"),
    ('{ url = "/health" }', "https://m.example:8443/golang/", "https://m.example:8443/health"),
    ('{ url = "https://status.example/ok" }', "https://m.example/golang/",
     "https://status.example/ok"),
])
def test_health_path_joins_the_url_and_health_url_overrides_it(tmp_path, health, url, want):
    """health.path under url ".../golang/" probes /golang/health, which surprised a user:
    health.url is the absolute override (from the host's root, or a whole URL)."""
    (tmp_path / "h.toml").write_text(HEALTH_ZONE.format(health=health, url=url))
    (target,) = load(tmp_path).service("s").targets
    assert target.health_url == want


def test_health_path_and_url_together_are_refused(tmp_path):
    (tmp_path / "h.toml").write_text(HEALTH_ZONE.format(
        health='{ path = "/a", url = "/b" }', url="https://m.example/"))
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    assert "services.s.health.url" in str(e.value) and "not both" in str(e.value)
