"""Places nearest a point first, without measuring to every one. Pure; built once per
service of a config.

A k-d tree over the places' unit vectors: the chord between two points of the sphere
grows with their great-circle distance, so nearest by chord is nearest by distance.
``Nearest.nearest_first(point)`` yields every place in increasing distance (best-first search:
a heap of tree nodes by the least distance any of their places can have, and of places
by their own), so a caller that needs the few cheapest of thousands of targets measures
to a few dozen: a new client network costs about the same with 100 targets or 10,000.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from router.core.earth import EARTH_RADIUS_KM, Point

T = TypeVar("T")
LEAF = 8  # places in a leaf of the tree
Vector = tuple[float, float, float]


def unit(p: Point) -> Vector:
    """The point on the unit sphere."""
    lat, lon = math.radians(p.lat), math.radians(p.lon)
    return math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)


def chord_km(squared: float) -> float:
    """The great-circle km of a squared chord between two unit vectors."""
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(squared) / 2))


class _Node(Generic[T]):
    __slots__ = ("high", "left", "low", "places", "right")

    def __init__(self, places: list[tuple[Vector, T]]) -> None:
        self.low = tuple(min(v[i] for v, _ in places) for i in range(3))
        self.high = tuple(max(v[i] for v, _ in places) for i in range(3))
        self.left: _Node[T] | None = None
        self.right: _Node[T] | None = None
        self.places: list[tuple[Vector, T]] | None = None
        if len(places) <= LEAF:
            self.places = places
            return
        axis = max(range(3), key=lambda i: self.high[i] - self.low[i])
        places.sort(key=lambda p: p[0][axis])
        half = len(places) // 2
        self.left, self.right = _Node(places[:half]), _Node(places[half:])

    def bound(self, q: Vector) -> float:
        """The least squared distance from ``q`` to any place under this node."""
        total = 0.0
        for i in range(3):
            if q[i] < self.low[i]:
                total += (self.low[i] - q[i]) ** 2
            elif q[i] > self.high[i]:
                total += (q[i] - self.high[i]) ** 2
        return total


class Nearest(Generic[T]):
    """Items at places on the globe, nearest a point first."""

    def __init__(self, items: Sequence[tuple[Point, T]]) -> None:
        self._root = _Node([(unit(p), item) for p, item in items]) if items else None
        self.size = len(items)

    def nearest_first(self, point: Point) -> Iterator[tuple[float, T]]:
        """Every item with its great-circle km from ``point``, the nearest first."""
        if self._root is None:
            return
        q = unit(point)
        heap: list[tuple[float, int, _Node[T] | None, T | None]] = [(0.0, 0, self._root, None)]
        count = 1
        while heap:
            squared, _n, node, item = heapq.heappop(heap)
            if node is None:
                yield chord_km(squared), item  # type: ignore[misc]
                continue
            if node.places is not None:
                for v, it in node.places:
                    d = (v[0] - q[0]) ** 2 + (v[1] - q[1]) ** 2 + (v[2] - q[2]) ** 2
                    heapq.heappush(heap, (d, count, None, it))
                    count += 1
                continue
            for child in (node.left, node.right):
                assert child is not None
                heapq.heappush(heap, (child.bound(q), count, child, None))
                count += 1
