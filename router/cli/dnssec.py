"""``mirror-router dnssec``: make a zone's signing keys, roll them, and print what the
parent needs.

    mirror-router dnssec keygen --zone go.example.com --out FILE [--algorithm ALG]
                                [--publish TIME --activate TIME --retire TIME --remove TIME]
    mirror-router dnssec ds --zones DIR
    mirror-router dnssec status --zones DIR [--zone NAME]
    mirror-router dnssec rollover --zones DIR --zone NAME [--algorithm ALG]
                                  [--parent-ttl 1d] [--parent-delay 1d] [--margin 1h]

``keygen`` writes a combined signing key (the PEM private key, its metadata and its
timing, mode 0600) and prints the DS record to give the parent zone. Point the zone at it
with ``[zone] dnssec_key = "FILE"``, or ``dnssec_keys = ["FILE", ...]`` or a folder of
``*.key`` files (relative to the zone file). Every node of a deployment serves with the
same key files. ``ds`` prints the DS and DNSKEY of every signed zone's keys; ``status``
each key's state and the next event; ``rollover`` plans a key rollover with safe times
(``router.dns.dnssec.plan``), writes the next key and the old key's retirement, and
prints each step and what to do at the parent. TIME: ``2026-12-08T02:00:00Z`` (UTC),
``now`` or ``+30d``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from router.cli import args as common
from router.core import values
from router.core.config import Zone
from router.core.values import Invalid, absolute_name
from router.dns import dnssec
from router.watch.files import write_whole


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dnssec", help="make and roll a zone's DNSSEC keys; print its DS")
    actions = p.add_subparsers(required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="write a new combined signing key (CSK)")
    keygen.add_argument("--zone", required=True, metavar="NAME", help="the zone it signs")
    keygen.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="the key file to write (refused if it exists)")
    _algorithm(keygen, "ecdsap256sha256 (13, the default) or ed25519 (15)")
    for event, meaning in (("publish", "enters the DNSKEY RRset"), ("activate", "signs"),
                           ("retire", "stops signing"), ("remove", "leaves the DNSKEY RRset")):
        keygen.add_argument(f"--{event}", metavar="TIME",
                            help=f"when the key {meaning} (default: "
                                 f"{'always' if event in ('publish', 'activate') else 'never'})")
    keygen.set_defaults(func=_keygen)
    ds = actions.add_parser("ds", help="print the DS (and DNSKEY) of every signed zone")
    common.zones(ds)
    ds.set_defaults(func=_ds)
    status = actions.add_parser("status", help="each key's state, and the next key event")
    common.zones(status)
    status.add_argument("--zone", metavar="NAME", help="only this zone")
    status.set_defaults(func=_status)
    roll = actions.add_parser("rollover", help="plan a key rollover; write the next key")
    common.zones(roll)
    roll.add_argument("--zone", required=True, metavar="NAME", help="the zone to roll")
    _algorithm(roll, "the new key's (default: the current one's; another one is an "
                     "algorithm rollover)", None)
    for option, default, meaning in (
            ("--parent-ttl", "1d", "the TTL of the DS records at the parent"),
            ("--parent-delay", "1d", "how long the parent may take to replace the DS"),
            ("--margin", "1h", "added at each wait: for every node to read the new key "
                               "file, and for clocks to agree")):
        roll.add_argument(option, type=_duration, default=_duration(default), metavar="TIME",
                          help=f"{meaning} (default {default})")
    roll.add_argument("--out", type=Path, metavar="FILE",
                      help="the new key file (default: in the zone's key folder)")
    roll.set_defaults(func=_rollover)


def _algorithm(p: argparse.ArgumentParser, meaning: str,
               default: str | None = "ecdsap256sha256") -> None:
    p.add_argument("--algorithm", choices=list(dnssec.ALGORITHMS), default=default,
                   help=meaning)


def _duration(text: str) -> float:
    try:
        return values.parse_duration(text)
    except Invalid as e:
        raise argparse.ArgumentTypeError(e.reason) from None


def _keygen(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        zone = absolute_name(args.zone)
        timing = dnssec.Timing(**{e: values.moment(getattr(args, e), now)
                                  for e in dnssec.EVENTS if getattr(args, e) is not None})
    except Invalid as e:
        print(f"mirror-router dnssec keygen: {e.reason}", file=sys.stderr)
        return 1
    if (problem := timing.problem()) is not None:
        print(f"mirror-router dnssec keygen: {problem}", file=sys.stderr)
        return 1
    key = _write_key(args.out, dnssec.generate(zone, args.algorithm, now, timing), zone)
    if key is None:
        return 1
    print(f"; give the parent of {zone} this DS record:")
    print(dnssec.ds_text(key))
    print(f"; and set [zone] dnssec_key = \"{args.out.resolve()}\" in the zone file")
    print("; (a relative path is read from the zone file's folder)")
    return 0


def _write_key(path: Path, text: str, zone: str) -> dnssec.Key | None:
    """Write a new key file (mode 0600, never over an existing one: a lost key cannot be
    made again); the key, or None with the reason printed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        print(f"{path}: {e.strerror or e}", file=sys.stderr)
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    key = dnssec.load(path, zone)
    print(f"; wrote {path} (mode 0600): {key.name}, key tag {key.tag}")
    return key


