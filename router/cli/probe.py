"""``mirror-router probe``: check every target now and print what a downloader would feel.

    mirror-router probe [--zones DIR] [--count N] [--client IP] [--json] [--ca-file FILE]

Every target with a health URL is checked ``--count`` times (once by default), with the
server's own check (``router.watch.check``: same User-Agent, expectations and timeouts), all
targets at once. The table has one row per target, sorted by time to first byte, with
each phase's median as ``curl -w`` counts it (ms from the start of the request), the
server's wait (what steering charges for), with ``--client`` the rank that client would
get from these results, and the last status. The exit status is 2 when a target's last
check failed (``--json`` has every check in full). While the checks run, a progress line
shows on the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from router.cli import args as common
from router.core.audience import Rules, scope
from router.core.checks import Probe, probes
from router.core.config import Config, ConfigError, HealthCheck, Service
from router.core.geo import GeoError, Location
from router.core.health import Health, Result, Snapshot, observe
from router.core.steering import Want, decide
from router.core.zonefile import load
from router.watch.check import new_session
from router.watch.kinds import checkers

PARALLEL = 16
PHASES = ("dns", "connect", "tls", "ttfb", "wait", "total")


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("probe", help="check every target now and print a timing table")
    common.zones(p)
    p.add_argument("--count", type=int, default=1, metavar="N",
                   help="checks per target (default 1); the table shows medians")
    p.add_argument("--client", type=ipaddress.ip_address, metavar="IP",
                   help="add the rank this client would get from these results")
    common.geoip(p)
    common.asn_db(p)
    common.ca_file(p)
    p.add_argument("--json", action="store_true", help="print JSON, every check included")
    p.set_defaults(func=main)


@dataclass
class Row:
    service: Service
    target: str
    url: str
    check: HealthCheck
    results: list[Result] = field(default_factory=list)
    rank: int | None = None

    @property
    def probe(self) -> Probe:
        return Probe((self.service.name, self.target), self.url, self.check)

    @property
    def health(self) -> Health:
        """The results folded by the server's own state machine."""
        h = Health()
        for r in self.results:
            h = observe(h, r, self.check)
        return h

    def median(self, phase: str) -> float | None:
        values = [getattr(r.phases, phase) if phase != "wait" else r.phases.wait
                  for r in self.results if r.ok and r.phases is not None]
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    @property
    def status(self) -> str:
        last = self.results[-1]
        ok = sum(r.ok for r in self.results)
        text = str(last.http_status) if last.ok else (last.error or "failed")
        return text if len(self.results) == 1 else f"{text} ({ok}/{len(self.results)} ok)"


def main(args: argparse.Namespace) -> int:
    try:
        config = load(args.zones)
        placer = common.placer(args, config) if args.client else None
        client = placer.locate(args.client) if placer is not None else None
    except (ConfigError, GeoError) as e:
        print(e, file=sys.stderr)
        return 1
    rows = _rows(config)
    if not rows:
        print(f"{args.zones}: no target has a health URL to check", file=sys.stderr)
        return 1
    progress = Progress(sys.stderr, len(rows) * max(1, args.count))
    asyncio.run(_probe_all(rows, max(1, args.count), args.ca_file, progress))
    progress.done()
    if client is not None and placer is not None:
        _rank(rows, client, placer.rules)
    rows.sort(key=_order)
    print(json.dumps(_json(rows, args), indent=2) if args.json else table(rows, client))
    return 0 if all(r.results[-1].ok for r in rows) else 2


def _rows(config: Config) -> list[Row]:
    services = {s.name: s for s in config.services}
    return [Row(services[p.key[0]], p.key[1], p.url, p.check) for p in probes(config)]


async def _probe_all(rows: list[Row], count: int, ca_file: Path | None,
                     progress: Progress) -> None:
    gate = asyncio.Semaphore(PARALLEL)
    async with new_session(ca_file) as session:
        kinds = checkers(session)  # every kind of check, as the server runs it

        async def one(row: Row) -> None:
            async with gate:
                for _ in range(count):
                    row.results.append(await kinds[row.check.kind].check(row.probe))
                    progress.step(row.target)
        await asyncio.gather(*(one(r) for r in rows))


