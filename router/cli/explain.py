"""``mirror-router explain``: how a client's answer is decided, with every candidate's
figures, for a steered DNS name, a service, or an HTTP path (as the redirector decides)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from pathlib import Path

from router.cli import args as common
from router.core.audience import scope
from router.core.config import Config, ConfigError, Service, Zone
from router.core.geo import GeoError, Location
from router.core.health import Status
from router.core.overrides import lookup
from router.core.steering import Decision, Want, describe, rank
from router.dns import dnssec
from router.http.routes import PathError, Routes, clean, describe_redirect, redirect_for
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
    p.add_argument("--state", type=Path, metavar="FILE",
                   help="apply the operator overrides in this state file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = common.load_or_report(args.zones, args.asn_db)
    if config is None:
        return 1
    try:
        args.overrides = statefile.read(args.state) if args.state else {}
        placer = common.placer(args, config, narrow=not args.name.startswith("/"))
        client = placer.locate(args.client)
        args.rules = placer.rules
    except ConfigError as e:
        common.report(e)
        return 1
    except GeoError as e:
        print(e, file=sys.stderr)
        return 1
    if args.name.startswith("/"):
        return _explain_path(args, config, client)
    service = config.service_for_name(args.name) or config.service(args.name)
    if service is None:
        print(f"{args.name}: not a steered name or a service in {args.zones}", file=sys.stderr)
        return 1
    zone = next(z for z in config.zones if service in z.services)
    return _explain_name(args, service, client, _signing(zone))


def _signing(zone: Zone) -> str:
    """Whether DO queries get signed answers, and with which key."""
    if not zone.signed:
        return f"zone {zone.origin} is unsigned"
    phase = dnssec.phase(dnssec.zone_keys(zone), time.time(), zone.ttl)  # checked at load
    keys = "; ".join(k.summary for k in phase.signing)
    return f"zone {zone.origin} is signed: DO queries get RRSIGs ({keys})"


def _explain_name(args: argparse.Namespace, service: Service, client: Location,
                  signing: str) -> int:
    want = Want.IPV6 if args.type == "AAAA" else Want.IPV4
    decision = _rank(args, service, client, want)
    if args.json:
        print(json.dumps({"name": args.name, "type": args.type, "client_address": str(args.client),
                          **describe(decision), "answer": _answer(decision, want),
                          "dnssec": signing}, indent=2))
        return 0
    print(_explain_text(f"{args.name} {args.type}", args.client, decision))
    answer = " ".join(_answer(decision, want)) or "(none: NODATA)"
    print(f"\nanswer: {answer}  ttl {decision.ttl}"
          + ("  (degraded: all targets down)" if decision.degraded else ""))
    print(signing)
    return 0


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


def _explain_path(args: argparse.Namespace, config: Config, client: Location) -> int:
    """The HTTP redirect for a path, decided exactly as the redirector decides it."""
    try:
        route = Routes(config).match(clean(args.name), args.host)
    except PathError as e:
        print(f"{args.name}: {e} (the redirector answers 400)", file=sys.stderr)
        return 1
    if route is None:
        print(f"{args.name}: no service's http_prefix covers this path (404)", file=sys.stderr)
        return 1
    decision = _rank(args, route.service, client, Want.URL)
    if args.json:
        data = describe_redirect(args.name, route, decision)
        print(json.dumps({"client_address": str(args.client), **data}, indent=2))
        return 0
    found = redirect_for(route, decision)
    print(_explain_text(f"GET {args.name}", args.client, decision))
    print()
    print(f"302 Location: {found.location}" if found else "503: no mirror can serve this now")
    for link in found.links if found else ():
        print(f"    Link: {link}")
    return 0


def _answer(decision: Decision, want: Want) -> list[str]:
    version = 6 if want is Want.IPV6 else 4
    return [str(a) for t in decision.chosen() for a in t.addresses_of(version)]


def _explain_text(what: str, address: object, decision: Decision) -> str:
    lines = [f"{what} for client {address}", *_header(decision), ""]
    chosen = {t.id for t in decision.chosen()}
    rows = [("rank", "target", "state", "admin", "country", "km", "border", "wait ms",
             "wait km", "weight", "cost", "reason")]
    for position, cand in [*enumerate(decision.ranked, 1), *((None, x) for x in decision.excluded)]:
        t = cand.target
        rows.append((f"{position or '-'}{'*' if t.id in chosen else ''}", t.id,
                     cand.status.value, cand.admin.value, t.country or "-",
                     _num(cand.distance_km), _num(cand.border_km), _num(cand.latency_ms),
                     _num(cand.latency_km), str(t.weight), _num(cand.cost),
                     ("excluded: " if cand.excluded else "") + cand.reason
                     + (f" [{cand.rule}]" if cand.rule else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False))
                     + "  " + r[-1])
    return "\n".join(lines)


def _header(decision: Decision) -> list[str]:
    """The client, the service's settings and where health comes from."""
    c = decision.client
    where = ", ".join(x for x in (c.city, c.country, c.continent) if x) or "unknown place"
    point = f"{c.point.lat:.2f}, {c.point.lon:.2f}" if c.point else "no coordinates"
    lines = [f"  client:  {c.network}  {where}  ({point})"
             + (f"  AS{c.asn}" if c.asn is not None else "")]
    mine = sorted(r.basis for r in c.matched if r.service == decision.service.name)
    if mine:
        lines.append(f"  rules:   {'; '.join(mine)}")
    if c.point is None and decision.origin is not None:
        lines.append("  GeoIP has no coordinates: measured from the service's default_location")
    s = decision.service
    return [*lines,
            f"  service: {s.name}  spread {s.spread:g}  cross_border_km {s.cross_border_km:g}  "
            f"anycast_km {s.anycast_km:g}  km_per_ms {s.km_per_ms:g}  answers {s.answers}  "
            f"on_all_down {s.on_all_down}",
            "  health:  not probed here: every target counts as up, no wait is charged"
            " (live figures: /status, or mirror-router probe --client)"]


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"
