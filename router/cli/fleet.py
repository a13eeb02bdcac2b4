"""``mirror-router fleet status``: the fleet as its store holds it.

    mirror-router fleet status [--fleet URL | --config FILE] [--fleet-name NAME] [--json]

Prints the live nodes, and for each target its observers (rendezvous hashing over the
live nodes), what each observer saw, and the verdict every node derives from it (the same
rule as the nodes: ``router.core.fleet.agree``). Values that do not parse are listed, not
fatal. The exit status is 0 when the store answered, 1 when it did not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from router.cli import args as common
from router.core import fleet as f
from router.core.config import ConfigError, FleetConfig
from router.core.zonefile import load_server
from router.watch.store import Link, Reading, StoreDown, read_all


def add_parser(sub: common.Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fleet", help="see the fleet: live nodes, observations, verdicts")
    actions = p.add_subparsers(required=True, metavar="ACTION")
    status = actions.add_parser("status", help="live nodes and each target as every "
                                "observer sees it, with the verdict")
    common.fleet_args(status)
    status.add_argument("--config", type=Path, metavar="FILE",
                        help="take the store and the fleet's name from this server "
                             "settings file's [fleet] table")
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.set_defaults(func=_status)


def _config(args: argparse.Namespace) -> FleetConfig:
    if args.fleet:
        return FleetConfig(store=args.fleet, name=args.fleet_name, node="status")
    if args.config:
        found = load_server(args.config).fleet
        if found is not None:
            return found
    raise ConfigError([])


def _status(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as e:
        if e.problems:
            common.report(e)
        else:
            print("which fleet? give --fleet URL, or --config FILE with a [fleet] table",
                  file=sys.stderr)
        return 1
    return asyncio.run(_show(config, args.json))


async def _show(config: FleetConfig, as_json: bool) -> int:
    link = Link(config)
    try:
        reading = await read_all(link)
    except StoreDown as e:
        print(f"{link.where}: the store did not answer ({e})", file=sys.stderr)
        return 1
    finally:
        await link.close()
    doc = describe(reading, config.name, link.where)
    print(json.dumps(doc, indent=2) if as_json else render(doc))
    return 0


def describe(reading: Reading, name: str, where: str) -> dict[str, Any]:
    """The fleet's state as a document (``--json``): the nodes' own rules, applied to
    what the store holds (the observer count and quorum from a live node's heartbeat)."""
    live = tuple(sorted(reading.heartbeats))
    first = reading.heartbeats[live[0]] if live else None
    count, quorum = (first.observers, first.quorum) if first else (3, None)
    per_region = first.per_region if first else 2
    places = {n: b.region for n, b in reading.heartbeats.items()}
    targets = f.survey(reading.observations, sorted(reading.observations), live=live,
                       count=count, quorum=quorum, now=reading.now, places=places,
                       per_region=per_region)
    view = f.View(where, name, "", True, reading.now, None, 0.0, live, targets,
                  reading.overrides, places)
    return {**f.document(view, reading.now), "observers": count, "quorum": quorum,
            "observers_per_region": per_region,
            "heartbeats": {n: round(reading.now - b.at, 1)
                           for n, b in reading.heartbeats.items()},
            "ignored": [{"key": k, "error": e} for k, e in reading.bad]}


def render(doc: dict[str, Any]) -> str:
    regional = len(set(doc["regions"].values())) > 1
    each = f"{doc['observers_per_region']} observers per target per region" if regional \
        else f"{doc['observers']} observers per target"
    lines = [f"fleet {doc['fleet']} at {doc['store']}: {len(doc['nodes'])} live node(s), "
             f"{each}, quorum {doc['quorum'] or 'a majority'}",
             "nodes: " + (", ".join(f"{n} ({_region(doc, n)}{doc['heartbeats'][n]}s ago)"
                                    for n in doc["nodes"]) or "none")]
    for t in doc["targets"]:
        if not t["regions"]:
            lines.append(f"{t['service']}/{t['target']}: {_said(t['verdict'])}; observers "
                         f"{', '.join(t['observers']) or 'none'}")
        else:
            lines.append(f"{t['service']}/{t['target']}:")
            lines += [f"  from {r['region']}: {_said(r['verdict'])}; observers "
                      f"{', '.join(r['observers']) or 'none'}" for r in t["regions"]]
        for o in t["observations"]:
            stale = "" if o["counted"] else " (stale: not counted)"
            lines.append(f"    {o['node']}: {o['status']}, {o['latency_ms']} ms, "
                         f"{o['age']}s ago{stale}" + (f": {o['error']}" if o["error"] else ""))
    for key, o in doc["overrides"].items():
        lines.append(f"override {key}: {o['state']} by {o['by']}")
    lines += [f"window {w['target']}: {w['state']} from {w['from']} until {w['until']}"
              + (" (now)" if w["now"] else "") for w in doc.get("windows", [])]
    lines += [f"ignored: {i['key']}: {i['error']}" for i in doc["ignored"]]
    return "\n".join(lines)


def _region(doc: dict[str, Any], node: str) -> str:
    region = doc["regions"].get(node, "all")
    return "" if region == "all" else f"{region}, "


def _said(v: dict[str, Any] | None) -> str:
    if v is None:
        return "no verdict (too few fresh observations: nodes check it themselves)"
    return (f"{v['status']} ({v['down']} of {v['votes']} say down, {v['needed']} needed), "
            f"latency {v['latency_ms']} ms")
