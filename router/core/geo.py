"""Where is a client? ``Locator`` answers from a MaxMind DB, with the network that matched.

The matched network is what the answer depends on: it becomes the ECS scope of a DNS
answer and the key of every per-client cache. Networks are not cached here (finding one
by the tree walk costs less than remembering it); the records they point at are decoded
once and kept (``core.memo``), and so are addresses near a special-purpose block.
"""

from __future__ import annotations

import bisect
import datetime
import ipaddress
import mmap
import os
import struct
import sys
from array import array
from pathlib import Path
from typing import Any, NamedTuple

import maxminddb

from router.core.earth import Point
from router.core.ip import IPAddress, IPNetwork
from router.core.memo import Memo
from router.core.reading import private_copy
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


class Location(NamedTuple):
    """What GeoIP knows of one network. ``point`` is None when the client is unlocated.

    The network is held as ``key``, its first address packed and its prefix length (a
    stable hash key for every per-client cache); the ``network`` object is made only
    when asked for (it cost a new client more than finding the network did). A tuple:
    every new client gets one, and a tuple is made in C (a frozen dataclass set each
    field through ``object.__setattr__``)."""

    key: bytes
    point: Point | None = None
    country: str | None = None
    continent: str | None = None
    city: str | None = None
    # set by ``router.core.audience`` when the config has network or AS rules: the
    # client's AS (explanations), the rules its network matched, and what they do (the
    # key of shared decisions: clients matched by different prefixes of one rule share)
    asn: int | None = None
    matched: frozenset[Any] = frozenset()
    effect: frozenset[Any] = frozenset()

    @classmethod
    def of(cls, network: IPNetwork, point: Point | None = None, country: str | None = None,
           continent: str | None = None, city: str | None = None) -> Location:
        return cls(network.network_address.packed + _PREFIX[network.prefixlen], point, country,
                   continent, city)

    @property
    def located(self) -> bool:
        return self.point is not None

    @property
    def prefixlen(self) -> int:
        return self.key[-1]

    @property
    def network(self) -> IPNetwork:
        first = int.from_bytes(self.key[:-1], "big")
        if len(self.key) == 5:
            return ipaddress.IPv4Network((first, self.prefixlen))
        return ipaddress.IPv6Network((first, self.prefixlen))

    def __repr__(self) -> str:
        return (f"Location({self.network}, point={self.point}, country={self.country}, "
                f"continent={self.continent}, city={self.city}, asn={self.asn})")


_PREFIX = [bytes((n,)) for n in range(129)]


def embedded_database() -> Path:
    """The GeoLite2 City database shipped by the ``maxminddb-geolite2`` package."""
    import _maxminddb_geolite2  # the package's module; it only marks where the file is

    return Path(_maxminddb_geolite2.__file__).with_name("GeoLite2-City.mmdb")


STALE_DAYS = 60  # a GeoIP database older than this is warned about: networks move


class Tree:
    """A MaxMind DB's search tree, walked over the mapped file: which record a network
    points at (a number: equal numbers, the same record) and how long that network is.

    maxminddb's C extension walks the same tree, but decodes the whole record on every
    lookup: about 14 µs for a GeoLite2 City record, against 1.5 µs for this walk. So the
    ``Locator`` walks here and has each record decoded once. The node reached after the
    first ``TOP`` bits is remembered per prefix (an array, per IP version)."""

    TOP = 16

    def __init__(self, fd: int, path: Path, meta: Any) -> None:
        size, self.nodes = meta.record_size, meta.node_count
        if size not in (24, 28, 32):
            raise GeoError(f"{path}: unknown MaxMind DB record size {size}")
        self._width = size // 4  # the bytes of a node: two records
        self._drop = 64 - 2 * size  # a node read as 8 bytes (no bytes object): the rest
        self._right = (1 << size) - 1
        # the left record: the high bits, and for 28-bit records the middle byte's high
        # nibble above them
        self._high, self._nibble = (32, 0xF) if size == 28 else (int(size), 0)
        self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        if len(self._map) < self.nodes * self._width + 16:  # the tree, then 16 zeros
            raise GeoError(f"{path}: the search tree is cut short")
        # where each IP version's addresses start (IPv4 in an IPv6 tree: ::/96)
        self._starts = {6: 0, 4: self._walk(0, 128, 0, 0, 96)[0]} if meta.ip_version == 6 \
            else {4: 0}
        self._tops = {v: array("q", [-1]) * (1 << self.TOP) for v in self._starts}

    def close(self) -> None:
        self._map.close()

    def find(self, value: int, version: int) -> tuple[int, int]:
        """The record of the address ``value`` (``nodes``: none) and its prefix length."""
        tops = self._tops.get(version)
        if tops is None:  # an IPv6 address in an IPv4 database: nowhere
            return self.nodes, 0
        bits = 32 if version == 4 else 128
        top = value >> (bits - self.TOP)
        known = tops[top]
        if known < 0:
            known = tops[top] = _packed(*self._walk(value, bits, self._starts[version], 0,
                                                    self.TOP))
        node, depth = known >> 8, known & 0xFF
        if node < self.nodes:
            node, depth = self._walk(value, bits, node, depth, bits)
        return node, depth

    def _walk(self, value: int, bits: int, node: int, depth: int, stop: int
              ) -> tuple[int, int]:
        nodes, width, data, drop = self.nodes, self._width, self._map, self._drop
        right, high, nibble, read = self._right, self._high, self._nibble, _U64.unpack_from
        while node < nodes and depth < stop:
            both = read(data, node * width)[0] >> drop
            if value >> (bits - 1 - depth) & 1:
                node = both & right
            else:
                node = both >> high | (both >> 28 & nibble) << 24
            depth += 1
        return node, depth


