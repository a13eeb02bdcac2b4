"""Where is a client? ``Locator`` answers from a MaxMind DB, with the network that matched.

The matched network is what the answer depends on: it becomes the ECS scope of a DNS
answer and the key of every per-client cache, so lookups are cached per network.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import maxminddb

from router.core.earth import Point
from router.core.ip import IPAddress, IPNetwork
from router.errors import RouterError

# IANA special-purpose blocks (RFC 6890 and successors): never located, whatever a
# database says. A database network that contains one is not cached as a whole.
SPECIAL: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
    "::/127", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
    "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
))


class GeoError(RouterError):
    """The GeoIP database cannot be opened or is not a City-style database."""


@dataclass(frozen=True, slots=True)
class Location:
    """What GeoIP knows of one network. ``point`` is None when the client is unlocated."""

    network: IPNetwork
    point: Point | None = None
    country: str | None = None
    continent: str | None = None
    city: str | None = None

    @property
    def located(self) -> bool:
        return self.point is not None

    # A stable hash key for this network: its packed address and prefix length.
    key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        net = self.network
        object.__setattr__(self, "key", net.network_address.packed + bytes([net.prefixlen]))


def embedded_database() -> Path:
    """The GeoLite2 City database shipped by the ``maxminddb-geolite2`` package."""
    import _maxminddb_geolite2  # the package's module; it only marks where the file is

    return Path(_maxminddb_geolite2.__file__).with_name("GeoLite2-City.mmdb")


STALE_DAYS = 60  # a GeoIP database older than this is warned about: networks move


class Locator:
    """GeoIP lookups, cached per matched network and bounded in size."""

    def __init__(self, path: str | Path | None = None, cache_size: int = 20_000) -> None:
        self.path = Path(path) if path else embedded_database()
        try:
            self._reader = maxminddb.open_database(str(self.path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
            raise GeoError(f"{self.path}: cannot open GeoIP database: {e}") from e
        meta = self._reader.metadata()
        self.build_epoch: int = meta.build_epoch
        built = datetime.datetime.fromtimestamp(self.build_epoch, datetime.UTC)
        self.description = f"{meta.database_type} built {built:%Y-%m-%d}"
        self._cache_size = cache_size
        # per IP version, (bits below the prefix, {network >> those bits: location}), the
        # longest prefixes first: a lookup probes one int key per prefix length held
        self._by_length: dict[int, list[tuple[int, dict[int, Location]]]] = {4: [], 6: []}
        self._size = 0
        self.misses = self.evictions = 0  # database reads; networks forgotten (cache full)

    def age_days(self, now: float) -> float:
        """How old the database is at ``now`` (seconds since the epoch), in days."""
        return max(0.0, (now - self.build_epoch) / 86400)

    def facts(self, now: float) -> dict[str, Any]:
        """What the start-up log, /status and /status.json say of the database."""
        return {"geoip": self.description, "geoip_file": str(self.path),
                "geoip_age_days": round(self.age_days(now)),
                "geoip_stale": self.age_days(now) > STALE_DAYS}

    def close(self) -> None:
        self._reader.close()

    def locate(self, address: IPAddress | str) -> Location:
        """Locate an address, with the whole network that the database says decides it
        (for an ECS query it may be longer than the query's source prefix: RFC 7871
        §7.2.1 lets the scope be longer, and the answer holds only for that network)."""
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        found = self._cached(addr)
        return found if found is not None else self._lookup(addr)

    def _cached(self, addr: IPAddress) -> Location | None:
        value = int(addr)
        for shift, networks in self._by_length[addr.version]:
            hit = networks.get(value >> shift)
            if hit is not None:
                return hit
        return None

    def counters(self) -> dict[str, int]:
        """For ``/metrics`` (hits are not counted: that would cost every lookup)."""
        return {"misses": self.misses, "evictions": self.evictions, "size": self._size}

    def _lookup(self, addr: IPAddress) -> Location:
        self.misses += 1
        record, plen = self._reader.get_with_prefix_len(addr)
        network = _network(addr, plen)
        first, last = _span(network)
        special = [n for lo, hi, n in _SPECIAL_SPANS[addr.version] if lo <= last and first <= hi]
        holder = next((n for n in special if addr in n), None)
        if holder is not None:  # a special-purpose address: never located
            location = Location(network if network.prefixlen >= holder.prefixlen else holder)
        else:
            location = _location(network, record)
            if special:  # the network straddles a special block: do not cache it whole
                return location
        self._remember(addr.version, location.network, location)
        return location

    def _remember(self, version: int, network: IPNetwork, location: Location) -> None:
        if self._size >= self._cache_size:
            self.evictions += self._size
            self._size = 0
            self._by_length = {4: [], 6: []}
        shift = network.max_prefixlen - network.prefixlen
        levels = self._by_length[version]
        networks = next((n for s, n in levels if s == shift), None)
        if networks is None:  # longest prefixes (smallest shifts) are probed first
            networks = {}
            levels.append((shift, networks))
            levels.sort(key=lambda level: level[0])
        key = int(network.network_address) >> shift
        self._size += key not in networks
        networks[key] = location


def _network(addr: IPAddress, prefix: int) -> IPNetwork:
    """The network of ``prefix`` bits that holds ``addr``: ``ip_network((addr, prefix),
    strict=False)`` at a fifth of its cost (it is on every new client's path)."""
    shift = addr.max_prefixlen - prefix
    first = int(addr) >> shift << shift
    if addr.version == 4:
        return ipaddress.IPv4Network((first, prefix))
    return ipaddress.IPv6Network((first, prefix))


def _span(n: IPNetwork) -> tuple[int, int]:
    """The first and last address of ``n``, as integers. (``IPv4Network.overlaps()``
    would cache properties on a network that the cache keeps: a third more memory.)"""
    first = int(n.network_address)
    return first, first | ((1 << (n.max_prefixlen - n.prefixlen)) - 1)


_SPECIAL_SPANS = {v: [(*_span(n), n) for n in SPECIAL if n.version == v] for v in (4, 6)}


def _text(value: Any) -> str | None:
    """Names repeat across networks: keep one copy of each."""
    return sys.intern(value) if isinstance(value, str) else None


def _location(network: IPNetwork, record: Any) -> Location:
    """Turn a GeoIP2/GeoLite2 City (or Country) record into a ``Location``."""
    if not isinstance(record, dict):
        return Location(network)
    loc = record.get("location") or {}
    lat, lon = loc.get("latitude"), loc.get("longitude")
    country = (record.get("country") or record.get("registered_country") or {}).get("iso_code")
    names = (record.get("city") or {}).get("names") or {}
    return Location(
        network=network,
        point=Point(float(lat), float(lon)) if lat is not None and lon is not None else None,
        country=_text(country),
        continent=_text((record.get("continent") or {}).get("code")),
        city=_text(names.get("en")),
    )
