"""Points on the globe and the great-circle distance between them (pure, stdlib only)."""

from __future__ import annotations

import math
from typing import NamedTuple

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius


class Point(NamedTuple):
    """A latitude/longitude pair in degrees. A tuple: hashed in C, as it is on every
    decision remembered per place."""

    lat: float
    lon: float


def distance_km(a: Point, b: Point) -> float:
    """Great-circle distance by the haversine formula, in kilometres."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