_U64 = struct.Struct(">Q")


def _packed(node: int, depth: int) -> int:
    return node << 8 | depth


NEAR = 4096  # addresses near special-purpose blocks whose locations are kept
# records kept decoded: at least the 65,536 most recent (a Memo keeps half its size for
# sure; GeoLite2 City has 57,040 records for 300,000 routable /24s)
RECORDS = 131_072
Parts = tuple[Point | None, str | None, str | None, str | None]  # point, country, continent, city


class Database:
    """A MaxMind DB file, opened: the search tree (``Tree``) and maxminddb's reader (to
    decode a record), its build date and age. GeoIP (``Locator``) and the ASN database
    (``router.core.asn.AsnDb``) are both one."""

    KIND = "GeoIP"  # what its errors and facts call it
    FACT = "geoip"  # the prefix of its facts' keys

    def __init__(self, path: Path) -> None:
        self.path = path
        try:  # a copy of our own: the file may be overwritten in place (cp) while served
            copy = private_copy(path)
        except OSError as e:
            raise GeoError(f"{self.path}: cannot open {self.KIND} database: {e}") from e
        try:
            self._reader = maxminddb.open_database(f"/proc/self/fd/{copy}")
            meta = self._reader.metadata()
            self._tree = Tree(copy, self.path, meta)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
            raise GeoError(f"{self.path}: cannot open {self.KIND} database: {e}") from e
        finally:
            os.close(copy)  # both mapped it: the memory lives while they do
        self.build_epoch: int = meta.build_epoch
        self.database_type: str = meta.database_type
        built = datetime.datetime.fromtimestamp(self.build_epoch, datetime.UTC)
        self.description = f"{meta.database_type} built {built:%Y-%m-%d}"

    def age_days(self, now: float) -> float:
        """How old the database is at ``now`` (seconds since the epoch), in days."""
        return max(0.0, (now - self.build_epoch) / 86400)

    def facts(self, now: float) -> dict[str, Any]:
        """What the start-up log, /status and /status.json say of the database."""
        f = self.FACT
        return {f: self.description, f"{f}_file": str(self.path),
                f"{f}_age_days": round(self.age_days(now)),
                f"{f}_stale": self.age_days(now) > STALE_DAYS}

    def close(self) -> None:
        self._reader.close()
        self._tree.close()

    def decoded(self, value: int, version: int) -> Any:
        """maxminddb's record for the address ``value`` (None: none)."""
        address = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
        return self._reader.get(address)


