"""``mirror-router check``: validate a folder of zone files, every problem on its line."""

from __future__ import annotations

import argparse
import sys
import time

from router.cli import args as common
from router.core.asn import AsnDb
from router.core.config import Zone
from router.core.geo import GeoError
from router.dns import dnssec


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate a folder of zone files")
    common.zones(p)
    common.asn_db(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.asn_db is not None:
        try:
            AsnDb(args.asn_db).close()
        except GeoError as e:
            print(e, file=sys.stderr)
            return 1
    config = common.load_or_report(args.zones, args.asn_db)
    if config is None:
        return 1
    for zone in config.zones:
        targets = sum(len(s.targets) for s in zone.services)
        print(f"{zone.source}: ok: {zone.origin} with {len(zone.records)} record(s), "
              f"{len(zone.services)} service(s), {targets} target(s)" + _signed(zone))
    return 0


def _signed(zone: Zone) -> str:
    """How a signed zone is signed (its key loaded: ``load_or_report`` checked it)."""
    if not zone.signed:
        return ", unsigned"
    now = time.time()
    keys = dnssec.zone_keys(zone)
    return ", signed (" + "; ".join(f"{k.summary}: {dnssec.state(k, now, zone.ttl)}"
                                    for k in keys) + ")"

