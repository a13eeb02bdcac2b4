"""``mirror-router admin``: read and change the operator's overrides in the state file.

    mirror-router admin [--state FILE] [--zones DIR | --any-id] set ID|SERVICE/ID STATE
                        [--from TIME --until TIME]
    mirror-router admin [--state FILE] show
    mirror-router admin --fleet URL [--fleet-name NAME] set ID|SERVICE/ID STATE
                        [--from TIME --until TIME]
    mirror-router admin --fleet URL [--fleet-name NAME] show

With ``--fleet`` the override is the whole fleet's: written to the store, every live node
applies it within a second (and keeps it across a restart while the store is away). A
node's own state file still wins for its own entries. A window in the fleet starts and
ends on the store's clock, the same moment on every node.

A running ``serve --state FILE`` picks the change up within a second. The file is
rewritten whole (a complete copy renamed over it), under a lock, and never when it holds
a mistake: ``admin`` then lists the problems and changes nothing. An id must name a target
of the zones (``--zones``, ``./zones`` by default), so that a typo is refused rather than
saved as an override that matches nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import sys
import time
from pathlib import Path

from router.cli import args as common
from router.core.config import ConfigError, FleetConfig
from router.core.fleet import field_selector
from router.core.overrides import Override, Window, changed, unknown
from router.core.values import Invalid, moment, selector, stamp
from router.core.zonefile import load
from router.watch import statefile
from router.watch.store import Link, StoreDown, read_all, set_override


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("admin", help="drain, take down or force up a target (state file)")
    _options(p, True)
    actions = p.add_subparsers(required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="set one target's override")
    _options(set_, False)  # options before or after the action, as users type them
    set_.add_argument("target", metavar="ID|SERVICE/ID")
    set_.add_argument("value", choices=[a.value for a in Override], metavar="STATE",
                      help="drain | down | up | auto (auto also drops its windows)")
    set_.add_argument("--from", dest="start", metavar="TIME",
                      help="only from TIME (2026-12-08T02:00Z, UTC; now; +2h): a window, "
                           "e.g. a scheduled maintenance's drain")
    set_.add_argument("--until", dest="end", metavar="TIME",
                      help="... until TIME (with --from: the window's end)")
    set_.set_defaults(func=_set)
    show = actions.add_parser("show", help="print the overrides in force in the file")
    _options(show, False)
    show.set_defaults(func=_show)


def _options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The options of ``admin``; on an action's parser without defaults, so that an
    option given before the action is not overwritten."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS
    p.add_argument("--state", type=Path, default=default(_default_state()), metavar="FILE",
                   help="the state file (default: $STATE_DIRECTORY/state.toml, as systemd's "
                        f"StateDirectory= gives it, else {DEFAULT}; now {_default_state()})")
    p.add_argument("--zones", type=Path, default=default(Path("zones")), metavar="DIR",
                   help="the zones the server serves: ids no target there has are refused "
                        "(default ./zones)")
    p.add_argument("--any-id", action="store_true", default=default(False),
                   help="accept ids the zones do not have (for a target not deployed yet)")
    common.fleet_args(p, defaults=defaults)


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
        window = _window(args, key, state)
    except Invalid as e:
        return _fail(e.reason)
    if args.fleet:
        return asyncio.run(_set_fleet(args, key, state, window))
    try:
        with statefile.locked(args.state):
            before, windows = statefile.read_state(args.state)
            if window is not None:
                statefile.write(args.state, before, (*windows, window))
            else:
                statefile.write(args.state, changed(before, key, state), tuple(
                    w for w in windows if not (state is Override.AUTO and w.selector == key)))
    except ConfigError as e:
        return _fail("\n".join(str(p) for p in e.problems) + "\nnot changed: fix the file first")
    except OSError as e:
        return _fail(f"{args.state}: {e}")
    print(f"{key}: {state} from {stamp(window.start)} until {stamp(window.end)} in "
          f"{args.state}" if window is not None else
          f"{key}: {state} (was {before.get(key, Override.AUTO)}) in {args.state}")
    return 0


def _window(args: argparse.Namespace, key: str, state: Override) -> Window | None:
    """``--from``/``--until`` as a window (None: neither given)."""
    if args.start is None and args.end is None:
        return None
    if args.start is None or args.end is None:
        raise Invalid("a window needs both --from and --until")
    now = time.time()
    start, end = moment(args.start, now), moment(args.end, now)
    if state is Override.AUTO:
        raise Invalid("a window sets drain, down or up (auto is what holds outside it)")
    if end <= max(start, now):
        raise Invalid(f"--until {stamp(end)} is not after --from {stamp(start)} and now")
    return Window(key, state, start, end)


def _link(args: argparse.Namespace) -> Link:
    return Link(FleetConfig(store=args.fleet, name=args.fleet_name, node="admin"))


async def _set_fleet(args: argparse.Namespace, key: str, state: Override,
                     window: Window | None) -> int:
    link = _link(args)
    try:
        before = (await read_all(link)).overrides.get(key)
        await set_override(link, key, state, f"{getpass.getuser()}@{socket.gethostname()}",
                           window)
    except StoreDown as e:
        return _fail(f"{link.where}: the store did not answer ({e}); nothing changed")
    finally:
        await link.close()
    where = f"for fleet {args.fleet_name} at {link.where}"
    if window is not None:
        print(f"{key}: {state} from {stamp(window.start)} until {stamp(window.end)} {where}")
        return 0
    was = before.state if before else Override.AUTO
    print(f"{key}: {state} (was {was}) {where}")
    return 0


async def _show_fleet(args: argparse.Namespace) -> int:
    link = _link(args)
    try:
        reading = await read_all(link)
    except StoreDown as e:
        return _fail(f"{link.where}: the store did not answer ({e})")
    finally:
        await link.close()
    now = reading.now
    records = {k: r for k, r in reading.overrides.items() if r.end is None or r.end > now}
    if not records:
        print(f"no overrides in fleet {args.fleet_name}: health checks decide everywhere")
    for key, record in sorted(records.items(), key=lambda kv: (kv[1].start or 0.0, kv[0])):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.at))
        window = "" if record.start is None or record.end is None else \
            f"\tfrom {stamp(record.start)} until {stamp(record.end)} " \
            f"({'now' if record.start <= now else 'coming'})"
        print(f"{field_selector(key)}\t{record.state}{window}\tby {record.by}\tat {when} UTC")
    for where, reason in reading.bad:
        print(f"ignored: {where}: {reason}", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.fleet:
        return asyncio.run(_show_fleet(args))
    if not args.state.exists():
        print(f"no state file at {args.state.absolute()} (so no overrides: health checks "
              "decide everywhere); admin set makes it")
        return 0
    try:
        overrides, windows = statefile.read_state(args.state)
    except ConfigError as e:
        return _fail("\n".join(str(p) for p in e.problems))
    now = time.time()
    windows = tuple(w for w in windows if w.end > now)
    if not overrides and not windows:
        print(f"no overrides in {args.state}: health checks decide everywhere")
    for key, state in sorted(overrides.items()):
        print(f"{key}\t{state}")
    for w in sorted(windows, key=lambda w: w.start):
        when = "now" if w.holds(now) else "coming"
        print(f"{w.selector}\t{w.state}\tfrom {stamp(w.start)} until {stamp(w.end)} ({when})")
    return 0
