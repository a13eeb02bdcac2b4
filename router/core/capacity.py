"""How much each target can take, how much it is given, and how a recovered one ramps
back: pure.

A target may have a capacity (``capacity = { mbps = 1000, requests = 300 }``; ``load``:
the figure its ``load_url`` reports, when that is neither; ``high`` and ``low``: the
watermarks, 90% and 75% by default). Its load is measured (``Rate``: a decayed rate
that follows a change within about 5 s) from what the redirector sent it (each redirect
adds the file's size, when the catalog lists it), from its own ``load_url``, and in a
fleet from every node's (summed). ``ratio`` is the highest of load / capacity over the
kinds it has both of.

**Shedding with hysteresis** (``shed_next``): above ``high`` a target keeps a smaller
fraction of its client networks, sized so its load lands between the watermarks; below
``low`` it takes them back the same way; in between nothing moves, so a steady load
never flaps. **Slow start** (``ramp``): a target back from down or from a drain keeps a
fraction that grows from 0 to 1 over ``slow_start`` (a health key); a drain at a
maintenance window's start goes the other way first (slow drain).

Which networks a target keeps is one formula (``share``): a network is kept when its
share of the target (rendezvous-style hashing of the target and the network, in [0, 1))
is below the target's ``keep`` = min(ramp, 1 - shed). Raising keep only adds networks
and lowering it only removes them, so a network is not flipped back and forth and
resolvers' caches stay valid; a network a target does not keep is ranked as if the
target were not there (``scoring.Lineup.ranking``): it goes to its next-best by cost,
and the near-equal next ones are spread by the usual hashing, so a spill spreads.
``keep`` is published in steps of ``STEP``, so the caches keyed on the health
generation are not retired by every small move.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

TAU = 2.0  # seconds: the time constant of a decayed rate (95% of a step in 6 s)
TICK = 1.0  # seconds between two looks at the loads
STEP = 0.02  # keep fractions are published in steps of this
DAMPING = 0.8  # each move takes the kept fraction this much of the way to its goal


@dataclass(frozen=True, slots=True)
class Capacity:
    """``capacity = { ... }`` of a target: what it can take, per second."""

    mbps: float | None = None  # megabits a second
    requests: float | None = None  # redirects a second
    load: float | None = None  # the figure ``load_url`` reports, when it is the measure
    high: float = 0.9  # above this share, it sheds
    low: float = 0.75  # below this share, it takes networks back


@dataclass(frozen=True, slots=True)
class Load:
    """A target's load as last measured (None: unknown)."""

    bytes_per_second: float | None = None
    requests_per_second: float | None = None
    reported: float | None = None  # its load_url's figure

    def ratio(self, capacity: Capacity) -> float | None:
        """The highest of load / capacity over the kinds known (None: none is)."""
        ratios = [have / can for have, can in (
            (None if self.bytes_per_second is None else self.bytes_per_second * 8 / 1e6,
             capacity.mbps),
            (self.requests_per_second, capacity.requests),
            (self.reported, capacity.load)) if have is not None and can]
        return max(ratios) if ratios else None


@dataclass(frozen=True, slots=True)
class Pressure:
    """What a target's load and recovery leave it: the networks whose ``share`` is below
    ``keep`` are its own."""

    keep: float  # 0 to 1, in steps of STEP
    shed: float = 0.0  # the fraction shed for load
    ratio: float | None = None  # load / capacity (None: unknown or no capacity)
    ramp: float | None = None  # slow start (or drain): the fraction it is at, else None
    load: Load | None = None  # as measured (for /status and /metrics)

    def why(self) -> str:
        """Why a network is not kept: what ``explain`` and ``?mirrorlist`` say."""
        if self.ramp is not None and self.ramp <= 1 - self.shed:
            return f"ramping ({self.ramp:.0%})"
        load = "unknown" if self.ratio is None else f"{self.ratio:.0%} of capacity"
        return f"shed (load {load})"


FULL = Pressure(1.0)


class Rate:
    """A decayed rate of a growing total (bytes or requests sent): read at each tick."""

    __slots__ = ("at", "total", "value")

    def __init__(self) -> None:
        self.total: float | None = None
        self.at = 0.0
        self.value = 0.0

    def update(self, total: float, now: float) -> float:
        """The rate once the total is ``total`` at ``now`` (seconds)."""
        if self.total is not None and now > self.at:
            seen = max(0.0, total - self.total) / (now - self.at)
            self.value += (1 - math.exp(-(now - self.at) / TAU)) * (seen - self.value)
        self.total, self.at = total, now
        return self.value


def shed_next(shed: float, ratio: float | None, capacity: Capacity) -> float:
    """The fraction to shed next: above ``high``, and below ``low`` while shedding, the
    kept fraction moves (``DAMPING`` of the way) to the one that lands the load halfway
    between the watermarks; in between, or unknown, it holds."""
    if ratio is None or capacity.low <= ratio <= capacity.high or (ratio < capacity.low
                                                                  and shed <= 0):
        return shed
    kept = 1.0 - shed
    goal = (capacity.high + capacity.low) / 2
    wanted = min(1.0, kept * goal / ratio) if ratio > 0 else 1.0
    kept += DAMPING * (wanted - kept)
    if ratio < capacity.low and wanted >= 1.0 and kept > 1.0 - STEP:
        kept = 1.0  # all back
    return min(1.0, max(0.0, 1.0 - kept))


def ramp(since: float | None, now: float, slow_start: float) -> float | None:
    """How far a target back since ``since`` is into its slow start (None: not ramping)."""
    if since is None or slow_start <= 0:
        return None
    done = (now - since) / slow_start
    return None if done >= 1 else max(0.0, done)


def pressure(shed: float, ratio: float | None, ramped: float | None,
             load: Load | None = None) -> Pressure:
    """A target's pressure: what it keeps, in steps of ``STEP`` (down, so a target over
    capacity never keeps more than asked; a ramp's first step is 0)."""
    keep = min(1.0 - shed, 1.0 if ramped is None else ramped)
    return Pressure(round(math.floor(keep / STEP + 1e-9) * STEP, 6), shed, ratio, ramped, load)


def share(network: bytes, target: str) -> float:
    """Where a client network falls for a target, in [0, 1): the target keeps it while
    this is below its ``keep``. Uncorrelated with the near-equal spread's hashing."""
    digest = hashlib.blake2b(network + b"\0keep\0" + target.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
