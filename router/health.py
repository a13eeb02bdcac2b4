"""Target health: a pure state machine and the board that publishes it as snapshots.

A probe reports pass or fail (plus timings). ``observe()`` applies the anti-flap rules:
the first result decides at once (so a cold start is never a guess), then ``fall``
consecutive failures take an UP target down and ``rise`` consecutive successes bring a
DOWN one back. The rules are data, in ``TRANSITIONS``.

``Board`` keeps the state of every (service, target) and publishes a frozen ``Snapshot``
by swapping one reference; each request reads the snapshot once. The snapshot's
``generation`` changes whenever any status changes, so caches of answers know when
they are stale. Nothing here does I/O: the prober (``router.probe``) feeds results in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType

from router.config import HealthCheck

EWMA_ALPHA = 0.3  # weight of the newest first-byte time in the moving average


class Status(Enum):
    UNKNOWN = "unknown"  # not probed (yet): usable
    UP = "up"
    DOWN = "down"


class Threshold(Enum):
    AT_ONCE = "at once"
    RISE = "rise"
    FALL = "fall"


# (current status, probe passed) → (status once the streak reaches the threshold, threshold)
TRANSITIONS: Mapping[tuple[Status, bool], tuple[Status, Threshold]] = MappingProxyType({
    (Status.UNKNOWN, True): (Status.UP, Threshold.AT_ONCE),
    (Status.UNKNOWN, False): (Status.DOWN, Threshold.AT_ONCE),
    (Status.UP, True): (Status.UP, Threshold.AT_ONCE),
    (Status.UP, False): (Status.DOWN, Threshold.FALL),
    (Status.DOWN, True): (Status.UP, Threshold.RISE),
    (Status.DOWN, False): (Status.DOWN, Threshold.AT_ONCE),
})


@dataclass(frozen=True, slots=True)
class Result:
    """One probe's outcome. Times are seconds; ``at`` is on the caller's clock."""

    ok: bool
    at: float
    error: str | None = None
    http_status: int | None = None
    ttfb: float | None = None  # time to the first byte of the response
    total: float | None = None


@dataclass(frozen=True, slots=True)
class Health:
    status: Status = Status.UNKNOWN
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    since: float | None = None  # when the status last changed
    last_ok: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    ttfb_ewma: float | None = None
    checks: int = 0
    last: Result | None = None


def observe(h: Health, result: Result, check: HealthCheck) -> Health:
    """Apply one probe result to a target's health (pure)."""
    ok = result.ok
    successes = h.successes + 1 if ok else 0
    failures = 0 if ok else h.failures + 1
    goal, threshold = TRANSITIONS[(h.status, ok)]
    need = {Threshold.AT_ONCE: 1, Threshold.RISE: check.rise, Threshold.FALL: check.fall}[threshold]
    status = goal if (successes if ok else failures) >= need else h.status
    return replace(
        h,
        status=status,
        successes=successes,
        failures=failures,
        since=result.at if status is not h.status else h.since,
        last_ok=result.at if ok else h.last_ok,
        last_failure=h.last_failure if ok else result.at,
        last_error=h.last_error if ok else result.error,
        ttfb_ewma=_ewma(h.ttfb_ewma, result.ttfb) if ok else h.ttfb_ewma,
        checks=h.checks + 1,
        last=result,
    )


def _ewma(old: float | None, new: float | None) -> float | None:
    if new is None:
        return old
    return new if old is None else old + EWMA_ALPHA * (new - old)


Key = tuple[str, str]  # (service name, target id)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A frozen view of every target's health at one moment."""

    health: Mapping[Key, Health] = field(default_factory=lambda: MappingProxyType({}))
    generation: int = 0

    def get(self, service: str, target: str) -> Health:
        return self.health.get((service, target), _UNKNOWN)

    def view(self, service: str) -> Callable[[str], Status]:
        """The ``target id → status`` function that steering reads for one service."""
        health = self.health
        return lambda target: health.get((service, target), _UNKNOWN).status


_UNKNOWN = Health()


class Board:
    """The live health of every target; ``snapshot`` is swapped whole on each change."""

    def __init__(self) -> None:
        self._state: dict[Key, Health] = {}
        self.snapshot = Snapshot()

    def record(self, key: Key, result: Result, check: HealthCheck) -> tuple[Health, Health]:
        """Apply a result; return (before, after) so the caller can log a change."""
        before = self._state.get(key, _UNKNOWN)
        after = observe(before, result, check)
        self._state[key] = after
        self._publish(changed=after.status is not before.status)
        return before, after

    def assume(self, keys: Iterable[Key], status: Status, at: float) -> None:
        """Set targets that are never probed (no health URL, or --no-probe)."""
        for key in keys:
            self._state[key] = Health(status=status, since=at)
        self._publish(changed=True)

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget targets that left the config (on reload)."""
        wanted = set(keys)
        gone = [k for k in self._state if k not in wanted]
        for k in gone:
            del self._state[k]
        if gone:
            self._publish(changed=True)

    def _publish(self, changed: bool) -> None:
        generation = self.snapshot.generation + (1 if changed else 0)
        self.snapshot = Snapshot(MappingProxyType(dict(self._state)), generation)
