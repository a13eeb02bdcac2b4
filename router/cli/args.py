"""What several subcommands share: their common options, argument types, and how a
config problem is printed (one per line, as ``check`` prints them)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from router import log
from router.core import regions, values
from router.core.asn import AsnDb
from router.core.audience import Placer, Rules, asn_problems
from router.core.config import Config, ConfigError
from router.core.geo import Locator
from router.core.ip import HostPort, IPNetwork
from router.core.regions import Region
from router.core.zonefile import load
from router.dns import dnssec

Subparsers = argparse._SubParsersAction


def zones(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zones", type=Path, default=Path("zones"), metavar="DIR",
                   help="folder of zone files, or one file (default ./zones)")


def geoip(p: argparse.ArgumentParser) -> None:
    p.add_argument("--geoip", type=Path, metavar="FILE",
                   help="MaxMind City database (default: the embedded GeoLite2 City)")


def asn_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--asn-db", type=Path, metavar="FILE",
                   help="ASN database (GeoLite2-ASN or DB-IP ASN Lite) for only_asns, asns "
                        "and routes by AS")


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


def region(text: str) -> Region:
    """A continent code, or ``NAME:LAT:LON``."""
    name, *place = text.split(":")
    try:
        if not place:
            return regions.region(name)
        if len(place) != 2:
            raise values.Invalid(f"{text!r}: give a continent code or NAME:LAT:LON")
        return regions.region({"name": name, "lat": _float(place[0]), "lon": _float(place[1])})
    except values.Invalid as e:
        raise argparse.ArgumentTypeError(e.reason) from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise values.Invalid(f"{text!r} is not a number") from None


def fleet_args(p: argparse.ArgumentParser, required: bool = False,
               defaults: bool = True) -> None:
    """``--fleet URL`` (and the fleet's ``--fleet-name``) for the commands that read it
    (``defaults=False``: on an action's parser, which must not overwrite its parent's)."""
    p.add_argument("--fleet", type=store_url, metavar="URL", required=required,
                   default=None if defaults else argparse.SUPPRESS,
                   help="the fleet's store: redis://[:PASSWORD@]HOST[:PORT][/DB], "
                        "rediss:// (TLS) or unix:///PATH")
    p.add_argument("--fleet-name", type=identifier, metavar="NAME",
                   default="mirror-router" if defaults else argparse.SUPPRESS,
                   help="the fleet's name, its key prefix in the store (default "
                        "mirror-router)")


def report(e: ConfigError) -> None:
    for problem in e.problems:
        print(problem, file=sys.stderr)
    print(f"{len(e.problems)} problem(s) found", file=sys.stderr)


def load_or_report(folder: Path, asn_db: Path | None = None) -> Config | None:
    """The zones, checked as ``serve`` checks them (``asn_db``: whether rules by AS have
    a database to read), or None with every problem printed."""
    try:
        config = load(folder)
        dnssec.check(config)  # every signed zone's key loads
        if asn_db is None and (problems := asn_problems(config)):
            raise ConfigError(problems)
        return config
    except ConfigError as e:
        report(e)
        return None


def placer(args: argparse.Namespace, config: Config, narrow: bool = True) -> Placer:
    """Where clients are and what rules they match, as ``serve`` finds it: ``--geoip``
    (or the embedded database), the config's rules and ``--asn-db``; ``narrow`` as the
    DNS face places them, else as the redirector does (``Placer``). Raises GeoError."""
    asn = AsnDb(args.asn_db) if args.asn_db is not None else None
    return Placer(Locator(args.geoip), Rules(config, asn), asn, narrow)
