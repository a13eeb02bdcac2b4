"""The ``mirror-router`` command: serve, check, explain, admin, probe."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from router import __version__, log
from router.cli import admin
from router.cli import probe as probetable
from router.core.config import Config, ConfigError, ServerConfig, Service, load, load_server
from router.core.geo import GeoError, Location, Locator
from router.core.health import Status
from router.core.ip import IPNetwork
from router.core.overrides import lookup
from router.core.steering import Decision, Want, describe, rank
from router.dns.cache import DEFAULT_SIZE
from router.http.routes import PathError, Routes, clean, describe_redirect, redirect_for
from router.watch import statefile


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.configure(getattr(args, "log_format", "console"), getattr(args, "log_level", "info"))
    return int(args.func(args))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mirror-router", description=__doc__)
    p.add_argument("--version", action="version", version=f"mirror-router {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="answer DNS and HTTP for the zones")
    _zones_arg(serve)
    serve.add_argument("--dns", action="append", type=host_port, metavar="HOST:PORT",
                       help="DNS listen address, UDP and TCP (repeatable; "
                            "default 127.0.0.1:5300)")
    serve.add_argument("--http", action="append", type=host_port, metavar="HOST:PORT",
                       help="HTTP listen address (repeatable; default 127.0.0.1:8300)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="serve from N processes on SO_REUSEPORT sockets; health checks "
                            "still run once (default 1)")
    serve.add_argument("--no-http", action="store_true", help="serve DNS only")
    _geoip_arg(serve)
    serve.add_argument("--no-probe", action="store_true",
                       help="contact nothing: treat every target as healthy")
    serve.add_argument("--edns-buffer", type=int, default=1232, metavar="BYTES",
                       help="largest UDP reply, whatever the client offers (default 1232)")
    serve.add_argument("--tcp-idle", type=float, default=10.0, metavar="SECONDS",
                       help="close DNS TCP connections idle this long (default 10)")
    serve.add_argument("--tcp-max", type=int, default=512, metavar="N",
                       help="most DNS TCP connections open at once (default 512)")
    serve.add_argument("--dns-cache", type=int, default=DEFAULT_SIZE, metavar="ENTRIES",
                       help="encoded DNS answers kept for reuse, least recently used "
                            f"dropped first (default {DEFAULT_SIZE}; 0: no cache)")
    serve.add_argument("--rcvbuf", type=int, metavar="BYTES",
                       help="UDP socket receive buffer (default: the kernel's)")
    serve.add_argument("--trusted-proxy", action="append", type=_network, default=[],
                       metavar="CIDR", help="a proxy whose X-Forwarded-For/Forwarded is "
                       "believed (repeatable)")
    serve.add_argument("--config", type=Path, metavar="FILE",
                       help="server settings file with a [server] table (trusted_proxies, "
                            "access_log)")
    serve.add_argument("--access-log", action="store_true",
                       help="one log line per HTTP request (off by default, for speed)")
    serve.add_argument("--state", type=Path, default=statefile.default_path(),
                       metavar="FILE", help="operator overrides to watch (mirror-router "
                       "admin); default $STATE_DIRECTORY/state.toml under systemd, else none")
    _ca_arg(serve)
    _log_args(serve)
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check", help="validate a folder of zone files")
    _zones_arg(check)
    check.set_defaults(func=_check)

    explain = sub.add_parser("explain", help="show how a client's answer is decided")
    _zones_arg(explain)
    _geoip_arg(explain)
    explain.add_argument("--client", required=True, type=ipaddress.ip_address, metavar="IP",
                         help="the client (or ECS) address to decide for")
    explain.add_argument("--type", choices=["A", "AAAA"], default="A",
                         help="the DNS type asked (default A)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    explain.add_argument("--host", help="the HTTP Host, to choose among zones (paths only)")
    explain.add_argument("name", metavar="NAME",
                         help="a steered DNS name (go.example.com), a service name, or an "
                              "HTTP path (/go1.22.5.linux-amd64.tar.gz)")
    explain.add_argument("--state", type=Path, metavar="FILE",
                         help="apply the operator overrides in this state file")
    explain.set_defaults(func=_explain)
    admin.add_parser(sub)
    probetable.add_parser(sub)
    return p


def _ca_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca-file", type=Path, metavar="FILE",
                   help="extra CA certificates (PEM) to trust when checking HTTPS mirrors")


def _zones_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zones", type=Path, default=Path("zones"), metavar="DIR",
                   help="folder of zone files, or one file (default ./zones)")


def _geoip_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--geoip", type=Path, metavar="FILE",
                   help="MaxMind City database (default: the embedded GeoLite2 City)")


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=log.FORMATS, default="console")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")


def host_port(text: str) -> tuple[str, int]:
    """``127.0.0.1:5300``, ``[::1]:5300`` or ``:5300`` (all IPv4 addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IP address") from None
    return host, int(port)


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP network (CIDR)") from None


def _report(e: ConfigError) -> None:
    for problem in e.problems:
        print(problem, file=sys.stderr)
    print(f"{len(e.problems)} problem(s) found", file=sys.stderr)


def _load_or_report(zones: Path) -> Config | None:
    try:
        return load(zones)
    except ConfigError as e:
        _report(e)
        return None


def _serve(args: argparse.Namespace) -> int:
    from router.serve.server import run
    from router.serve.settings import Settings

    try:
        server = load_server(args.config) if args.config else ServerConfig()
    except ConfigError as e:
        _report(e)
        return 1
    settings = Settings(
        zones=args.zones,
        dns=tuple(args.dns or [("127.0.0.1", 5300)]),
        http=() if args.no_http else tuple(args.http or [("127.0.0.1", 8300)]),
        geoip=args.geoip,
        probe=not args.no_probe,
        edns_payload=max(512, min(args.edns_buffer, 65535)),
        tcp_idle=args.tcp_idle,
        tcp_max=args.tcp_max,
        rcvbuf=args.rcvbuf,
        dns_cache=max(0, args.dns_cache),
        trusted_proxies=(*server.trusted_proxies, *args.trusted_proxy),
        access_log=args.access_log or server.access_log,
        state=args.state,
        ca_file=args.ca_file or server.tls_ca,
    )
    if args.workers > 1:
        from router.serve import supervisor as workers

        return workers.run(settings, args.workers, args.log_format, args.log_level)
    return run(settings)


def _check(args: argparse.Namespace) -> int:
    config = _load_or_report(args.zones)
    if config is None:
        return 1
    for zone in config.zones:
        targets = sum(len(s.targets) for s in zone.services)
        print(f"{zone.source}: ok: {zone.origin} with {len(zone.records)} record(s), "
              f"{len(zone.services)} service(s), {targets} target(s)")
    return 0


def _explain(args: argparse.Namespace) -> int:
    config = _load_or_report(args.zones)
    if config is None:
        return 1
    try:
        args.overrides = statefile.read(args.state) if args.state else {}
    except ConfigError as e:
        _report(e)
        return 1
    try:
        locator = Locator(args.geoip)
    except GeoError as e:
        print(e, file=sys.stderr)
        return 1
    client = locator.locate(args.client)
    if args.name.startswith("/"):
        return _explain_path(args, config, client)
    service = config.service_for_name(args.name) or config.service(args.name)
    if service is None:
        print(f"{args.name}: not a steered name or a service in {args.zones}", file=sys.stderr)
        return 1
    want = Want.IPV6 if args.type == "AAAA" else Want.IPV4
    decision = _rank(args, service, client, want)
    if args.json:
        print(json.dumps({"name": args.name, "type": args.type, "client_address": str(args.client),
                          **describe(decision), "answer": _answer(decision, want)}, indent=2))
    else:
        print(_explain_text(f"{args.name} {args.type}", args.client, decision))
        answer = " ".join(_answer(decision, want)) or "(none: NODATA)"
        print(f"\nanswer: {answer}  ttl {decision.ttl}"
              + ("  (degraded: all targets down)" if decision.degraded else ""))
    return 0


def _not_probed(_target: str) -> Status:
    return Status.UNKNOWN


def _rank(args: argparse.Namespace, service: Service, client: Location, want: Want) -> Decision:
    """The decision as the server would make it before any probe, with --state applied."""
    overrides = args.overrides
    return rank(service, client, _not_probed, want,
                admin=lambda t: lookup(overrides, service.name, t))


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
    c = decision.client
    where = ", ".join(x for x in (c.city, c.country, c.continent) if x) or "unknown place"
    point = f"{c.point.lat:.2f}, {c.point.lon:.2f}" if c.point else "no coordinates"
    lines = [f"{what} for client {address}",
             f"  client:  {c.network}  {where}  ({point})"]
    if c.point is None and decision.origin is not None:
        lines.append("  GeoIP has no coordinates: measured from the service's default_location")
    s = decision.service
    lines += [f"  service: {s.name}  spread {s.spread:g}  cross_border_km {s.cross_border_km:g}  "
              f"anycast_km {s.anycast_km:g}  km_per_ms {s.km_per_ms:g}  answers {s.answers}  "
              f"on_all_down {s.on_all_down}",
              "  health:  not probed here: every target counts as up, no wait is charged"
              " (live figures: /status, or mirror-router probe --client)", ""]
    chosen = {t.id for t in decision.chosen()}
    rows = [("rank", "target", "state", "admin", "country", "km", "border", "wait ms",
             "wait km", "weight", "cost", "reason")]
    for position, cand in [*enumerate(decision.ranked, 1), *((None, x) for x in decision.excluded)]:
        t = cand.target
        rows.append((f"{position or '-'}{'*' if t.id in chosen else ''}", t.id,
                     cand.status.value, cand.admin.value, t.country or "-",
                     _num(cand.distance_km), _num(cand.border_km), _num(cand.latency_ms),
                     _num(cand.latency_km), str(t.weight), _num(cand.cost),
                     ("excluded: " if cand.excluded else "") + cand.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False))
                     + "  " + r[-1])
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"
