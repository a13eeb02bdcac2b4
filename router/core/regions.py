"""Regions of a fleet: where its nodes look from, and which one a client is judged from.

A node's region (``[fleet] region``, ``serve --region``) is a continent code, whose centre
is known (``CENTRES``), or a name with a location (``{ name = "tokyo-dc", lat = 35.6,
lon = 139.7 }``). A node given neither is in the one region ``all``, which has no place:
a fleet whose live nodes are all in one region judges every target once, as it always
has. With nodes in two regions or more, each region's observers reach their own verdict
(``core.fleet.survey``), and a client is judged by the verdicts of the region nearest to
it (``nearest``), by the great-circle distance steering uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from router.core import values as v
from router.core.earth import Point, distance_km

ALL = "all"  # the region of a node given none

# Rough centres of where each continent's people are: a client is mapped to the
# nearest region, so only the order of the distances matters.
CENTRES: dict[str, Point] = {
    "AF": Point(5.0, 20.0),
    "AS": Point(30.0, 100.0),
    "EU": Point(50.0, 10.0),
    "NA": Point(40.0, -95.0),
    "OC": Point(-27.0, 140.0),
    "SA": Point(-15.0, -58.0),
}


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    point: Point | None  # None: the region "all", which no client is mapped to

    def __str__(self) -> str:
        return self.name


EVERYWHERE = Region(ALL, None)


def region(value: Any) -> Region:
    """``"EU"`` (a continent code) or ``{ name = "tokyo-dc", lat = 35.6, lon = 139.7 }``."""
    if isinstance(value, str):
        if value == ALL:
            return EVERYWHERE
        code = value.upper()
        if code not in CENTRES:
            raise v.Invalid(f"{value!r} is not one of {', '.join(CENTRES)} (or a table "
                            "with name, lat and lon)")
        return Region(code, CENTRES[code])
    if isinstance(value, dict):
        unknown = set(value) - {"name", "lat", "lon"}
        if unknown or not {"name", "lat", "lon"} <= set(value):
            raise v.Invalid("a region table has exactly name, lat and lon")
        name = v.identifier(value["name"])
        if name == ALL or name.upper() in CENTRES:
            raise v.Invalid(f"{name!r} is a region name of its own: give it without a place")
        return Region(name, Point(v.number(-90, 90)(value["lat"]),
                                  v.number(-180, 180)(value["lon"])))
    raise v.Invalid(f"a continent code or a table, not {type(value).__name__}")


def nearest(point: Point, regions: Iterable[tuple[str, Point]]) -> str | None:
    """The name of the region nearest ``point`` (ties: the first name in order)."""
    best: tuple[float, str] | None = None
    for name, centre in regions:
        here = (distance_km(point, centre), name)
        if best is None or here < best:
            best = here
    return None if best is None else best[1]
