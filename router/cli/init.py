"""``mirror-router init``: a zone file for your own mirrors, that passes ``check``, with
comments saying what to change; ``init --print-unit`` prints the systemd unit for this
installation.

    mirror-router init --origin go.example.com --ns ns1.example.net \\
        --address 198.51.100.53 --mirror fra=https://fra.example.org/go/@DE \\
        --mirror 'tyo=https://tyo.example.org/go/@35.68,139.69' > zones/go.example.com.toml

A mirror is ``ID=URL@WHERE``: WHERE is ``LAT,LON``, ``anycast`` (a CDN), or a country
code, placed where that country's address space is, by the GeoIP database's networks
(``router/core/countries.txt``): put the mirror's own city there when you know it.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from router.cli import args as common
from router.core import values as v
from router.errors import RouterError

SHARE = "share/mirror-router"  # where the wheel puts the unit, the example zone, ...
CHECKOUT = Path(__file__).resolve().parents[2]  # a source checkout's root (or site-packages)
COUNTRIES = CHECKOUT / "router" / "core" / "countries.txt"


class InitError(RouterError):
    pass


@dataclass(frozen=True, slots=True)
class Mirror:
    id: str
    url: str
    where: str  # the TOML of its location (and country)
    note: str  # what the comment says of it


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="write a zone file for your own mirrors (or print "
                       "the systemd unit)")
    p.add_argument("--origin", metavar="NAME", help="the zone: the name users download from")
    p.add_argument("--ns", action="append", default=[], metavar="NAME",
                   help="a name server of the zone (repeat): the hosts that run mirror-router")
    p.add_argument("--address", action="append", default=[], type=ipaddress.ip_address,
                   metavar="IP", help="an address of the redirector's own name (repeat)")
    p.add_argument("--mirror", action="append", default=[], metavar="ID=URL@WHERE",
                   help="a mirror (repeat): WHERE is LAT,LON, a country code or anycast")
    p.add_argument("--hostmaster", default=None, metavar="EMAIL",
                   help="who runs the zone (default hostmaster@ORIGIN)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="write here (refused if it exists) instead of printing")
    p.add_argument("--print-unit", action="store_true",
                   help="print the systemd unit for this installation, and nothing else")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        text = unit() if args.print_unit else zone_text(args)
    except (InitError, v.Invalid) as e:
        print(f"init: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        with args.out.open("x") as f:
            f.write(text)
    except OSError as e:
        print(f"init: {args.out}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: check it with mirror-router check --zones {args.out}",
          file=sys.stderr)
    return 0


def unit() -> str:
    """The shipped unit, its paths made this installation's (the script, the README)."""
    found = [p for p in (Path(sys.prefix) / SHARE / "mirror-router.service",
                         CHECKOUT / "systemd" / "mirror-router.service")
             if p.is_file()]
    if not found:
        raise InitError(f"no mirror-router.service under {Path(sys.prefix) / SHARE}")
    text = found[0].read_text()
    script = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "mirror-router" \
        else Path(sys.executable).parent / "mirror-router"
    return text.replace("/opt/mirror-router/bin/mirror-router", str(script)).replace(
        "/opt/mirror-router/share/mirror-router", str(Path(sys.prefix) / SHARE))


def zone_text(args: argparse.Namespace) -> str:
    if not args.origin or not args.ns or not args.mirror:
        raise InitError("give --origin NAME, at least one --ns NAME and one "
                        "--mirror ID=URL@WHERE (or --print-unit)")
    origin = v.absolute_name(args.origin).rstrip(".")
    mirrors = [mirror(m) for m in args.mirror]
    ids = [m.id for m in mirrors]
    if len(set(ids)) != len(ids):
        raise InitError(f"two mirrors have one id: {', '.join(ids)}")
    return "".join([_head(origin, args), *_records(args.address),
                    _service(mirrors), *(_target(m) for m in mirrors)])


