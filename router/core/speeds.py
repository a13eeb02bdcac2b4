"""What clients report of their downloads' speed (the beacon, ``POST /report``), and what
steering may charge for it. Pure.

Each (service, region, target) keeps one figure per client network, its last, for the
last ``SAMPLES`` networks that reported: a network that reports a thousand times still
counts once, so the median moves only when many networks agree. The region is the
fleet region the client is judged from (``core.regions``; ``all`` with one region).

A service with ``throughput_size`` (off by default) has each target charged, like its
wait, the time that size would take at the median of the target's reports from the
client's region: ``km_per_ms`` per millisecond over the fastest target's, quantized
(``health.quantize``) so that noise does not change decisions. Only once
``MIN_NETWORKS`` networks have reported: before, there is no figure to charge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from router.core.config import Service
from router.core.health import Board, quantize

SAMPLES = 101  # client networks whose last figure is kept per (service, region, target)
MIN_NETWORKS = 5  # networks that must have reported before a median is charged

Subject = tuple[str, str, str]  # (service, region, target)


@dataclass(frozen=True, slots=True)
class SpeedReport:
    """One client's download, as the beacon was told it."""

    service: str
    region: str
    target: str
    network: bytes  # the reporter's client network (``core.retries.network_of``)
    bytes_per_second: float


class Speeds:
    """The figures reported, per (service, region, target). Bounded: the subjects by
    the config and the regions, the figures by ``SAMPLES`` each."""

    def __init__(self) -> None:
        self.figures: dict[Subject, dict[bytes, float]] = {}
        # told of each report this process takes (a worker: the supervisor, which keeps
        # the figures steering reads)
        self.journal: Callable[[SpeedReport], None] | None = None

    def add(self, report: SpeedReport) -> float | None:
        """Keep ``report``; the median it leaves for its subject (None: too few networks)."""
        subject = (report.service, report.region, report.target)
        kept = self.figures.setdefault(subject, {})
        kept.pop(report.network, None)  # its last figure, and the newest in order
        kept[report.network] = report.bytes_per_second
        while len(kept) > SAMPLES:
            del kept[next(iter(kept))]
        return self.median(*subject) if len(kept) >= MIN_NETWORKS else None

    def median(self, service: str, region: str | None, target: str) -> float | None:
        """The median figure for ``target`` from ``region`` (None: every region)."""
        figures = sorted(f for (s, r, t), kept in self.figures.items()
                         if s == service and t == target and region in (None, r)
                         for f in kept.values())
        return figures[len(figures) // 2] if figures else None


def charge_ms(size: int, bytes_per_second: float, before: int | None) -> int:
    """The milliseconds ``size`` bytes take at ``bytes_per_second``, as steering sees
    them: quantized, moved only past the hysteresis from ``before``."""
    published = quantize(size / bytes_per_second, before)
    assert published is not None
    return published


def heard(speeds: Speeds, board: Board, service: Service, report: SpeedReport) -> None:
    """Keep ``report``; with ``throughput_size``, charge its target on ``board`` for the
    clients of its region what the new median comes to."""
    median = speeds.add(report)
    size = service.throughput_size
    if median is None or size is None or median <= 0:
        return
    key = (service.name, report.target)
    board.charge(report.region, key, charge_ms(size, median, board.charged(report.region, key)))
