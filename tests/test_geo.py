"""GeoIP lookups: a small hand-written .mmdb, and the GeoLite2 database the package ships."""

from __future__ import annotations

import ipaddress
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import maxminddb
import mmdb_writer
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

from router.core.earth import Point
from router.core.geo import (
    SPECIAL,
    GeoError,
    Location,
    Locator,
    _location_parts,
    embedded_database,
)
from router.errors import RouterError
from router.http.client import parse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from queries import subnets


def city(lat: float | None, lon: float | None, country: str | None = None,
         continent: str | None = None, name: str | None = None,
         registered: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if lat is not None and lon is not None:
        record["location"] = {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)}
    if country:
        record["country"] = {"iso_code": country}
    if registered:
        record["registered_country"] = {"iso_code": registered}
    if continent:
        record["continent"] = {"code": continent}
    if name:
        record["city"] = {"names": {"en": name}}
    return record


def plain(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address as the locator sees it: IPv4-mapped IPv6 becomes IPv4."""
    addr = ipaddress.ip_address(address)
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    return mapped or addr


# Numbered networks for the cache tests: 11.<i>.0.0/16 at (i, i). 11/8 is global space.
NUMBERED = [(f"11.{i}.0.0/16", city(float(i), float(i), "US", "NA")) for i in range(12)]

RECORDS = [
    ("1.2.3.0/24", city(35.0, 139.0, "JP", "AS", "Tokyo")),
    ("81.2.69.0/24", city(51.5, -0.125, "GB", "EU", "London")),
    ("2a00:1450::/32", city(50.0, 8.0, None, "EU", registered="DE")),
    ("2400:cb00::/32", city(37.75, -97.8125, "US", "NA")),
    ("5.5.5.0/24", city(None, None, "FR", "EU")),  # country known, coordinates not
    # Reserved space with a record: unlocated all the same, by design.
    ("10.0.0.0/8", city(52.0, 5.0, "NL", "EU", "Office")),
    ("203.0.113.0/24", city(40.0, -74.0, "US", "NA", "Documentation")),
    *NUMBERED,
]


@pytest.fixture(scope="module")
def mmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="Test-City", ipv4_compatible=True)
    for network, record in RECORDS:
        writer.insert_network(IPSet([network]), record)
    path = tmp_path_factory.mktemp("geo") / "test-city.mmdb"
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def locator(mmdb: Path) -> Iterator[Locator]:
    loc = Locator(mmdb)
    yield loc
    loc.close()


@pytest.mark.parametrize(("address", "network", "point", "country", "continent", "name"), [
    ("1.2.3.4", "1.2.3.0/24", Point(35.0, 139.0), "JP", "AS", "Tokyo"),
    ("1.2.3.255", "1.2.3.0/24", Point(35.0, 139.0), "JP", "AS", "Tokyo"),
    ("81.2.69.160", "81.2.69.0/24", Point(51.5, -0.125), "GB", "EU", "London"),
    ("2a00:1450:4001::1", "2a00:1450::/32", Point(50.0, 8.0), "DE", "EU", None),
    ("2400:cb00:2048::1", "2400:cb00::/32", Point(37.75, -97.8125), "US", "NA", None),
    ("11.7.1.1", "11.7.0.0/16", Point(7.0, 7.0), "US", "NA", None),
])
def test_locates_with_the_matched_network(locator: Locator, address: str, network: str,
                                          point: Point, country: str, continent: str,
                                          name: str | None) -> None:
    found = locator.locate(address)
    assert found == Location.of(ipaddress.ip_network(network), point, country, continent, name)
    assert found.located
    assert found.network.version == ipaddress.ip_address(address).version


def test_accepts_address_objects(locator: Locator) -> None:
    assert locator.locate(ipaddress.ip_address("1.2.3.4")) == locator.locate("1.2.3.4")


def test_registered_country_stands_in_for_a_missing_country(locator: Locator) -> None:
    assert locator.locate("2a00:1450::1").country == "DE"


def test_record_without_coordinates_is_unlocated(locator: Locator) -> None:
    found = locator.locate("5.5.5.5")
    assert not found.located
    assert found.point is None
    assert (found.country, found.continent) == ("FR", "EU")
    assert found.network == ipaddress.ip_network("5.5.5.0/24")


def test_the_network_is_the_databases_whatever_the_ecs_source(locator: Locator) -> None:
    """No cap at an ECS source prefix any more (the DNS scope is the network that
    decided, RFC 7871 7.2.1): one address, one network."""
    assert locator.locate("1.2.3.4").network == ipaddress.ip_network("1.2.3.0/24")
    assert locator.locate("1.2.0.0").network.prefixlen >= 16


@pytest.mark.parametrize("mapped", ["::ffff:1.2.3.4", "::ffff:81.2.69.160", "::ffff:11.3.0.1"])
def test_ipv4_mapped_addresses_are_ipv4(locator: Locator, mapped: str) -> None:
    address = ipaddress.IPv6Address(mapped)
    plain = address.ipv4_mapped
    assert plain is not None
    for found in (locator.locate(mapped), locator.locate(address)):
        assert found == locator.locate(plain)
        assert found.network.version == 4
        assert found.located


@pytest.mark.parametrize(("address", "network"), [
    ("127.0.0.1", None),  # loopback
    ("10.1.2.3", "10.0.0.0/8"),  # private, though the database has a record for it
    ("192.168.1.1", None),
    ("172.16.5.4", None),
    ("169.254.1.1", None),  # link-local
    ("100.64.0.1", None),  # shared address space (CGNAT)
    ("203.0.113.5", "203.0.113.0/24"),  # documentation, though the database has a record
    ("9.9.9.9", None),  # public, but not in the database
    ("::1", None),
    ("fe80::1", None),
    ("fc00::1", None),
    ("2001:db8::1", None),
    ("::ffff:127.0.0.1", None),
    ("::ffff:10.1.2.3", "10.0.0.0/8"),
])
def test_unlocated_addresses(locator: Locator, address: str, network: str | None) -> None:
    found = locator.locate(address)
    assert not found.located
    assert found.point is None
    assert (found.country, found.continent, found.city) == (None, None, None)
    assert plain(address) in found.network
    if network is not None:
        assert found.network == ipaddress.ip_network(network)
    again = locator.locate(address)
    assert again == found


def test_unlocated_neighbours_do_not_hide_located_networks(locator: Locator) -> None:
    """An empty network cached next to a located one must not swallow it."""
    assert not locator.locate("1.2.2.1").located
    assert not locator.locate("1.2.4.1").located
    assert locator.locate("1.2.3.4").country == "JP"
    assert not locator.locate("1.2.2.1").located


def test_cached_lookups_give_the_same_result(locator: Locator) -> None:
    first = locator.locate("81.2.69.160")
    assert locator.locate("81.2.69.160") == first
    assert locator.locate("81.2.69.1") == first  # the same network
    assert locator.locate("81.2.69.1").key == first.key


def test_a_tiny_cache_still_answers_correctly(mmdb: Path) -> None:
    reference, tiny = Locator(mmdb, cache_size=1_000), Locator(mmdb, cache_size=2)
    addresses = ([f"11.{i}.{i}.1" for i in range(12)]
                 + ["1.2.3.4", "81.2.69.1", "2a00:1450::1", "::ffff:1.2.3.9", "5.5.5.5",
                    "127.0.0.1", "9.9.9.9", "10.1.1.1", "2400:cb00::1"])
    expected = {a: reference.locate(a) for a in addresses}
    for order in (addresses, addresses[::-1], addresses[::3] + addresses[1::3] + addresses):
        for a in order:
            assert tiny.locate(a) == expected[a]
            assert tiny.counters()["size"] <= 2
    assert expected["11.5.5.1"].point == Point(5.0, 5.0)
    reference.close()
    tiny.close()


def test_location_key_is_stable_and_per_network(mmdb: Path, locator: Locator) -> None:
    found = locator.locate("1.2.3.4")
    net = ipaddress.ip_network("1.2.3.0/24")
    assert found.key == net.network_address.packed + bytes([24])
    other = Locator(mmdb)
    assert other.locate("1.2.3.200").key == found.key
    other.close()
    keys = {locator.locate(f"11.{i}.0.1").key for i in range(12)}
    assert len(keys) == 12
    assert found.key not in keys


@pytest.mark.parametrize(("a", "b"), [
    ("1.2.0.0/16", "1.2.0.0/24"),  # same address, different prefix
    ("0.0.0.0/0", "::/0"),  # IPv4 and IPv6
    ("1.2.3.0/24", "1.2.4.0/24"),
    ("::/96", "0.0.0.0/0"),
])
def test_location_keys_differ(a: str, b: str) -> None:
    assert Location.of(ipaddress.ip_network(a)).key != Location.of(ipaddress.ip_network(b)).key


def test_description(locator: Locator) -> None:
    built = time.strftime("%Y-%m-%d", time.gmtime(locator.build_epoch))
    assert locator.description == f"Test-City built {built}"
    assert locator.build_epoch > 1_500_000_000


def test_missing_database_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mmdb"
    with pytest.raises(GeoError, match=r"nope\.mmdb"):
        Locator(missing)


@pytest.mark.parametrize("content", [
    b"",
    b"this is not a MaxMind database\n" * 20,
    bytes(range(256)) * 64,
])
def test_corrupt_database_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.mmdb"
    path.write_bytes(content)
    with pytest.raises(GeoError) as info:
        Locator(path)
    assert isinstance(info.value, RouterError)
    assert "corrupt.mmdb" in str(info.value)


def test_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(GeoError):
        Locator(tmp_path)


# ---------------------------------------------------------------- the shipped GeoLite2 database


@pytest.fixture(scope="module")
def geolite() -> Iterator[Locator]:
    loc = Locator()
    yield loc
    loc.close()


def test_embedded_database_exists() -> None:
    path = embedded_database()
    assert path.is_file()
    assert path.name == "GeoLite2-City.mmdb"


@pytest.mark.parametrize(("address", "country", "network"), [
    ("1.0.16.1", "JP", "1.0.16.0/20"),
    ("::ffff:1.0.16.1", "JP", "1.0.16.0/20"),
    ("5.9.0.1", "DE", "5.9.0.0/18"),
    ("202.106.0.20", "CN", "202.106.0.0/18"),
    ("2001:200::1", "JP", "2001:200::/41"),
])
def test_geolite2_known_networks(geolite: Locator, address: str, country: str,
                                 network: str) -> None:
    found = geolite.locate(address)
    assert found.located
    assert found.country == country
    assert found.network == ipaddress.ip_network(network)
    assert plain(address) in found.network


def test_geolite2_points_are_plausible(geolite: Locator) -> None:
    tokyo = geolite.locate("1.0.16.1").point
    beijing = geolite.locate("202.106.0.20").point
    assert tokyo is not None and beijing is not None
    assert 34 < tokyo.lat < 37 and 138 < tokyo.lon < 141
    assert 39 < beijing.lat < 41 and 115 < beijing.lon < 118
    assert geolite.locate("202.106.0.20").continent == "AS"


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "::1", "192.168.0.1"])
def test_geolite2_private_addresses_are_unlocated(geolite: Locator, address: str) -> None:
    found = geolite.locate(address)
    assert not found.located
    assert found.country is None


@pytest.fixture(scope="module")
def straddling(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One record for all of 100.0.0.0/8, which contains the CGNAT block 100.64.0.0/10."""
    writer = MMDBWriter(ip_version=6, database_type="Test-City", ipv4_compatible=True)
    writer.insert_network(IPSet(["100.0.0.0/8"]), city(1.0, 2.0, "US", "NA"))
    path = tmp_path_factory.mktemp("geo") / "straddle.mmdb"
    writer.to_db_file(str(path))
    return path


@pytest.mark.parametrize("order", [("100.1.1.1", "100.64.0.1"), ("100.64.0.1", "100.1.1.1")])
def test_a_network_straddling_reserved_space_is_right_in_any_order(straddling: Path,
                                                                   order: tuple[str, str]):
    loc = Locator(straddling)
    results = {address: loc.locate(address) for address in order * 2}  # the second round hits
    assert results["100.1.1.1"].located
    assert results["100.1.1.1"].network == ipaddress.ip_network("100.0.0.0/8")
    assert not results["100.64.0.1"].located
    assert results["100.64.0.1"].network == ipaddress.ip_network("100.64.0.0/10")
    loc.close()


@given(st.one_of(st.ip_addresses().map(str),
                 st.text(alphabet="0123456789.:abcdef%x ", max_size=20),
                 st.tuples(*[st.integers(0, 400)] * 4).map(lambda t: ".".join(map(str, t))),
                 st.sampled_from(["01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.5", "\u0661.2.3.4",
                                  " 1.2.3.4", "1.2.3.4 ", "", "256.1.1.1", "0.0.0.0"])))
def test_the_fast_parser_agrees_with_ipaddress(text: str) -> None:
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        with pytest.raises(ValueError):
            parse(text)
        return
    assert parse(text) == expected and type(parse(text)) is type(expected)


# ------------------------------------------- the tree walk against maxminddb's own lookup


def _reference(path: Path, address: str) -> Location | None:
    """What maxminddb's C extension says of ``address`` (None: special-purpose space,
    which the locator never locates whatever the record)."""
    addr = plain(address)
    if any(addr in n for n in SPECIAL):
        return None
    with maxminddb.open_database(str(path)) as reader:
        try:
            record, prefix = reader.get_with_prefix_len(addr)
        except ValueError:  # an IPv6 address in an IPv4 database
            return Location.of(ipaddress.ip_network("::/0"))
    network = ipaddress.ip_network((int(addr) >> (addr.max_prefixlen - prefix)
                                    << (addr.max_prefixlen - prefix), prefix))
    return Location.of(network, *_location_parts(record))


def _addresses(count: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    v4 = [str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(count)]
    v6 = [str(ipaddress.IPv6Address(0x2 << 124 | rnd.getrandbits(124)))  # 2000::/4
          for _ in range(count // 4)]
    return v4 + v6


def test_the_walk_agrees_with_maxminddb_on_geolite2(geolite: Locator) -> None:
    """Random addresses, and one per bench subnet: the same network and record as the C
    extension's lookup (GeoLite2: 28-bit records, IPv4 within IPv6)."""
    addresses = _addresses(3000, seed=12) + [f"{ipaddress.IPv4Address(n + 1)}"
                                             for n in subnets(3000)]
    compared = 0
    for address in addresses:
        expected = _reference(geolite.path, address)
        if expected is not None:
            assert geolite.locate(address) == expected, address
            compared += 1
    assert compared > 5000


@pytest.mark.parametrize(("ip_version", "size"), [(6, 24), (6, 28), (6, 32), (4, 24)])
def test_the_walk_agrees_with_maxminddb_on_any_record_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ip_version: int, size: int) -> None:
    """mmdb-writer picks the smallest record size that fits; told otherwise, it writes
    real files of each size the format has (and an IPv4-only one)."""
    def sized(self: mmdb_writer.TreeWriter) -> None:
        self.record_size = size
        self.data_offset = size * 2 / 8 * self._node_counter

    monkeypatch.setattr(mmdb_writer.TreeWriter, "_adjust_record_size", sized)
    writer = MMDBWriter(ip_version=ip_version, database_type="Test-City",
                        ipv4_compatible=ip_version == 6)
    for network, record in RECORDS:
        if ip_version == 6 or ":" not in network:
            writer.insert_network(IPSet([network]), record)
    path = tmp_path / "sized.mmdb"
    writer.to_db_file(str(path))
    with maxminddb.open_database(str(path)) as reader:
        assert reader.metadata().record_size == size
    loc = Locator(path)
    inside = [str(ipaddress.ip_network(n)[i]) for n, _ in RECORDS for i in (0, 1, -1)]
    compared = 0
    for address in inside + _addresses(400, seed=size):
        expected = _reference(path, address)
        if expected is not None:
            assert loc.locate(address) == expected, address
            compared += expected.located
    assert compared >= 30
    loc.close()