def mirror(spec: str) -> Mirror:
    """``ID=URL@WHERE``, checked."""
    found = re.fullmatch(r"([^=]+)=(.+)@([^@]+)", spec)
    if found is None:
        raise InitError(f"--mirror {spec!r}: give ID=URL@WHERE (WHERE: LAT,LON, a country "
                        "code or anycast)")
    tid, url, where = v.identifier(found[1]), v.base_url(found[2]), found[3].strip()
    if where.lower() == "anycast":
        return Mirror(tid, url, 'location = "anycast"', "behind an anycast CDN")
    if re.fullmatch(r"[A-Za-z]{2}", where):
        lat, lon = _country(where.upper())
        return Mirror(tid, url, f"location = {{ lat = {lat}, lon = {lon} }}   # CHANGE: the "
                      f"mirror's city (this is where {where.upper()}'s address space is)\n"
                      f'country = "{where.upper()}"', f"in {where.upper()}")
    try:
        lat, lon = (float(x) for x in where.split(","))
        v.number(-90, 90)(lat), v.number(-180, 180)(lon)
    except (ValueError, v.Invalid):
        raise InitError(f"--mirror {spec!r}: WHERE {where!r} is not LAT,LON, a country "
                        "code or anycast") from None
    return Mirror(tid, url, f"location = {{ lat = {lat:g}, lon = {lon:g} }}",
                  f"at {lat:g}, {lon:g}")


def _country(code: str) -> tuple[float, float]:
    for line in COUNTRIES.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == code:
            return float(parts[1]), float(parts[2])
    raise InitError(f"{code}: not a country code GeoIP knows (give LAT,LON)")


def _head(origin: str, args: argparse.Namespace) -> str:
    ns = ", ".join(f'"{v.absolute_name(n).rstrip(".")}"' for n in args.ns)
    return f'''# {origin}: your own mirrors, written by `mirror-router init`. Check it with
# `mirror-router check --zones FILE`; every CHANGE line is a guess of init's.
#
# https://{origin}/<file> is answered by a 302 to the nearest healthy mirror's copy
# (service "downloads"). Delegate {origin} to the name servers below at your parent
# zone (NS records and, for names inside the zone, glue).

[zone]
origin = "{origin}"
nameservers = [{ns}]   # the hosts that run mirror-router
hostmaster = "{args.hostmaster or "hostmaster@" + origin}"
ttl = 300
'''


def _records(addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> list[str]:
    if not addresses:
        return ['''
# CHANGE: the redirector's own addresses (the hosts that run mirror-router), e.g.
# [[zone.records]]
# name = "@"
# type = "A"
# data = ["198.51.100.53"]
''']
    out: list[str] = []
    for kind, version in (("A", 4), ("AAAA", 6)):
        mine = [f'"{a}"' for a in addresses if a.version == version]
        if mine:
            note = "     # the redirector: the hosts that run mirror-router" if not out else ""
            out.append(f'''
[[zone.records]]{note}
name = "@"
type = "{kind}"
data = [{", ".join(mine)}]
''')
    return out


def _service(mirrors: list[Mirror]) -> str:
    return f'''
[services.downloads]
http_prefix = "/"              # GET /<file> -> 302 <the nearest mirror's url><file>
link_alternates = 2            # Link: rel=duplicate headers name the next mirrors
cross_border_km = 0            # CHANGE: e.g. 1500 to keep users inside their country
on_all_down = "all"            # every mirror down: answer with all of them all the same
# fallback = ["{mirrors[0].id}"]        # CHANGE: an origin that has every file, if you have one
health = {{ path = "/", interval = "10s", timeout = "3s", rise = 2, fall = 3 }}
# CHANGE: a small file every mirror has makes a better check than "/", e.g.
# health = {{ path = "SHA256SUMS", ... }} (joined to each mirror's url)
'''


def _target(m: Mirror) -> str:
    return f'''
[[services.downloads.targets]]
id = "{m.id}"                  # {m.note}
url = "{m.url}"
{m.where}
'''
