"""``mirror-router serve``: answer DNS and HTTP for the zones (``router.serve``)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from router.cli import args as common
from router.core.config import ConfigError, FleetConfig, Problem, ServerConfig
from router.core.zonefile import load_server
from router.dns.cache import DEFAULT_SIZE
from router.dns.cookies import new_secret
from router.dns.dnstap import Destination
from router.serve import server, supervisor
from router.serve.connections import HEADER_BUDGET
from router.serve.settings import BACKLOG, KEEPALIVE, RCVBUF, TLS_HANDSHAKE_TIMEOUT, Settings
from router.watch import statefile


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="answer DNS and HTTP for the zones")
    common.zones(p)
    _listen_args(p)
    common.geoip(p)
    common.asn_db(p)
    p.add_argument("--no-probe", action="store_true",
                   help="contact nothing: treat every target as healthy")
    _dns_args(p)
    _http_args(p)
    p.add_argument("--state", type=Path, default=statefile.default_path(),
                   metavar="FILE", help="operator overrides to watch (mirror-router "
                   "admin); default $STATE_DIRECTORY/state.toml under systemd, else none")
    common.ca_file(p)
    p.add_argument("--fleet", type=common.store_url, metavar="URL",
                   help="share health, overrides and file checks with the other nodes "
                        "through Redis or Valkey (redis://, rediss://, unix://; or [fleet] "
                        "in --config)")
    p.add_argument("--node", type=common.identifier, metavar="NAME",
                   help="this node's name in the fleet, unique (default: the host name)")
    p.add_argument("--region", type=common.region, metavar="REGION",
                   help="where this node looks from: a continent code (AF AS EU NA OC SA) or "
                        "NAME:LAT:LON; each region's nodes judge the mirrors for the clients "
                        "nearest them (default: [fleet] region, else one region for all)")
    common.logging(p)
    p.set_defaults(func=run)


def _listen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dns", action="append", type=common.host_port, metavar="HOST:PORT",
                   help="DNS listen address, UDP and TCP (repeatable; "
                        "default 127.0.0.1:5300)")
    p.add_argument("--http", action="append", type=common.host_port, metavar="HOST:PORT",
                   help="HTTP listen address (repeatable; default 127.0.0.1:8300)")
    p.add_argument("--workers", type=common.positive, default=1, metavar="N",
                   help="serve from N processes on SO_REUSEPORT sockets; health checks "
                        "still run once (default 1)")
    p.add_argument("--no-http", action="store_true", help="serve DNS only")
    p.add_argument("--https", action="append", type=common.host_port, metavar="HOST:PORT",
                   help="HTTPS listen address for the redirector (repeatable; needs tls_cert "
                        "and tls_key: --config, or --tls-cert and --tls-key)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE",
                   help="the HTTPS certificate chain, PEM (re-read on SIGHUP and when it "
                        "changes)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key, PEM")
    p.add_argument("--admin", action="append", type=common.host_port, metavar="HOST:PORT",
                   help="a private listener for /metrics, /status, /status.json, /healthz "
                        "and /readyz, which then leave the public HTTP listeners (repeatable)")


def _dns_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--edns-buffer", type=int, default=1232, metavar="BYTES",
                   help="largest UDP reply, whatever the client offers (default 1232)")
    p.add_argument("--tcp-idle", type=float, default=10.0, metavar="SECONDS",
                   help="close DNS TCP connections idle this long (default 10)")
    p.add_argument("--tcp-max", type=int, default=512, metavar="N",
                   help="most DNS TCP connections open at once (default 512)")
    p.add_argument("--tcp-per-client", type=common.positive, metavar="N",
                   help="most DNS TCP connections from one address (default: tcp-max / 8, "
                        "at least 4); when all are taken, the longest idle one is closed "
                        "for a new client")
    p.add_argument("--dns-cache", type=int, default=DEFAULT_SIZE, metavar="ENTRIES",
                   help="encoded DNS answers kept for reuse, least recently used "
                        f"dropped first (default {DEFAULT_SIZE}; 0: no cache)")
    p.add_argument("--nsid", metavar="TEXT",
                   help="this node's name, told to resolvers that ask (NSID, RFC 5001, and "
                        "TXT id.server / hostname.bind in class CH); default: told to none")
    p.add_argument("--rcvbuf", type=common.positive, default=RCVBUF, metavar="BYTES",
                   help=f"DNS UDP receive buffer to ask for (default {RCVBUF}: 4 MiB; the "
                        "kernel caps it at net.core.rmem_max, and the log says what it gave)")


def _http_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted-proxy", action="append", type=common.network, default=[],
                   metavar="CIDR", help="a proxy whose X-Forwarded-For/Forwarded is "
                   "believed (repeatable)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="server settings file with a [server] table (trusted_proxies, "
                        "access_log, tls_ca, tls_cert, tls_key, nsid)")
    p.add_argument("--keepalive", type=float, default=KEEPALIVE, metavar="SECONDS",
                   help=f"close HTTP keep-alive connections idle this long (default "
                        f"{KEEPALIVE:g}); a request's headers must arrive within it too")
    p.add_argument("--tls-handshake-timeout", type=float, default=TLS_HANDSHAKE_TIMEOUT,
                   metavar="SECONDS", help=f"close an HTTPS connection whose TLS handshake is "
                   f"not done this long after it was accepted (default "
                   f"{TLS_HANDSHAKE_TIMEOUT:g})")
    p.add_argument("--dnstap", type=_dnstap, metavar="unix:PATH|tcp:HOST:PORT",
                   help="send sampled DNS queries and answers there in dnstap (Frame "
                        "Streams); or dnstap in [server]")
    p.add_argument("--dnstap-sample", type=float, metavar="SHARE",
                   help="the share of answers sent to --dnstap (0 to 1; default 1, or "
                        "dnstap_sample in [server])")
    p.add_argument("--decision-log-sample", type=float, default=0.0, metavar="SHARE",
                   help="log this share of steered DNS answers (0 to 1; default 0): the "
                        "client network, the targets chosen and why (dns_decision)")
    p.add_argument("--header-budget", type=common.positive, default=HEADER_BUDGET >> 20,
                   metavar="MIB", help=f"unfinished HTTP request heads may hold this many MiB "
                   f"in all; past it the oldest are closed (default {HEADER_BUDGET >> 20})")
    p.add_argument("--http-max", type=common.positive, metavar="N",
                   help="open HTTP client connections at most; past it the longest-waiting "
                        "one is closed (default: the descriptor limit less a reserve for "
                        "checks and DNS over TCP)")
    p.add_argument("--backlog", type=common.positive, default=BACKLOG, metavar="N",
                   help=f"listen backlog of the TCP listeners (default {BACKLOG}; the kernel "
                        "caps it at net.core.somaxconn)")
    p.add_argument("--access-log", action="store_true",
                   help="one log line per HTTP request (off by default, for speed)")
    p.add_argument("--beacon", action="store_true",
                   help="take POST /report from clients (their failed downloads move their "
                        "own network off a mirror; off by default)")


def settings(args: argparse.Namespace, file: ServerConfig) -> Settings:
    """The command line and the server settings file, validated once."""
    return Settings(
        zones=args.zones,
        dns=tuple(args.dns or [("127.0.0.1", 5300)]),
        http=() if args.no_http else tuple(args.http or [("127.0.0.1", 8300)]),
        admin=tuple(args.admin or ()),
        https=tuple(args.https or ()),
        tls_cert=args.tls_cert or file.tls_cert,
        tls_key=args.tls_key or file.tls_key,
        geoip=args.geoip,
        asn_db=args.asn_db or file.asn_db,
        probe=not args.no_probe,
        edns_payload=max(512, min(args.edns_buffer, 65535)),
        tcp_idle=args.tcp_idle,
        tcp_max=args.tcp_max,
        tcp_per_client=args.tcp_per_client,
        rcvbuf=args.rcvbuf,
        dns_cache=max(0, args.dns_cache),
        trusted_proxies=(*file.trusted_proxies, *args.trusted_proxy),
        keepalive=max(0.0, args.keepalive),
        http_max=args.http_max,
        tls_handshake_timeout=max(0.1, args.tls_handshake_timeout),
        header_budget=args.header_budget << 20,
        decision_log_sample=min(1.0, max(0.0, args.decision_log_sample)),
        dnstap=args.dnstap or (_dnstap(file.dnstap) if file.dnstap else None),
        dnstap_sample=min(1.0, max(0.0, args.dnstap_sample if args.dnstap_sample is not None
                                   else file.dnstap_sample)),
        backlog=args.backlog,
        access_log=args.access_log or file.access_log,
        beacon=args.beacon or file.beacon,
        nsid=args.nsid or file.nsid,
        rrl=file.rrl,
        workers=max(1, args.workers),
        cookie_secret=file.cookie_secret or new_secret(),  # drawn once: every worker's
        cookie_secret_previous=file.cookie_secret_previous,
        state=args.state,
        ca_file=args.ca_file or file.tls_ca,
        fleet=fleet(args, file),
    )


def fleet(args: argparse.Namespace, file: ServerConfig) -> FleetConfig | None:
    """``--fleet`` and ``--node`` over the file's ``[fleet]``."""
    base = file.fleet
    if args.fleet is None and base is None:
        for given, what in ((args.node, "--node"), (args.region, "--region")):
            if given is not None:
                raise ConfigError([Problem(what, "", "needs --fleet URL (or [fleet] in "
                                           "--config): a node of which fleet?")])
        return None
    store = args.fleet or (base.store if base else "")
    config = replace(base, store=store) if base else FleetConfig(store=store)
    config = replace(config, node=args.node) if args.node else config
    return replace(config, region=args.region) if args.region else config


def run(args: argparse.Namespace) -> int:
    try:
        file = load_server(args.config) if args.config else ServerConfig()
        chosen = settings(args, file)
    except ConfigError as e:
        common.report(e)
        return 1
    if args.workers > 1:
        return supervisor.run(chosen, args.workers, args.log_format, args.log_level)
    return server.run(chosen)


def _dnstap(text: str) -> Destination:
    try:
        return Destination.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None

