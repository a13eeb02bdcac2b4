"""A world map as inline SVG: land, a graticule, and coloured markers. Pure.

Equirectangular projection in a 360 x 180 box: x = longitude + 180, y = 90 - latitude.
The land outline is Natural Earth's 1:110m land, simplified (``router/http/status/land.txt``, made
by ``tools/coastline.py``), so the page needs no external asset and no internet.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from html import escape
from importlib import resources

from router.core.earth import Point

COLOURS = {"green": "#16a34a", "amber": "#f59e0b", "red": "#dc2626", "blue": "#2563eb"}


@dataclass(frozen=True, slots=True)
class Marker:
    id: str  # the SVG element id
    label: str
    point: Point
    colour: str  # a key of COLOURS
    title: str  # the tooltip


def project(point: Point) -> tuple[float, float]:
    return point.lon + 180.0, 90.0 - point.lat


@cache
def land() -> str:
    """The SVG path data of the land outline."""
    return " ".join(resources.files("router.http.status").joinpath("land.txt").read_text().split())


def svg(markers: list[Marker], element_id: str = "map") -> str:
    """The whole map: ocean, graticule, land, then the markers with their labels."""
    lines = "".join(f"M{x} 0V180" for x in range(30, 360, 30))
    lines += "".join(f"M0 {y}H360" for y in range(30, 180, 30))
    parts = [
        f"<svg id='{escape(element_id)}' xmlns='http://www.w3.org/2000/svg' "
        "viewBox='0 0 360 180' role='img' aria-label='world map of the mirrors'>",
        "<rect width='360' height='180' fill='#dbeafe'/>",
        f"<path d='{lines}' stroke='#bfd3ee' stroke-width='0.3' fill='none'/>",
        f"<path id='land' d='{land()}' fill='#e7e5e0' stroke='#a8a29e' stroke-width='0.25'/>",
    ]
    parts += [_marker(m) for m in markers]
    parts.append("</svg>")
    return "".join(parts)


def _marker(m: Marker) -> str:
    x, y = project(m.point)
    return (f"<g id='{escape(m.id)}' class='marker'><title>{escape(m.title)}</title>"
            f"<circle cx='{x:.2f}' cy='{y:.2f}' r='2.2' fill='{COLOURS[m.colour]}' "
            f"stroke='#fff' stroke-width='0.6'/>"
            f"<text x='{x + 3:.2f}' y='{y + 1.4:.2f}' font-size='4' fill='#1f2937' "
            f"paint-order='stroke' stroke='#fff' stroke-width='0.8'>{escape(m.label)}</text>"
            "</g>")
