"""Which autonomous system announces a client's network: an ASN database (MaxMind's
GeoLite2-ASN, or DB-IP's ASN Lite, in the same layout: ``autonomous_system_number``,
``autonomous_system_organization``), read as GeoIP is (``core.geo.Database``: the search
tree walked here, each record decoded once and kept).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple

from router.core.geo import Database, GeoError
from router.core.ip import IPAddress, IPNetwork
from router.core.memo import Memo

RECORDS = 131_072  # records kept decoded (a Memo keeps at least half of them)


class Asn(NamedTuple):
    """The AS of an address (rules by AS match its networks: ``networks()``)."""

    number: int | None  # None: the database does not know the address
    organization: str | None


class AsnDb(Database):
    KIND = "ASN"
    FACT = "asn_db"

    def __init__(self, path: str | Path, cache_size: int = RECORDS) -> None:
        super().__init__(Path(path))
        if "ASN" not in self.database_type.upper():
            self.close()
            raise GeoError(f"{self.path}: a {self.database_type} database, not an ASN one "
                           "(GeoLite2-ASN, or DB-IP ASN Lite)")
        self._records: Memo[int, tuple[int | None, str | None]] = Memo(max(1, cache_size))
        self._networks: tuple[frozenset[int], dict[int, list[IPNetwork]]] | None = None

    def at(self, value: int, version: int) -> Asn:
        """The AS of the address whose integer is ``value``."""
        record, _prefix = self._tree.find(value, version)
        found = self._records.fresh.get(record) or self._records.from_aged(record)
        if found is None:
            found = self._records.put(record, _parts(
                self.decoded(value, version) if record != self._tree.nodes else None))
        return Asn(found[0], found[1])

    def number(self, address: IPAddress) -> int | None:
        """The AS number of ``address`` (None: not known). For pages and explanations:
        the serving paths never ask (``networks()`` turns AS rules into prefixes)."""
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return self.at(int(address), address.version).number

    def networks(self, numbers: Collection[int]) -> dict[int, list[IPNetwork]]:
        """Every network the database gives to one of ``numbers``: one pass over the
        whole file (a second or two for GeoLite2-ASN), so that rules by AS are matched as
        prefixes are, with no AS lookup per client. The last answer is kept: the same
        numbers cost nothing the second time (a reload that left the AS rules alone)."""
        wanted = frozenset(numbers)
        if self._networks is not None and self._networks[0] == wanted:
            return self._networks[1]
        found: dict[int, list[IPNetwork]] = {n: [] for n in wanted}
        if wanted:
            for network, record in self._reader:
                number = record.get("autonomous_system_number") \
                    if isinstance(record, dict) else None
                if isinstance(number, int) and number in found:
                    found[number].append(network)
        self._networks = (wanted, found)
        return found

    def caches(self) -> dict[str, dict[str, int]]:
        return {"asn_db": self._records.counters()}


def _parts(record: Any) -> tuple[int | None, str | None]:
    if not isinstance(record, dict):
        return None, None
    number = record.get("autonomous_system_number")
    org = record.get("autonomous_system_organization")
    return (number if isinstance(number, int) else None,
            org if isinstance(org, str) else None)
