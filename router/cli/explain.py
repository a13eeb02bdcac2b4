"""``mirror-router explain``: how a client's answer is decided, with every candidate's
figures, for a steered DNS name, a service, or an HTTP path (as the redirector decides).

With ``--server URL`` it asks the running router (its admin listener's ``/explain``),
which answers with its live decision. Without, it decides from the files as a router
that has probed nothing would, and says first what it could not know. Both print the one
shape of ``?mirrorlist=json``; the text is drawn from it (``render``)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import urlopen

from router.cli import args as common
from router.core.audience import scope
from router.core.catalog import Catalog, CatalogError, parse_go
from router.core.config import Config, ConfigError, Service, Zone
from router.core.geo import GeoError, Location
from router.core.health import Status
from router.core.overrides import lookup
from router.core.runtime import signing_line
from router.core.steering import Decision, Want, describe_answer, rank
from router.dns import dnssec
from router.http import downloads
from router.http.routes import PathError, Routes, clean
from router.watch import statefile


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("explain", help="show how a client's answer is decided")
    common.zones(p)
    common.geoip(p)
    common.asn_db(p)
    p.add_argument("--client", required=True, type=ipaddress.ip_address, metavar="IP",
                   help="the client (or ECS) address to decide for")
    p.add_argument("--type", choices=["A", "AAAA"], default="A",
                   help="the DNS type asked (default A)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--host", help="the HTTP Host, to choose among zones (paths only)")
    p.add_argument("name", metavar="NAME",
                   help="a steered DNS name (go.example.com), a service name, or an "
                        "HTTP path (/go1.22.5.linux-amd64.tar.gz)")
    p.add_argument("--server", metavar="URL",
                   help="ask the running router at this admin listener "
                        "(http://127.0.0.1:8081): its live decision; the zones, "
                        "databases and --state are then its own")
    p.add_argument("--state", type=Path, metavar="FILE",
                   help="offline: apply the operator overrides in this state file")
    p.add_argument("--catalog", type=Path, metavar="FILE",
                   help="offline: the service's catalog (release list) from this file, "
                        "instead of fetching the URL the service names")
    p.add_argument("--no-fetch", action="store_true",
                   help="offline: fetch nothing (as serve --no-probe probes nothing): "
                        "without --catalog, whether a file is listed is then not known")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = _asked_live(args) if args.server else _decided_offline(args)
    if data is None:
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data))
    return 0


# ---------------------------------------------------------------- the running router


def _asked_live(args: argparse.Namespace) -> dict[str, Any] | None:
    """The running router's decision, from its admin listener's ``/explain``."""
    query = urlencode({"client": str(args.client), "name": args.name, "type": args.type,
                       **({"host": args.host} if args.host else {})})
    url = f"{args.server.rstrip('/')}/explain?{query}"
    try:
        with urlopen(url, timeout=10) as response:  # the operator's URL
            data: dict[str, Any] = json.loads(response.read())
            return data
    except HTTPError as e:
        print(f"{args.server}: {e.read().decode(errors='replace').strip()} "
              f"(HTTP {e.code})", file=sys.stderr)
    except (URLError, OSError, ValueError) as e:
        print(f"{args.server}: cannot ask the router: {getattr(e, 'reason', e)} "
              "(--server is its admin listener, serve --admin)", file=sys.stderr)
    return None


# ---------------------------------------------------------------- offline


NOT_KNOWN = ["not known offline: health (every target counts as up), latency, the fleet's "
             "verdicts, per-file checks, mirror freshness (--server URL asks the router)"]


def _decided_offline(args: argparse.Namespace) -> dict[str, Any] | None:
    """The decision from the files alone, as a router that has probed nothing makes it."""
    config = common.load_or_report(args.zones, args.asn_db)
    if config is None:
        return None
    try:
        args.overrides = statefile.read(args.state) if args.state else {}
        placer = common.placer(args, config, narrow=not args.name.startswith("/"))
        client = placer.locate(args.client)
        args.rules = placer.rules
    except ConfigError as e:
        common.report(e)
        return None
    except GeoError as e:
        print(e, file=sys.stderr)
        return None
    if args.name.startswith("/"):
        return _path_offline(args, config, client)
    named = config.named(args.name)
    if named is None:
        print(f"{args.name}: not a steered name or a service in {args.zones}", file=sys.stderr)
        return None
    zone, service = named
    want = Want.IPV6 if args.type == "AAAA" else Want.IPV4
    return {"name": args.name, "type": args.type, "client_address": str(args.client),
            **describe_answer(_rank(args, service, client, want), want),
            "dnssec": _signing(zone), "known": NOT_KNOWN}


def _signing(zone: Zone) -> str:
    """Whether DO queries get signed answers, and with which keys."""
    if not zone.signed:
        return signing_line(zone.origin, None)
    phase = dnssec.phase(dnssec.zone_keys(zone), time.time(), zone.ttl)  # checked at load
    return signing_line(zone.origin, [(k.name, k.tag) for k in phase.signing])


def _assumed_up(_target: str) -> Status:
    """Nothing is probed here: every target counts as up, as under ``serve --no-probe``."""
    return Status.UP


def _rank(args: argparse.Namespace, service: Service, client: Location, want: Want) -> Decision:
    """The decision as the server would make it before any probe, with --state applied
    and the rules the client matched."""
    overrides, rules = args.overrides, args.rules
    return rank(service, client, _assumed_up, want,
                admin=lambda t: lookup(overrides, service.name, t),
                scope=scope(rules, service, client))


def _path_offline(args: argparse.Namespace, config: Config, client: Location
                  ) -> dict[str, Any] | None:
    """The HTTP redirect for a path, decided as the redirector decides it before any
    probe: the catalog read (``--catalog``, or the service's URL), the files unchecked."""
    try:
        route = Routes(config).match(clean(args.name), args.host)
    except PathError as e:
        print(f"{args.name}: {e} (the redirector answers 400)", file=sys.stderr)
        return None
    if route is None:
        print(f"{args.name}: no service's http_prefix covers this path (404)", file=sys.stderr)
        return None
    known = list(NOT_KNOWN)
    catalog = _catalog(args, route.service, known)
    try:
        item = downloads.asked(route, catalog, "")
    except downloads.NotListed:
        print(f"{args.name}: not in the catalog of service {route.service.name} (the "
              f"redirector answers 404)", file=sys.stderr)
        return None
    data = downloads.described(args.name, item, _rank(args, route.service, client, Want.URL),
                               str(args.client))
    data["known"] = known
    return data


def _catalog(args: argparse.Namespace, service: Service, known: list[str]) -> Catalog | None:
    """The service's catalog, from ``--catalog`` or its URL; what was read is said in
    ``known`` (a catalog that cannot be read leaves every file unlisted-unknown)."""
    if service.catalog is None:
        return None
    if args.no_fetch and not args.catalog:
        known.append(f"catalog: not fetched ({service.catalog.url}, --no-fetch): whether "
                     "the file is listed is not known (--catalog FILE)")
        return None
    where = str(args.catalog) if args.catalog else service.catalog.url
    try:
        if args.catalog:
            body = args.catalog.read_bytes()
        else:
            with urlopen(where, timeout=service.catalog.timeout) as response:
                body = response.read()
        catalog = parse_go(body)
    except (OSError, ValueError, CatalogError) as e:
        known.append(f"catalog: not read from {where} ({getattr(e, 'reason', e)}): "
                     "whether the file is listed is not known (--catalog FILE)")
        return None
    known.append(f"catalog: read from {where} ({len(catalog.files)} files)")
    return catalog


# ---------------------------------------------------------------- text


def render(data: dict[str, Any]) -> str:
    """The explanation as text, from its data (offline or from the running router)."""
    what = (f"GET {data['path']}" if "path" in data else f"{data['name']} {data['type']}")
    lines = [f"{what} for client {data['client_address']}",
             *(f"  known:   {k}" for k in data["known"]), *_header(data), ""]
    rows = [("rank", "target", "state", "admin", "file", "country", "km", "border", "wait ms",
             "wait km", "weight", "cost", "reason")]
    for c in data["candidates"]:
        rows.append((f"{c['rank'] or '-'}{'*' if c['chosen'] else ''}", c["id"], c["state"],
                     c["admin"], c.get("file") or "-", c["country"] or "-",
                     _num(c["distance_km"]), _num(c["border_km"]), _num(c["latency_ms"]),
                     _num(c["latency_km"]), str(c["weight"]), _num(c["cost"]),
                     ("excluded: " if c["excluded"] else "") + c["reason"]
                     + (f" [{c['rule']}]" if c["rule"] else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False))
                     + "  " + r[-1])
    return "\n".join([*lines, "", *_outcome(data)])


def _outcome(data: dict[str, Any]) -> list[str]:
    if "path" not in data:
        answer = " ".join(data["answer"]) or "(none: NODATA)"
        return [f"answer: {answer}  ttl {data['ttl']}"
                + ("  (degraded: all targets down)" if data["degraded"] else ""), data["dnssec"]]
    if data["location"] is None:
        return [f"{data['status']}: no mirror can serve this now" if data["status"] == 503
                else f"{data['status']}: every mirror that is up lacks this file"]
    return [f"302 Location: {data['location']}", *(f"    Link: {x}" for x in data["links"])]


def _header(data: dict[str, Any]) -> list[str]:
    """The client, the file, the service's settings."""
    c = data["client"]
    where = ", ".join(x for x in (c["city"], c["country"], c["continent"]) if x) \
        or "unknown place"
    point = f"{c['lat']:.2f}, {c['lon']:.2f}" if c["lat"] is not None else "no coordinates"
    lines = [f"  client:  {c['network']}  {where}  ({point})"
             + (f"  AS{c['asn']}" if c["asn"] is not None else "")]
    if c["rules"]:
        lines.append(f"  rules:   {'; '.join(c['rules'])}")
    if c.get("region"):
        lines.append(f"  region:  {c['region']} (health as that region's fleet nodes see it)")
    if data["default_location_used"]:
        lines.append("  GeoIP has no coordinates: measured from the service's default_location")
    if data.get("file"):
        f = data["file"]
        size = "size not listed" if f["size"] is None else f"{f['size']:,} bytes"
        lines.append(f"  file:    {f['name']}  {f['version'] or ''}  {size}  "
                     f"sha256 {f['sha256'] or '-'}")
    s = data["settings"]
    return [*lines, f"  service: {data['service']}  spread {s['spread']:g}  cross_border_km "
            f"{s['cross_border_km']:g}  anycast_km {s['anycast_km']:g}  km_per_ms "
            f"{s['km_per_ms']:g}  answers {s['answers']}  on_all_down {s['on_all_down']}"]


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"
