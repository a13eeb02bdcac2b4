"""``mirror-router check``: validate a folder of zone files, every problem on its line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from router.cli import access
from router.cli import args as common
from router.core.asn import AsnDb
from router.core.config import ConfigError, ServerConfig, Zone
from router.core.geo import GeoError
from router.core.zonefile import load_server
from router.dns import dnssec


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate a folder of zone files")
    common.zones(p)
    common.asn_db(p)
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="also check this server settings file (serve --config)")
    p.add_argument("--unit", type=Path, metavar="FILE",
                   help="read $CREDENTIALS_DIRECTORY/ID as this systemd unit's "
                        "LoadCredential=ID:PATH hands it to the service")
    p.add_argument("--as-user", metavar="USER",
                   help="warn of every file the config names that USER could not read "
                        "(a DynamicUser= unit's user: any name no account has)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.unit is None:
        return _checked(args, None)
    try:
        with access.staged(args.unit) as folder:
            return _checked(args, folder)
    except OSError as e:
        print(f"{args.unit}: cannot read the unit: {e.strerror}", file=sys.stderr)
        return 1


def _checked(args: argparse.Namespace, credentials: Path | None) -> int:
    if args.asn_db is not None:
        try:
            AsnDb(args.asn_db).close()
        except GeoError as e:
            print(e, file=sys.stderr)
            return 1
    config = common.load_or_report(args.zones, args.asn_db)
    settings = _settings(args.config)
    if config is None or settings is False:
        return 1
    for zone in config.zones:
        targets = sum(len(s.targets) for s in zone.services)
        print(f"{zone.source}: ok: {zone.origin} with {len(zone.records)} record(s), "
              f"{len(zone.services)} service(s), {targets} target(s)" + _signed(zone))
    if settings is not None:
        print(f"{args.config}: ok: server settings")
    if args.as_user:
        _readable(args.as_user, [config, settings], credentials)
    return 0


def _settings(path: Path | None) -> ServerConfig | bool | None:
    """The server settings file, checked (None: none given; False: its problems printed)."""
    if path is None:
        return None
    try:
        return load_server(path)
    except ConfigError as e:
        common.report(e)
        return False


def _readable(user: str, loaded: list[object], credentials: Path | None) -> None:
    """A warning for each file the config names that ``user`` could not read (a
    credential is the service's own copy: always readable)."""
    seen = set()
    for key, path in access.named_files(loaded):
        if path in seen or (credentials is not None and path.is_relative_to(credentials)):
            continue
        seen.add(path)
        why = access.unreadable(path, user)
        if why is not None:
            print(f"warning: {path} ({key.split('.', 1)[-1]}): not readable by {user}: {why}: "
                  "hand it to the service with LoadCredential= and name "
                  "$CREDENTIALS_DIRECTORY/ID, or let the user's group read it",
                  file=sys.stderr)


def _signed(zone: Zone) -> str:
    """How a signed zone is signed (its key loaded: ``load_or_report`` checked it)."""
    if not zone.signed:
        return ", unsigned"
    now = time.time()
    keys = dnssec.zone_keys(zone)
    return ", signed (" + "; ".join(f"{k.summary}: {dnssec.state(k, now, zone.ttl)}"
                                    for k in keys) + ")"

