"""``mirror-router admin``: read and change the operator's overrides in the state file.

    mirror-router admin [--state FILE] [--zones DIR | --any-id] set ID|SERVICE/ID STATE
    mirror-router admin [--state FILE] show

A running ``serve --state FILE`` picks the change up within a second. The file is
rewritten whole (a complete copy renamed over it), under a lock, and never when it holds
a mistake: ``admin`` then lists the problems and changes nothing. An id must name a target
of the zones (``--zones``, ``./zones`` by default), so that a typo is refused rather than
saved as an override that matches nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from router.cli import args as common
from router.core.config import ConfigError
from router.core.overrides import Override, changed, unknown
from router.core.values import Invalid, selector
from router.core.zonefile import load
from router.watch import statefile


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("admin", help="drain, take down or force up a target (state file)")
    p.add_argument("--state", type=Path, default=_default_state(), metavar="FILE",
                   help="the state file (default: $STATE_DIRECTORY/state.toml, as systemd's "
                        f"StateDirectory= gives it, else {DEFAULT}; now {_default_state()})")
    p.add_argument("--zones", type=Path, default=Path("zones"), metavar="DIR",
                   help="the zones the server serves: ids no target there has are refused "
                        "(default ./zones)")
    p.add_argument("--any-id", action="store_true",
                   help="accept ids the zones do not have (for a target not deployed yet)")
    actions = p.add_subparsers(required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="set one target's override")
    set_.add_argument("target", metavar="ID|SERVICE/ID")
    set_.add_argument("value", choices=[a.value for a in Override], metavar="STATE",
                      help="drain | down | up | auto")
    set_.set_defaults(func=_set)
    show = actions.add_parser("show", help="print the overrides in force in the file")
    show.set_defaults(func=_show)


DEFAULT = statefile.DEFAULT_DIR / statefile.DEFAULT_NAME


def _default_state() -> Path:
    """What ``serve`` under systemd (StateDirectory=mirror-router) reads by default."""
    return statefile.default_path(os.environ.get) or DEFAULT


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _set(args: argparse.Namespace) -> int:
    try:
        key = selector(args.target)
    except Invalid as e:
        return _fail(e.reason)
    if not args.any_id:
        try:
            strays = unknown([key], load(args.zones))
        except ConfigError as e:
            return _fail("\n".join(str(p) for p in e.problems)
                         + "\n(--zones DIR names the zones the server serves)")
        if strays:
            return _fail(f"{key}: no such target in {args.zones} (--any-id accepts it)")
    state = Override(args.value)
    try:
        with statefile.locked(args.state):
            before = statefile.read(args.state)
            statefile.write(args.state, changed(before, key, state))
    except ConfigError as e:
        return _fail("\n".join(str(p) for p in e.problems) + "\nnot changed: fix the file first")
    except OSError as e:
        return _fail(f"{args.state}: {e}")
    print(f"{key}: {state} (was {before.get(key, Override.AUTO)}) in {args.state}")
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        overrides = statefile.read(args.state)
    except ConfigError as e:
        return _fail("\n".join(str(p) for p in e.problems))
    if not overrides:
        print(f"no overrides in {args.state}: health checks decide everywhere")
    for key, state in sorted(overrides.items()):
        print(f"{key}\t{state}")
    return 0