def _rank(rows: list[Row], client: Location, rules: Rules) -> None:
    """The rank each target would get from these results, exactly as the server ranks
    (with the rules the client matched)."""
    snapshot = Snapshot(MappingProxyType({(r.service.name, r.target): r.health for r in rows}))
    positions: dict[tuple[str, str], int] = {}
    for service in {r.service.name: r.service for r in rows}.values():
        decision = decide(snapshot, service, client, Want.ANY,
                          scope=scope(rules, service, client))
        positions |= {(service.name, c.target.id): i for i, c in enumerate(decision.ranked, 1)}
    for r in rows:
        r.rank = positions.get((r.service.name, r.target))


def _order(row: Row) -> tuple[int, float, str]:
    ttfb = row.median("ttfb")
    return (0, ttfb, row.target) if ttfb is not None else (1, 0.0, row.target)


def table(rows: list[Row], client: Location | None) -> str:
    several = len({r.service.name for r in rows}) > 1
    head = ["target", "DNS", "connect", "TLS", "TTFB", "wait", "total"]
    head += ["rank", "status"] if client is not None else ["status"]
    lines = [head]
    for r in rows:
        name = f"{r.service.name}/{r.target}" if several else r.target
        line = [name, *(_ms(r.median(p)) for p in PHASES)]
        if client is not None:
            line.append(str(r.rank) if r.rank else "-")
        lines.append([*line, _short(r.status)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(v.ljust(w) if i in (0, len(head) - 1) else v.rjust(w)
                     for i, (v, w) in enumerate(zip(line, widths, strict=True))).rstrip()
           for line in lines]
    note = "times in ms from the start of each request, as curl -w counts them"
    note += "; medians of the checks that passed" if any(len(r.results) > 1 for r in rows) \
        else ""
    if client is not None:
        note += f"; rank for {client.network} ({client.city or client.country or 'unlocated'})"
    failed = [f"{f'{r.service.name}/{r.target}' if several else r.target} failed: checked {r.url}"
              for r in rows if r.results and not r.results[-1].ok]
    return "\n".join([*out, "", note, *failed])


def _short(status: str, limit: int = 72) -> str:
    """A status for the table: certificate errors said briefly, the rest cut to fit."""
    if "certificate verify failed: " in status:
        reason = status.split("certificate verify failed: ", 1)[1].split(" (_ssl", 1)[0]
        status = f"TLS: certificate verify failed: {reason}"
    return status if len(status) <= limit else status[:limit - 3] + "..."


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _json(rows: list[Row], args: argparse.Namespace) -> dict[str, Any]:
    return {"client": str(args.client) if args.client else None, "count": args.count,
            "targets": [{"service": r.service.name, "id": r.target, "url": r.url,
                         "rank": r.rank, "status": r.status,
                         "median_ms": {p: _round_ms(r.median(p)) for p in PHASES},
                         "checks": [_check_json(x) for x in r.results]} for r in rows]}


def _check_json(r: Result) -> dict[str, Any]:
    p = r.phases
    phases = {} if p is None else {"dns": p.dns, "connect": p.connect, "tls": p.tls,
                                   "sent": p.sent, "ttfb": p.ttfb, "wait": p.wait,
                                   "total": p.total}
    return {"ok": r.ok, "at": r.at, "http_status": r.http_status, "error": r.error,
            "ms": {k: _round_ms(v) for k, v in phases.items()}}


def _round_ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Progress:
    """A one-line progress display on a terminal; silent when output is not one."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total, self.count = stream, total, 0
        self.live = stream.isatty()

    def step(self, target: str) -> None:
        self.count += 1
        if self.live:
            bar = "#" * (20 * self.count // self.total)
            self.stream.write(f"\r\x1b[Kprobing [{bar:<20}] {self.count}/{self.total}  "
                              f"{target}")
            self.stream.flush()

    def done(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
