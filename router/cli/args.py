"""What several subcommands share: their common options, argument types, and how a
config problem is printed (one per line, as ``check`` prints them)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from router import log
from router.core import values
from router.core.config import Config, ConfigError
from router.core.ip import HostPort, IPNetwork
from router.core.zonefile import load
from router.dns import dnssec

Subparsers = argparse._SubParsersAction


def zones(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zones", type=Path, default=Path("zones"), metavar="DIR",
                   help="folder of zone files, or one file (default ./zones)")


def geoip(p: argparse.ArgumentParser) -> None:
    p.add_argument("--geoip", type=Path, metavar="FILE",
                   help="MaxMind City database (default: the embedded GeoLite2 City)")


def ca_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca-file", type=Path, metavar="FILE",
                   help="extra CA certificates (PEM) to trust when checking HTTPS mirrors")


def logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=log.FORMATS, default="console",
                   help="console (one readable line per event) or json (default console)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   default="info", help="the least important events logged (default info)")


def host_port(text: str) -> HostPort:
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


def positive(text: str) -> int:
    """A whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP network (CIDR)") from None


def store_url(text: str) -> str:
    """A Redis or Valkey URL (redis://, rediss://, unix://)."""
    try:
        return values.store_url(text)
    except values.Invalid as e:
        raise argparse.ArgumentTypeError(e.reason) from None


def identifier(text: str) -> str:
    """A node, service or target name."""
    try:
        return values.identifier(text)
    except values.Invalid as e:
        raise argparse.ArgumentTypeError(e.reason) from None


def fleet_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--fleet URL`` (and the fleet's ``--fleet-name``) for the commands that read it."""
    p.add_argument("--fleet", type=store_url, metavar="URL", required=required,
                   help="the fleet's store: redis://[:PASSWORD@]HOST[:PORT][/DB], "
                        "rediss:// (TLS) or unix:///PATH")
    p.add_argument("--fleet-name", type=identifier, default="mirror-router", metavar="NAME",
                   help="the fleet's name, its key prefix in the store (default "
                        "mirror-router)")


def report(e: ConfigError) -> None:
    for problem in e.problems:
        print(problem, file=sys.stderr)
    print(f"{len(e.problems)} problem(s) found", file=sys.stderr)


def load_or_report(folder: Path) -> Config | None:
    try:
        config = load(folder)
        dnssec.check(config)  # every signed zone's key loads
        return config
    except ConfigError as e:
        report(e)
        return None
