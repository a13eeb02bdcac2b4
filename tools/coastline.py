"""Make ``router/http/status/land.txt``: the land outline the status page's world map draws.

The source is Natural Earth's 1:110m land polygons (public domain), as TopoJSON in the
npm package ``world-atlas`` (ISC licence)::

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python3 tools/coastline.py package/land-110m.json > router/http/status/land.txt

Each ring is simplified (Douglas-Peucker, ``TOLERANCE`` degrees), small islands are
dropped, and the rest is written as one SVG path in equirectangular coordinates: x =
longitude + 180, y = 90 - latitude (a 360 x 180 box), to one decimal. A ring that
crosses the antimeridian is drawn twice, once on each side, and the map's box clips it.
"""

from __future__ import annotations

import json
import math
import sys

TOLERANCE = 0.35  # degrees
MIN_AREA = 2.0  # square degrees: smaller islands are left out


def decode_arcs(topology: dict) -> list[list[tuple[float, float]]]:
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring(indices: list[int], arcs: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    for i in indices:
        arc = arcs[i] if i >= 0 else arcs[~i][::-1]
        points.extend(arc if not points else arc[1:])
    return points


def simplify(points: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    if len(points) < 3:
        return points
    (x1, y1), (x2, y2) = points[0], points[-1]
    length = math.hypot(x2 - x1, y2 - y1) or 1e-12
    far, index = 0.0, 0
    for i, (x, y) in enumerate(points[1:-1], 1):
        d = abs((y2 - y1) * x - (x2 - x1) * y + x2 * y1 - y2 * x1) / length
        if d > far:
            far, index = d, i
    if far <= tolerance:
        return [points[0], points[-1]]
    return simplify(points[:index + 1], tolerance)[:-1] + simplify(points[index:], tolerance)


def area(points: list[tuple[float, float]]) -> float:
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2)
                   in zip(points, points[1:] + points[:1], strict=True))) / 2


def unwrap(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Longitudes made continuous: a ring that crosses the antimeridian runs past 180."""
    out = [points[0]]
    for lon, lat in points[1:]:
        previous = out[-1][0]
        lon += 360 * round((previous - lon) / 360)
        out.append((lon, lat))
    return out


def paths(points: list[tuple[float, float]]) -> list[str]:
    """The ring as SVG path data; one that runs past +-180 again shifted by 360, so that
    the map (which clips to its box) shows both of its sides."""
    ring = unwrap(points)
    shifts = [0.0]
    if max(lon for lon, _ in ring) > 180:
        shifts.append(-360.0)
    if min(lon for lon, _ in ring) < -180:
        shifts.append(360.0)
    return ["M" + "L".join(f"{lon + 180 + shift:.1f} {90 - lat:.1f}" for lon, lat in ring) + "Z"
            for shift in shifts]


def main(source: str) -> None:
    with open(source) as f:
        topology = json.load(f)
    arcs = decode_arcs(topology)
    rings = []
    for geometry in topology["objects"]["land"]["geometries"]:
        polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
        for polygon in polygons:
            outer = ring(polygon[0], arcs)
            if area(outer) >= MIN_AREA:
                half = len(outer) // 2  # split closed rings so both halves keep their shape
                rings.append(simplify(outer[:half + 1], TOLERANCE)[:-1]
                             + simplify(outer[half:], TOLERANCE)[:-1])
    for r in rings:
        for d in paths(r):
            print(d)


if __name__ == "__main__":
    main(sys.argv[1])