Keyed = list[tuple[Zone, tuple[dnssec.Key, ...]]]


def _signed(args: argparse.Namespace) -> Keyed | None:
    """The signed zones of ``--zones`` (only ``--zone``'s, if given) with their keys, or
    None with the reason printed."""
    config = common.load_or_report(args.zones)
    if config is None:
        return None
    wanted = getattr(args, "zone", None)
    signed = [(z, dnssec.zone_keys(z)) for z in config.zones if z.signed and (
        wanted is None or z.origin == values.fqdn(wanted))]
    if not signed:
        print(f"no signed zone {wanted or ''} in {args.zones}".replace("  ", " "),
              file=sys.stderr)
        return None
    return signed


def _ds(args: argparse.Namespace) -> int:
    zones, now = _signed(args), time.time()
    if zones is None:
        return 1
    for zone, keys in zones:
        wanted = dnssec.phase(keys, now, zone.ttl).cds
        for key in keys:
            asked = "the parent's DS now" if key in wanted else \
                f"not for the parent now ({dnssec.state(key, now, zone.ttl)})"
            print(f"; {zone.origin} signed with {key.summary}: {asked}")
            print(dnssec.ds_text(key))
            print(dnssec.presentation(key))
    return 0


def _status(args: argparse.Namespace) -> int:
    zones, now = _signed(args), time.time()
    if zones is None:
        return 1
    for zone, keys in zones:
        print(f"{zone.origin} (DNSKEY TTL {zone.ttl} s, longest TTL {zone.max_ttl} s):")
        for key in keys:
            events = ", ".join(f"{e} {values.stamp(t)}" for e, t in
                               sorted(dnssec.key_events(key, zone.ttl).items(),
                                      key=lambda i: i[1]))
            print(f"  key {key.tag} {key.name} {dnssec.state(key, now, zone.ttl)}"
                  f" ({key.path}){': ' + events if events else ''}")
        when, event, coming = dnssec.next_event(keys, now, zone.ttl)
        print("  next: none planned" if coming is None else
              f"  next: key {coming.tag} {event} at {values.stamp(when)} "
              f"(in {_ago(when - now)})")
        cds = dnssec.phase(keys, now, zone.ttl).cds
        print("  the parent's DS should be: " + (", ".join(
            f"key {k.tag}" for k in cds) or "(unchanged: no key is ready to be named)"))
    return 0


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _rollover(args: argparse.Namespace) -> int:
    zones = _signed(args)
    if zones is None:
        return 1
    (zone, keys), now = zones[0], time.time()
    if dnssec.under_way(keys, now):
        print(f"{zone.origin}: a key event is still to come (see mirror-router dnssec "
              "status): one rollover at a time", file=sys.stderr)
        return 1
    old = dnssec.phase(keys, now, zone.ttl).signing[0]
    algorithm = args.algorithm or old.name
    out = args.out or (zone.dnssec_folder / f"{zone.origin.rstrip('.')}.{int(now)}.key"
                       if zone.dnssec_folder is not None else None)
    if out is None:
        print(f"{zone.origin}: its keys are a list of files: give --out FILE, and add it to "
              "dnssec_keys (or name a folder there)", file=sys.stderr)
        return 1
    p = dnssec.plan(old, dnssec.ALGORITHMS[algorithm], now, ttl=zone.ttl,
                    max_ttl=zone.max_ttl, parent_ttl=args.parent_ttl,
                    parent_delay=args.parent_delay, margin=args.margin)
    new = _write_key(out, dnssec.generate(zone.origin, algorithm, now, p.new), zone.origin)
    if new is None:
        return 1
    write_whole(old.path, dnssec.retimed(old.path.read_text(encoding="utf-8"), p.old))
    print(f"; retimed {old.path}: key {old.tag} retires and is removed as planned below")
    if zone.dnssec_folder is None:
        print(f"; add {out} to dnssec_keys in {zone.source} before "
              f"{values.stamp(p.steps[0].at)}, then reload")
    print(f"; rollover of {zone.origin}: key {old.tag} ({old.name}) -> key {new.tag} "
          f"({new.name})")
    for step in p.steps:
        print(f"{values.stamp(step.at)}  {step.what}")
    print(f"; the new DS for the parent:\n{dnssec.ds_text(new)}")
    return 0