class Locator(Database):
    """GeoIP lookups: the tree walked here (``Tree``), each record decoded once
    (maxminddb's C extension) and kept, bounded. Networks are not cached: finding one
    costs less than remembering it did, for the ever-new clients that a cache would
    not help (a network's Location is a few bytes and the record's decoded parts)."""

    def __init__(self, path: str | Path | None = None, cache_size: int = RECORDS) -> None:
        super().__init__(Path(path) if path else embedded_database())
        self._records: Memo[int, Parts] = Memo(max(1, cache_size))  # record -> what it says
        # addresses located near a special-purpose block (bounded): a DNS sender, a proxy
        self._near: Memo[tuple[int, int], Location] = Memo(2 * NEAR)

    def locate(self, address: IPAddress | str) -> Location:
        """Locate an address, with the whole network that the database says decides it
        (for an ECS query it may be longer than the query's source prefix: RFC 7871
        §7.2.1 lets the scope be longer, and the answer holds only for that network)."""
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return self.at(int(addr), addr.version)

    def at(self, value: int, version: int) -> Location:
        """``locate()`` for the address whose integer is ``value`` (IPv4-mapped addresses
        already made IPv4): the HTTP face reads a dotted quad straight to an integer."""
        record, prefix = self._tree.find(value, version)
        bits, near = _NEAR_SPECIAL[version]
        shift = bits - prefix
        key = (value >> shift << shift).to_bytes(bits // 8, "big") + _PREFIX[prefix]
        if prefix >= near[0] and value >> (bits - near[0]) not in near[1]:
            parts = self._records.fresh.get(record)
            if parts is not None:
                return Location(key, *parts)
            return self._lookup(value, version, record, key)
        found = self._near.get((value, version))  # a sender again (DNS without ECS)
        if found is None:
            found = self._near.put((value, version), self._lookup(value, version, record, key))
        return found

    def counters(self) -> dict[str, int]:
        """For ``/metrics``: the decoded records (decoded: misses; hits in the newer
        half are not counted: that would cost every lookup)."""
        return self._records.counters()

    def caches(self) -> dict[str, dict[str, int]]:
        """Its tables, for /metrics: the decoded records, the addresses near a special
        block."""
        return {"geoip": self.counters(), "geoip_special": self._near.counters()}

    def _lookup(self, value: int, version: int, record: int, key: bytes) -> Location:
        """``at()`` the long way: near a special-purpose block, or a record not yet kept
        (``key``: the network's, as ``Location`` keeps it)."""
        holder = _special(value, version)
        if holder is None:
            return Location(key, *self._parts(value, version, record))
        if key[-1] >= holder.prefixlen:  # all special-purpose: never located
            return Location(key)
        return _HELD[holder]  # a special-purpose block within the network: never located

    def _parts(self, value: int, version: int, record: int) -> Parts:
        """What the tree's ``record`` says, decoded once (as the lookup of ``value``)."""
        parts = self._records.fresh.get(record) or self._records.from_aged(record)
        if parts is None:
            parts = self._records.put(record, _location_parts(
                self.decoded(value, version) if record != self._tree.nodes else None))
        return parts




def _span(n: IPNetwork) -> tuple[int, int]:
    """The first and last address of ``n``, as integers."""
    first = int(n.network_address)
    return first, first | ((1 << (n.max_prefixlen - n.prefixlen)) - 1)


# per IP version, the special blocks (disjoint) in order: first addresses, last addresses
_SPECIAL_SPANS = {v: tuple(zip(*sorted((*_span(n), n) for n in SPECIAL if n.version == v),
                                 strict=True))
                  for v in (4, 6)}


_HELD = {block: Location.of(block) for block in SPECIAL}


def _near(version: int, width: int) -> tuple[int, frozenset[int]]:
    """The first ``width`` bits of every address in or beside a special block."""
    shift = (32 if version == 4 else 128) - width
    return width, frozenset(top for first, last in zip(*_SPECIAL_SPANS[version][:2],
                                                        strict=True)
                            for top in range(first >> shift, (last >> shift) + 1))


# Per IP version: the address width, and (width, the tops) of ``_near``: a network at
# least that long under any other top holds no special block, so ``at()`` need not look.
_NEAR_SPECIAL = {4: (32, _near(4, 8)), 6: (128, _near(6, 16))}


def _special(value: int, version: int) -> IPNetwork | None:
    """The special-purpose block that holds the address ``value`` (None: none). The
    blocks are disjoint: it can only be the last one that starts at or before it."""
    los, his, blocks = _SPECIAL_SPANS[version]
    i = bisect.bisect_right(los, value) - 1
    return blocks[i] if i >= 0 and his[i] >= value else None


def _text(value: Any) -> str | None:
    """Names repeat across networks: keep one copy of each."""
    return sys.intern(value) if isinstance(value, str) else None


def _location_parts(record: Any) -> Parts:
    """What a GeoIP2/GeoLite2 City (or Country) record says: point, country, continent,
    city."""
    if not isinstance(record, dict):
        return None, None, None, None
    loc = record.get("location") or {}
    lat, lon = loc.get("latitude"), loc.get("longitude")
    country = (record.get("country") or record.get("registered_country") or {}).get("iso_code")
    names = (record.get("city") or {}).get("names") or {}
    point = Point(float(lat), float(lon)) if lat is not None and lon is not None else None
    return (point, _text(country), _text((record.get("continent") or {}).get("code")),
            _text(names.get("en")))
