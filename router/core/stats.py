"""Counters the faces keep while they serve: plain integers, cheap on the hot paths.

The DNS and HTTP paths only add to dictionaries of integers here; nothing is labelled,
formatted or locked per request. ``router.http.status.metrics`` turns them into Prometheus metrics
when ``/metrics`` is scraped, and the status page reads the same numbers.

Where each counter is counted (keep it so when the paths change):

- ``dns_queries[(qtype, rcode)]``: once per packet, in ``Authority.handle()``: qtype 0
  for a packet whose question could not be read, rcode ``DROPPED`` when nothing was
  sent back; qtypes outside ``QTYPES`` count as 0 too, so no client can make series.
- ``dns_chosen[(service, target)]``: once per target in a steered DNS answer.
- ``http_chosen[(service, target)]``: once per redirect (the ``Location`` target).
- ``http_bytes[(service, target)]``: each redirect's file size, when the catalog lists it
  or a HEAD told it (``watch.sizes``): the load it is sent (``core.load``).
- ``http_responses[status]``: once per HTTP response, in ``http.app.counted`` (the
  wrapper of every handler).
- ``errors[kind]``: unexpected exceptions caught at an edge (``dns``, ``http``).
- ``probes``/``phases``: once per health check, from the prober's ``on_result``.
- ``caches``: not counted here; the caches keep their own plain counters, and
  ``Runtime.sample()`` copies them in before they are read or sent to the supervisor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

from router.core.dnsparams import COUNTED, Rcode
from router.core.health import Key, Result

DROPPED = -1  # the rcode of a packet that got no reply
# The qtypes counted by name (the registry's); any other counts as 0 ("other").
QTYPES = frozenset(int(t) for t in COUNTED)
QTYPE_NAMES = {0: "other", **{int(t): t.name for t in COUNTED}}
RCODE_NAMES = {DROPPED: "dropped", **{int(r): r.name for r in Rcode}}
# Seconds; Prometheus "le" bounds for the probe phase histograms.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PHASES = ("dns", "connect", "tls", "ttfb", "total")


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (not cumulative), the sum and the count of observations."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[next((i for i, b in enumerate(BUCKETS) if value <= b), len(BUCKETS))] += 1
        self.total += value

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out, running = [], 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(slots=True)
class Stats:
    dns_queries: Counter[tuple[int, int]] = field(default_factory=Counter)
    dns_chosen: Counter[Key] = field(default_factory=Counter)
    http_chosen: Counter[Key] = field(default_factory=Counter)
    http_bytes: Counter[Key] = field(default_factory=Counter)  # sizes of files redirected
    countries: Counter[str] = field(default_factory=Counter)  # redirects and DNS decisions
    http_responses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    dns_cookies: Counter[str] = field(default_factory=Counter)  # by cookies.Verdict value
    dns_rrl: Counter[str] = field(default_factory=Counter)  # dropped, slipped
    dnstap: Counter[str] = field(default_factory=Counter)  # answers sent, dropped
    probes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # ok fail unknown
    clients: Counter[str] = field(default_factory=Counter)  # retries, avoidances (retries)
    phases: dict[tuple[str, str, str], Histogram] = field(default_factory=dict)
    # (cache, figure) -> value, copied from the caches by ``Runtime.sample()``: hits,
    # misses, stale, evictions (each since the cache was made) and size
    caches: Counter[tuple[str, str]] = field(default_factory=Counter)
    # --workers: seconds from the supervisor's snapshot to a worker adopting it
    state_lag: Histogram = field(default_factory=Histogram)

    def probed(self, key: Key, result: Result) -> None:
        """The prober's ``on_result``: count the check and file its phases."""
        self.probes[(*key, result.verdict)] += 1
        p = result.phases
        if p is None:
            return
        for phase, value in zip(PHASES, (p.dns, p.connect, p.tls, p.ttfb, p.total),
                                strict=True):
            if value is not None:
                self.phases.setdefault((*key, phase), Histogram()).observe(value)

    def merged(self, *others: Stats) -> Stats:
        """A new ``Stats`` with these counts and every other's added (workers' totals)."""
        total = Stats()
        for part in (self, *others):
            for f in fields(Stats):
                mine, theirs = getattr(total, f.name), getattr(part, f.name)
                if isinstance(theirs, Counter):
                    mine.update(theirs)
                elif isinstance(theirs, Histogram):
                    mine.add(theirs)
                else:  # a dict of histograms
                    for key, h in theirs.items():
                        mine.setdefault(key, Histogram()).add(h)
        return total

    def answers(self, key: Key) -> int:
        """How many answers (DNS) and redirects (HTTP) chose this target."""
        return self.dns_chosen[key] + self.http_chosen[key]
