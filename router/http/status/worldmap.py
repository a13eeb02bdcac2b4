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


FONT = 4.0  # label font size, in map units (degrees)
CHAR = 0.6 * FONT  # a generous width of one character of the label font
RADIUS = 2.2  # a marker's circle


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: Box) -> bool:
        return (self.x < other.x + other.w and other.x < self.x + self.w
                and self.y < other.y + other.h and other.y < self.y + self.h)


@dataclass(frozen=True, slots=True)
class Label:
    text: str
    box: Box  # where the text goes (its baseline is box.y + FONT * 0.8)
    leader: bool  # drawn away from its marker, with a line back to it


def place(markers: list[Marker]) -> list[Label]:
    """One label per place (markers on the same spot share one), none over another label
    or over a marker: each tries the spots around its marker, nearest first, then moves
    further out with a leader line."""
    groups: dict[tuple[float, float], list[Marker]] = {}
    for m in markers:
        groups.setdefault(project(m.point), []).append(m)
    taken = [Box(x - RADIUS, y - RADIUS, 2 * RADIUS, 2 * RADIUS) for x, y in groups]
    labels = []
    for (x, y), group in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0])):
        text = ", ".join(dict.fromkeys(m.label for m in group))
        label = next(c for c in _candidates(x, y, text) if not any(
            c.box.overlaps(b) for b in taken))
        taken.append(label.box)
        labels.append(label)
    return labels


def _candidates(x: float, y: float, text: str) -> list[Label]:
    w, h = len(text) * CHAR, FONT
    near = [(x + 3, y - h / 2), (x - 3 - w, y - h / 2), (x - w / 2, y - 3 - h),
            (x - w / 2, y + 3)]
    out = [Label(text, Box(bx, by, w, h), False) for bx, by in near]
    for step in range(1, 40):  # further out, alternately below and above, then left
        for dy in (step * (h + 0.5), -step * (h + 0.5)):
            out += [Label(text, Box(x + 6, y - h / 2 + dy, w, h), True),
                    Label(text, Box(x - 6 - w, y - h / 2 + dy, w, h), True)]
    out.append(Label(text, Box(x + 3, y - h / 2, w, h), False))  # nowhere free: overlap
    return out


@dataclass(frozen=True, slots=True)
class Arc:
    """A flow drawn from clients to a target (``mirror-router simulate --svg``)."""

    start: Point
    end: Point
    width: float  # in map units (degrees)
    title: str


def svg(markers: list[Marker], element_id: str = "map", arcs: list[Arc] | None = None) -> str:
    """The whole map: ocean, graticule, land, the ``arcs``, then the markers with their
    labels."""
    lines = "".join(f"M{x} 0V180" for x in range(30, 360, 30))
    lines += "".join(f"M0 {y}H360" for y in range(30, 180, 30))
    parts = [
        f"<svg id='{escape(element_id)}' xmlns='http://www.w3.org/2000/svg' "
        "viewBox='0 0 360 180' role='img' aria-label='world map of the mirrors'>",
        "<rect width='360' height='180' fill='#dbeafe'/>",
        f"<path d='{lines}' stroke='#bfd3ee' stroke-width='0.3' fill='none'/>",
        f"<path id='land' d='{land()}' fill='#e7e5e0' stroke='#a8a29e' stroke-width='0.25'/>",
    ]
    parts += [_arc(a) for a in arcs or ()]
    parts += [_marker(m) for m in markers]
    parts += [_label(label, markers) for label in place(markers)]
    parts.append("</svg>")
    return "".join(parts)


def _arc(a: Arc) -> str:
    """A curve bowed to one side, so that flows both ways between two places show."""
    (x1, y1), (x2, y2) = project(a.start), project(a.end)
    mx, my = (x1 + x2) / 2 - (y2 - y1) * 0.2, (y1 + y2) / 2 + (x2 - x1) * 0.2
    return (f"<path class='flow' d='M{x1:.2f} {y1:.2f}Q{mx:.2f} {my:.2f} {x2:.2f} {y2:.2f}' "
            f"fill='none' stroke='#7c3aed' stroke-opacity='0.55' stroke-linecap='round' "
            f"stroke-width='{a.width:.2f}'><title>{escape(a.title)}</title></path>")


def _marker(m: Marker) -> str:
    x, y = project(m.point)
    return (f"<g id='{escape(m.id)}' class='marker'><title>{escape(m.title)}</title>"
            f"<circle cx='{x:.2f}' cy='{y:.2f}' r='{RADIUS}' fill='{COLOURS[m.colour]}' "
            f"stroke='#fff' stroke-width='0.6'/></g>")


def _label(label: Label, markers: list[Marker]) -> str:
    b = label.box
    line = ""
    if label.leader:
        owner = next(m for m in markers if label.text.startswith(m.label))
        x, y = project(owner.point)
        edge = b.x if b.x > x else b.x + b.w
        line = (f"<line x1='{x:.2f}' y1='{y:.2f}' x2='{edge:.2f}' y2='{b.y + b.h / 2:.2f}' "
                "stroke='#6b7280' stroke-width='0.3'/>")
    return (f"{line}<text class='label' x='{b.x:.2f}' y='{b.y + FONT * 0.8:.2f}' "
            f"font-size='{FONT:g}' fill='#1f2937' paint-order='stroke' stroke='#fff' "
            f"stroke-width='0.8'>{escape(label.text)}</text>")
