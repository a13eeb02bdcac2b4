"""``mirror-router dnssec``: make a zone's signing key, and print what the parent needs.

    mirror-router dnssec keygen --zone go.example.com --out FILE [--algorithm ALG]
    mirror-router dnssec ds --zones DIR

``keygen`` writes a combined signing key (the PEM private key and its metadata, mode
0600) and prints the DS record to give the parent zone, and the DNSKEY (a resolver's
trust anchor). Point the zone at it with ``[zone] dnssec_key = "FILE"`` (relative to the
zone file). Every node of a deployment serves with the same key file. ``ds`` prints the
DS and DNSKEY of every signed zone in the folder again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from router.cli import args as common
from router.core.values import Invalid, absolute_name
from router.dns import dnssec


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dnssec", help="make a zone's DNSSEC key; print its DS record")
    actions = p.add_subparsers(required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="write a new combined signing key (CSK)")
    keygen.add_argument("--zone", required=True, metavar="NAME", help="the zone it signs")
    keygen.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="the key file to write (refused if it exists)")
    keygen.add_argument("--algorithm", choices=list(dnssec.ALGORITHMS),
                        default="ecdsap256sha256",
                        help="ecdsap256sha256 (13, the default) or ed25519 (15)")
    keygen.set_defaults(func=_keygen)
    ds = actions.add_parser("ds", help="print the DS (and DNSKEY) of every signed zone")
    common.zones(ds)
    ds.set_defaults(func=_ds)


def _keygen(args: argparse.Namespace) -> int:
    try:
        zone = absolute_name(args.zone)
    except Invalid as e:
        print(f"--zone: {e.reason}", file=sys.stderr)
        return 1
    text = dnssec.generate(zone, args.algorithm)
    try:  # never over an existing key: a lost key cannot be made again
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        print(f"{args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    key = dnssec.load(args.out, zone)
    print(f"; wrote {args.out} (mode 0600): {key.name}, key tag {key.tag}")
    print(f"; give the parent of {zone} this DS record:")
    print(dnssec.ds_text(key))
    print(f"; and set [zone] dnssec_key = \"{args.out.resolve()}\" in the zone file")
    print("; (a relative path is read from the zone file's folder)")
    return 0


def _ds(args: argparse.Namespace) -> int:
    config = common.load_or_report(args.zones)
    if config is None:
        return 1
    signed = [z for z in config.zones if z.dnssec_key is not None]
    if not signed:
        print(f"no signed zone in {args.zones}", file=sys.stderr)
        return 1
    for zone in signed:
        key = dnssec.zone_key(zone)
        print(f"; {zone.origin} signed with {key.summary}")
        print(dnssec.ds_text(key))
        print(dnssec.presentation(key))
    return 0
