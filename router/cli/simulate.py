"""``mirror-router simulate``: where a traffic mix would go, before it does.

    mirror-router simulate --zones DIR [--geoip FILE] [--asn-db FILE] --traffic FILE|URL
                           [--service NAME] [--drain ID]... [--down ID]... [--json]
                           [--svg FILE]

The traffic is a CSV file with a header: ``country,requests_per_second,mean_bytes`` (a
country's traffic from its centre, ``router/core/countries.txt``) or
``prefix,requests_per_second,mean_bytes`` (one client network a row, placed by GeoIP as
the DNS face places it); or a running router's ``/status.json`` URL (the live mix: each
country's redirects and steered answers counted so far, a second of its uptime, at
``--mean-bytes``). ``--drain`` and ``--down`` (a target id, or ``service/id``; again for
more) say what is out. Prints, for each target, its share of client networks, requests
and bytes, its load against its capacity and what it keeps; then which would be over
capacity. ``--svg`` draws the flows on the status page's world map (an arc from each
country or network to its target, as thick as its bytes). The steering is the server's
own (``router.core.simulation``). Exit status 0, 1 on a bad zone, traffic or option, 2
when a target would be over its capacity.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from router.cli import args as common
from router.core import reading
from router.core.config import Config, Service
from router.core.earth import Point
from router.core.geo import GeoError
from router.core.simulation import (
    Flow,
    Outcome,
    Share,
    country_flows,
    simulate,
    snapshot_of,
)
from router.core.steering import Want
from router.http.status.worldmap import Arc, Marker, svg

COUNTRIES = Path(__file__).resolve().parent.parent / "core" / "countries.txt"


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="where a traffic mix would go: each mirror's share, "
                       "load and capacity, with some mirrors drained or down")
    common.zones(p)
    common.geoip(p)
    common.asn_db(p)
    p.add_argument("--traffic", required=True, metavar="FILE|URL",
                   help="a CSV file (country or prefix, requests_per_second, mean_bytes), "
                        "or a running router's /status.json URL")
    p.add_argument("--service", metavar="NAME", help="the service (default: the first)")
    p.add_argument("--drain", action="append", default=[], metavar="ID",
                   help="a target drained (again for more)")
    p.add_argument("--down", action="append", default=[], metavar="ID",
                   help="a target down (again for more)")
    p.add_argument("--mean-bytes", type=float, default=100e6, metavar="N",
                   help="bytes a request, for the live mix of a URL (default 100e6)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--svg", type=Path, metavar="FILE", help="draw the flows on a world map")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = common.load_or_report(args.zones, args.asn_db)
    if config is None:
        return 1
    service = _service(config, args.service)
    if service is None:
        print(f"{args.service or 'a service'}: not in {args.zones}", file=sys.stderr)
        return 1
    try:
        placer = common.placer(args, config)
        flows = _flows(args, placer.locate)
    except (OSError, ValueError, GeoError) as e:
        print(f"{args.traffic}: {e}", file=sys.stderr)
        return 1
    want = Want.URL if service.http_prefix else Want.IPV4
    outcome = simulate(service, snapshot_of(config, args.down, args.drain), flows,
                       placer.rules, want)
    doc = document(outcome, flows)
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    if args.svg is not None:
        args.svg.write_text(drawing(outcome, flows))
    return 2 if doc["overloaded"] else 0


def _service(config: Config, name: str | None) -> Service | None:
    services = [s for s in config.services if s.targets]
    if name is None:
        return services[0] if services else None
    return next((s for s in services if s.name == name), None)


def _flows(args: argparse.Namespace, locate: Any) -> list[Flow]:
    source: str = args.traffic
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as r:  # the operator's own router
            doc = json.load(r)
        uptime = max(1.0, float(doc.get("uptime_s") or 1))
        rows = [(c, n / uptime, args.mean_bytes) for c, n in doc.get("countries", {}).items()]
        return country_flows(rows, centres())
    table = list(csv.reader(io.StringIO(reading.read_text(Path(source), "traffic file"))))
    if not table or len(table[0]) != 3 or table[0][1:] != ["requests_per_second",
                                                            "mean_bytes"]:
        raise ValueError("the header must be country|prefix,requests_per_second,mean_bytes")
    rows = [(r[0].strip(), float(r[1]), float(r[2])) for r in table[1:] if r]
    if table[0][0] == "country":
        return country_flows(rows, centres())
    if table[0][0] != "prefix":
        raise ValueError(f"the first column is country or prefix, not {table[0][0]!r}")
    return [Flow(locate(prefix.split("/")[0]), rate, rate * size, prefix)
            for prefix, rate, size in rows]


def centres() -> dict[str, Point]:
    """Each country's centre (where its address space is)."""
    out = {}
    for line in reading.read_text(COUNTRIES, "country list").splitlines():
        if line and not line.startswith("#"):
            code, lat, lon = line.split()
            out[code] = Point(float(lat), float(lon))
    return out


