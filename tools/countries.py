"""Write router/core/countries.txt: each country's point, where its IPv4 address space is.

    .venv/bin/python tools/countries.py > router/core/countries.txt

For ``mirror-router init --mirror ID=URL@CC``: the mean of the embedded GeoLite2 City
database's IPv4 network locations in the country, each weighted by its size (at most a
/16's, so that one huge block does not stand for the country). About a minute.
"""

from __future__ import annotations

import collections
import os

import _maxminddb_geolite2  # type: ignore[import-not-found]
import maxminddb


def main() -> None:
    path = os.path.join(os.path.dirname(_maxminddb_geolite2.__file__), "GeoLite2-City.mmdb")
    sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    with maxminddb.open_database(path) as reader:
        for network, record in reader:
            country = (record.get("country") or {}).get("iso_code")
            where = record.get("location") or {}
            if network.version != 4 or not country or "latitude" not in where:
                continue
            weight = min(network.num_addresses, 65536)
            s = sums[country]
            s[0] += where["latitude"] * weight
            s[1] += where["longitude"] * weight
            s[2] += weight
    print("# country  lat  lon: where its IPv4 address space is (tools/countries.py)")
    for country, (lat, lon, weight) in sorted(sums.items()):
        print(f"{country} {lat / weight:.2f} {lon / weight:.2f}")


if __name__ == "__main__":
    main()
