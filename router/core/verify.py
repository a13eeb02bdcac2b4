"""Verifying mirrors' copies, budgeted: how many bytes a target may cost, and which file
to fetch whole next. Pure: the clock and the randomness are handed in.

Each target has a ``Budget``: a bucket of bytes that fills at ``bytes_per_day`` / 86,400
per second, holds at most a day's worth, and starts with one period's (``every``). A
verification fetches one file whole, chosen at random (``choose``) among the files the
target is known to have (a HEAD said so) that the bucket can pay for and that have a
reference to compare with: the catalog's SHA-256, or for a path without one, the origin's
copy. Over any day a target costs at most its budget and one period's more.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from router.core.catalog import CatalogFile
from router.core.config import Verify

DAY = 86400.0


@dataclass(slots=True)
class Budget:
    """The bytes a target may still cost, refilled evenly."""

    rate: float  # bytes a second
    cap: float  # bytes at most (a day's worth)
    tokens: float
    at: float  # when last refilled

    @classmethod
    def of(cls, spec: Verify, now: float) -> Budget:
        rate = spec.bytes_per_day / DAY
        return cls(rate, float(spec.bytes_per_day), rate * spec.every, now)

    def left(self, now: float) -> float:
        """What may be spent now (refilled up to ``now``)."""
        self.tokens = min(self.cap, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = max(self.at, now)
        return self.tokens

    def spend(self, spent: int) -> None:
        self.tokens -= spent


def choose(files: Sequence[CatalogFile], left: float, rng: random.Random
           ) -> CatalogFile | None:
    """A file to verify: at random among those the budget can pay for (a file of
    unknown size: paid as it comes, up to what is left)."""
    affordable = [f for f in files if f.size is None or f.size <= left]
    return rng.choice(affordable) if affordable and left > 0 else None
