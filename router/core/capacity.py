"""How much each target can take, how much it is given, and how a recovered one ramps
back: pure.

A target may have a capacity (``capacity = { mbps = 1000, requests = 300 }``; ``load``:
the figure its ``load_url`` reports, when that is neither; ``high`` and ``low``: the
watermarks, 90% and 75% by default). Its load is measured (``Rate``: a decayed rate
that follows a change within about 5 s) from what the redirector sent it (each redirect
adds the file's size: the catalog's, or a HEAD's, ``watch.sizes``), from its own
``load_url``, and in a fleet from every node's (summed). ``ratio`` is the highest of
load / capacity over the kinds it has both of.

**Shedding with hysteresis** (``shed_next``): above ``high`` a target keeps fewer of
its client networks, sized so its load lands between the watermarks; below ``low`` it
takes them back the same way; in between nothing moves, so a steady load never flaps.
**Slow start** (``ramp``): a target back from down or from a drain keeps a fraction of
its networks that grows from 0 to 1 over ``slow_start`` (a health key). **Slow drain**,
its reverse: a serving target the operator drains (by hand, in the fleet, or as a
maintenance window starts) keeps a fraction that falls from 1 to 0 over ``slow_start``,
and only then is out; ``down`` is at once.

Which networks a target keeps is one formula (``Pressure.keeps``). Each network has a
``share`` of the target (rendezvous-style hashing of the target and the network, in [0,
1)). Ramping, a target keeps the networks whose share is below the ramp. Shedding, it
keeps those whose ``priority`` is below its bar (``kept``): the share raised to a power
that grows with the network's *regret* (what the next target that is not itself pressed
costs it more, in km: a network shed down a row of full mirrors is judged by where it
can go), so the networks on the border with a mirror that has room go first and those
far from any last, as the capacity-constrained optimum moves them (``bench/steering``),
and networks at one place go a few at a time. Raising a bar only adds networks and
lowering it only removes them, so a network is not flipped back and forth and resolvers'
caches stay valid. A network a target does not keep is ranked as if the target were not
there (``scoring.Lineup.ranking``): it goes to its next-best by cost, and the near-equal
next ones are spread by the usual hashing, so a spill spreads. The bars are published on
a grid (``_step``), so the caches keyed on the health generation are not retired by
every small move.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

TAU = 2.0  # seconds: the time constant of a decayed rate (95% of a step in 6 s)
TICK = 1.0  # seconds between two looks at the loads
STEP = 0.02  # a ramp moves in steps of this; a kept fraction this close to 1 is all
GRID, LEVELS = 0.95, 400  # bars are published on the grid GRID ** n, n <= LEVELS
STEEPEST = 8.0  # the highest power a share is raised to (see ``priority``)
REGRET_KM = 1000.0  # the scale of regrets: see ``priority``
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

    keep: float  # 0 to 1, on the grid: min(kept, ramped), what /status shows
    shed: float = 0.0  # the fraction shed for load
    ratio: float | None = None  # load / capacity (None: unknown or no capacity)
    ramp: float | None = None  # slow start (or drain): the fraction it is at, else None
    load: Load | None = None  # as measured (for /status and /metrics)
    kept: float = 1.0  # the bar a network's priority must be below (1 - shed, in steps)
    ramped: float | None = None  # the bar its share must be below while ramping (in steps)
    draining: bool = False  # in a slow drain: ``ramp`` falls, and it serves though drained

    @property
    def pressing(self) -> bool:
        """Whether steering must ask it about a network at all."""
        return self.keep < 1 or self.draining

    def steered(self) -> Pressure:
        """What steering reads of it, and nothing that moves without deciding anything
        (the load figures, the ratio finer than a percent, the ramp between its steps):
        what a snapshot carries, so that a new figure is not a new snapshot."""
        return Pressure(self.keep, self.shed, None if self.ratio is None else round(self.ratio, 2),
                        self.ramped, None, self.kept, self.ramped, self.draining)

    @property
    def bars(self) -> tuple[float, float | None, bool]:
        """What steering reads: a change of these is a new decision for some network."""
        return self.kept, self.ramped, self.draining

    def keeps(self, network: bytes, target: str, regret: float) -> bool:
        """Whether the target keeps a client network whose next unpressed target costs
        ``regret`` km more."""
        if self.ramped is None and self.kept >= 1:
            return True
        mine = share(network, target)
        if self.ramped is not None and mine >= self.ramped:
            return False
        return self.kept >= 1 or priority(regret, mine) < self.kept

    def why(self) -> str:
        """Why a network is not kept: what ``explain`` and ``?mirrorlist`` say."""
        if self.ramp is not None and self.ramp <= 1 - self.shed:
            return f"{'draining' if self.draining else 'ramping'} ({self.ramp:.0%})"
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


def drain(since: float, now: float, slow_start: float) -> float | None:
    """What a target drained since ``since`` still keeps in its slow drain (None: done)."""
    left = 1.0 - (now - since) / slow_start if slow_start > 0 else 0.0
    return left if left > 0 else None


def pressure(shed: float, ratio: float | None, ramped: float | None,
             load: Load | None = None, draining: bool = False) -> Pressure:
    """A target's pressure: what it keeps, on the grid (``_step``: down, so a target over
    capacity never keeps more than asked; a ramp's first step is 0)."""
    kept = _step(1.0 - shed)
    stepped = None if ramped is None else round(math.floor(ramped / STEP + 1e-9) * STEP, 6)
    return Pressure(min(kept, 1.0 if stepped is None else stepped), shed, ratio, ramped, load,
                    kept, stepped, draining)


def _step(fraction: float) -> float:
    """``fraction`` down to the grid of published bars: 1 and ``GRID ** n`` (a bar near 0
    moves the share of networks far from any other mirror in small steps too), 0 below
    the finest."""
    if fraction >= 1.0:
        return 1.0
    if fraction < GRID ** LEVELS:
        return 0.0
    return round(GRID ** math.ceil(math.log(fraction) / math.log(GRID) - 1e-9), 9)


def priority(regret: float, mine: float) -> float:
    """Where a network stands in a target's shedding, in [0, 1): its share raised to
    ``k = 1 + regret / REGRET_KM`` (at most ``STEEPEST``). A target that keeps below a bar
    ``b`` keeps a fraction ``b ** (1 / k)`` of the networks with that regret: all of
    those with no next target near, ``b`` of those whose next is as good, and networks at
    one place (one regret) are shed a few at a time, by their share."""
    if regret == math.inf:
        return 0.0
    return float(mine ** min(STEEPEST, 1.0 + max(0.0, regret) / REGRET_KM))


def share(network: bytes, target: str) -> float:
    """Where a client network falls for a target, in [0, 1): the target keeps it while
    this is below its ``keep``. Uncorrelated with the near-equal spread's hashing."""
    digest = hashlib.blake2b(network + b"\0keep\0" + target.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
