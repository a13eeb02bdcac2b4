"""The load on each target, and what it leaves each target of its clients: pure.

``Loads.step()`` is called once a ``capacity.TICK`` by the process that owns the serving
board (the server, or the supervisor of ``--workers``) with what was sent (the totals of
redirects and of the bytes of the files they named, per target: ``Stats.http_chosen``
and ``Stats.http_bytes``, summed over the workers), the other nodes' rates in a fleet,
and each target's ``load_url`` figure. It returns the ``Pressure`` of every target that
has a capacity or is ramping (``core.capacity``): the serving board publishes it, and
steering reads ``keep`` from the snapshot.

Slow start: a target seen unusable (down, drained, taken down) and then usable again
ramps from 0 over its service's ``health.slow_start``. A target first seen usable (a
start, a reload) does not ramp. Slow drain: a usable target the operator drains keeps
serving a fraction that falls from 1 to 0 over the same ``slow_start``; drained back
before it is done, it ramps up from where it was.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from router.core.capacity import (
    TAU,
    Capacity,
    Load,
    Pressure,
    Rate,
    drain,
    pressure,
    ramp,
    shed_next,
)
from router.core.config import Config
from router.core.health import Effective, Key, Snapshot, Status, effective
from router.core.overrides import lookup

USABLE = (Effective.USABLE, Effective.FORCED)
SETTLE = 2.5 * TAU  # seconds between two moves of a shed fraction: the rate shows 92% of one

Sent = tuple[float, float]  # (bytes, requests): totals, or rates a second


@dataclass(slots=True)
class Loads:
    """Each target's rates, shed fraction and recovery, from step to step."""

    rates: dict[tuple[Key, str], Rate] = field(default_factory=dict)
    shed: dict[Key, float] = field(default_factory=dict)
    usable: dict[Key, bool] = field(default_factory=dict)
    back: dict[Key, float] = field(default_factory=dict)  # when it became usable again
    drained: dict[Key, float] = field(default_factory=dict)  # when its slow drain began
    mine: dict[Key, Sent] = field(default_factory=dict)  # this node's rates, last step
    moved: dict[Key, float] = field(default_factory=dict)  # when its shed last moved

    def step(self, config: Config, snapshot: Snapshot, sent: Mapping[Key, Sent],
             reported: Mapping[Key, float | None], now: float,
             others: Mapping[Key, Sent] | None = None) -> dict[Key, Pressure]:
        """Every pressured target's ``Pressure`` at ``now`` (seconds, monotonic)."""
        out: dict[Key, Pressure] = {}
        for service in config.services:
            slow = service.health.slow_start
            for target in service.targets:
                key = (service.name, target.id)
                self._recovery(key, snapshot, now, slow)
                rate = self._rates(key, sent.get(key, (0.0, 0.0)), now)
                capacity = target.capacity
                if capacity is None and slow <= 0:
                    continue
                theirs = (others or {}).get(key, (0.0, 0.0))
                load = Load(rate[0] + theirs[0], rate[1] + theirs[1], reported.get(key)) \
                    if service.http_prefix else Load(reported=reported.get(key))
                ratio = load.ratio(capacity) if capacity is not None else None
                shed = self._shed(key, ratio, capacity, now)
                began = self.drained.get(key)
                left = None if began is None else drain(began, now, slow)
                ramped = ramp(self.back.get(key), now, slow) if left is None else left
                out[key] = pressure(shed, ratio, ramped, load, left is not None)
        self._forget(config)
        return out

    def _shed(self, key: Key, ratio: float | None, capacity: Capacity | None,
              now: float) -> float:
        """The shed fraction after this step: moved at most once a ``SETTLE``, so the
        decayed rate shows what the last move did before the next."""
        before = self.shed.get(key, 0.0)
        if capacity is None:
            shed = 0.0
        elif now - self.moved.get(key, -SETTLE) < SETTLE:
            return before
        else:
            shed = shed_next(before, ratio, capacity)
        if shed != before:
            self.moved[key] = now
        self.shed[key] = shed
        return shed

    def _recovery(self, key: Key, snapshot: Snapshot, now: float, slow: float) -> None:
        """Note when a target comes back (slow start) or a serving one is drained (slow
        drain); a drain taken back half-way ramps up from where it was."""
        status = snapshot.get(*key).status
        state = effective(status, lookup(snapshot.admin, *key))
        usable, before = state in USABLE, self.usable.get(key)
        began = self.drained.pop(key, None) if state is not Effective.DRAINED else None
        if usable and before is False:
            left = None if began is None else drain(began, now, slow)
            self.back[key] = now - slow * (left or 0.0)
        if state is Effective.DRAINED and before and status is not Status.DOWN and slow > 0:
            self.drained[key] = now
        self.usable[key] = usable

    def _rates(self, key: Key, total: Sent, now: float) -> Sent:
        found = (self.rates.setdefault((key, "bytes"), Rate()).update(total[0], now),
                 self.rates.setdefault((key, "requests"), Rate()).update(total[1], now))
        self.mine[key] = found
        return found

    def _forget(self, config: Config) -> None:
        """Targets that left the config (a reload)."""
        keys = {(s.name, t.id) for s in config.services for t in s.targets}
        for table in (self.shed, self.usable, self.back, self.mine, self.moved, self.drained):
            for key in [k for k in table if k not in keys]:
                del table[key]
        for both in [k for k in self.rates if k[0] not in keys]:
            del self.rates[both]


# ---------------------------------------------------------------- a load_url's figure

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
MAX_PAGE = 1 << 20  # bytes of a load_url's page read at most


class BadFigure(ValueError):
    """A load_url page that does not give the figure: the load is unknown, never down."""


def figure(text: str, metric: str | None) -> tuple[float, bool]:
    """The figure a ``load_url`` page gives, and whether it is a counter (whose rate is
    the load): a plain number (``metric`` None), or the sum of the samples of ``metric``
    (a name, maybe with labels that each sample must have) in Prometheus' text format;
    a counter when the page types it so, or its name ends in ``_total``."""
    if metric is None:
        try:
            value = float(text.strip())
        except ValueError:
            raise BadFigure(f"not a number: {text.strip()[:40]!r}") from None
        return _finite(value), False
    name, _, wanted = metric.partition("{")
    want = _labels("{" + wanted) if wanted else {}
    found: list[float] = []
    counter = name.endswith("_total")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            counter = counter or (len(parts) == 4 and parts[2] == name and parts[3] == "counter")
            continue
        m = _LINE.match(line)
        if m is None or m.group(1) != name:
            continue
        have = _labels(m.group(2) or "")
        if all(have.get(k) == v for k, v in want.items()):
            try:
                found.append(float(m.group(3)))
            except ValueError:
                raise BadFigure(f"{name}: {m.group(3)[:40]!r} is not a number") from None
    if not found:
        raise BadFigure(f"no sample of {metric}")
    return _finite(sum(found)), counter


def _labels(text: str) -> dict[str, str]:
    return dict(_LABEL.findall(text.strip("{}")))


def _finite(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise BadFigure(f"{value} is not a load")
    return value
