"""``mirror-router admin``: read and change the operator's overrides in the state file.

    mirror-router admin [--state FILE] set ID|SERVICE/ID drain|down|up|auto
    mirror-router admin [--state FILE] show

A running ``serve --state FILE`` picks the change up within a second. The file is
rewritten whole (a complete copy renamed over it), under a lock, and never when it holds
a mistake: ``admin`` then lists the problems and changes nothing.
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
                   help=f"the state file (default {_default_state()})")
    p.add_argument("--zones", type=Path, metavar="DIR",
                   help="refuse ids that no target in these zone files has")
    actions = p.add_subparsers(required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="set one target's override")
    set_.add_argument("target", metavar="ID|SERVICE/ID")
    set_.add_argument("value", choices=[a.value for a in Override], metavar="STATE",
                      help="drain | down | up | auto")
    set_.set_defaults(func=_set)
    show = actions.add_parser("show", help="print the overrides in force in the file")
    show.set_defaults(func=_show)


def _default_state() -> Path:
    """What ``serve`` under systemd (StateDirectory=mirror-router) reads by default."""
    return statefile.default_path(os.environ.get) or statefile.DEFAULT_DIR / "state.toml"


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _set(args: argparse.Namespace) -> int:
    try:
        key = selector(args.target)
    except Invalid as e:
        return _fail(e.reason)
    if args.zones is not None:
        try:
            strays = unknown([key], load(args.zones))
        except ConfigError as e:
            return _fail("\n".join(str(p) for p in e.problems))
        if strays:
            return _fail(f"{key}: no such target in {args.zones}")
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