def document(outcome: Outcome, flows: list[Flow]) -> dict[str, Any]:
    total = sum(s.bytes_per_second for s in outcome.shares.values()) or 1.0
    networks = sum(s.networks for s in outcome.shares.values()) or 1
    rows = []
    for target in outcome.service.targets:
        share = outcome.shares.get(target.id)
        p = outcome.pressures.get((outcome.service.name, target.id))
        rows.append({
            "id": target.id,
            "networks": share.networks if share else 0,
            "networks_share": round((share.networks if share else 0) / networks, 4),
            "requests_per_second": round(share.requests if share else 0.0, 3),
            "mbps": round((share.bytes_per_second if share else 0.0) * 8 / 1e6, 3),
            "bytes_share": round((share.bytes_per_second if share else 0.0) / total, 4),
            "capacity": None if target.capacity is None else {
                "mbps": target.capacity.mbps, "requests": target.capacity.requests},
            "load_ratio": None if p is None or p.ratio is None else round(p.ratio, 4),
            "keep": 1.0 if p is None else p.keep})
    lost = outcome.shares.get("")
    by_prefix = {f.label: outcome.assigned.get(f.client.key) for f in flows
                 if not f.label.isalpha()}  # prefix rows: where each network goes
    return {"service": outcome.service.name, "rounds": outcome.rounds, "targets": rows,
            "unserved_networks": lost.networks if lost else 0,
            "overloaded": outcome.overloaded(), **({"by_prefix": by_prefix} if by_prefix else {})}


def render(doc: dict[str, Any]) -> str:
    lines = [f"service {doc['service']} (shedding settled in {doc['rounds']} rounds)",
             f"{'target':<12} {'networks':>9} {'requests/s':>11} {'Mbit/s':>10} "
             f"{'bytes':>6} {'load':>7} {'keeps':>6}"]
    for r in doc["targets"]:
        load = "-" if r["load_ratio"] is None else f"{r['load_ratio']:.0%}"
        lines.append(f"{r['id']:<12} {r['networks_share']:>9.1%} "
                     f"{r['requests_per_second']:>11,.1f} {r['mbps']:>10,.1f} "
                     f"{r['bytes_share']:>6.1%} {load:>7} {r['keep']:>6.0%}")
    if doc["unserved_networks"]:
        lines.append(f"no target can serve {doc['unserved_networks']} network(s)")
    lines.append("over capacity: " + (", ".join(doc["overloaded"]) or "none"))
    return "\n".join(lines)


def drawing(outcome: Outcome, flows: list[Flow]) -> str:
    """The flows on the world map: from each traffic row's place to its targets."""
    service = outcome.service
    places = {f.label: f.client.point for f in flows if f.client.point is not None}
    biggest = max((b for s in outcome.shares.values() for b in s.flows.values()), default=1)
    arcs = [Arc(places[label], target.location, 0.3 + 2.5 * (size / biggest) ** 0.5,
                f"{label} → {target.id}: {size * 8 / 1e6:,.1f} Mbit/s")
            for target in service.targets if target.location is not None
            for label, size in outcome.shares.get(target.id, _NONE).flows.items()
            if label in places and size > 0]
    markers = [Marker(f"t-{t.id}", t.id, t.location, _colour(outcome, t.id), t.id)
               for t in service.targets if t.location is not None]
    return svg(markers, "flows", arcs)


def _colour(outcome: Outcome, tid: str) -> str:
    p = outcome.pressures.get((outcome.service.name, tid))
    if p is None or p.ratio is None:
        return "blue"
    return "red" if p.ratio > 1 else "amber" if p.keep < 1 else "green"


_NONE = Share()
