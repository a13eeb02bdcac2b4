"""Every service and target at a glance, as plain data: what ``/status`` shows. Pure.

``overview()`` reads one health snapshot, the config and the counters, and says for each
target its state, the operator's override, the colour it gets on the map, its latency
figures, its last error, and the share of its service's answers it got since start.

Colours: green = passing and not overridden (or forced up while passing); amber = not
probed yet, drained, forced up while failing, or up but its last check failed; red =
down, by its health check or by the operator.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Mapping
from typing import Any

from router import __version__
from router.core.audience import target_rules
from router.core.availability import Ledger
from router.core.capacity import Pressure
from router.core.checks import per_address
from router.core.config import Service, Target
from router.core.fleet import document
from router.core.geo import Location
from router.core.health import (
    Effective,
    Health,
    Key,
    Snapshot,
    Status,
    address_id,
    effective,
)
from router.core.overrides import Override, listed
from router.core.runtime import Runtime, Signing
from router.core.speeds import Speeds
from router.core.stats import Stats
from router.core.values import stamp


def overview(runtime: Runtime, client: Location | None = None,
             address: str | None = None) -> dict[str, Any]:
    snap = runtime.board.snapshot
    state = runtime.state
    totals = runtime.totals()
    now = time.time()
    fleet = None if (view := runtime.fleet()) is None else document(view, now)
    return {
        "version": __version__,
        "now": now,
        "uptime_s": round(now - runtime.started, 1),
        "ready": runtime.ready,
        "probing": runtime.probing,
        "generation": snap.generation,
        "config": _config(runtime),
        "geoip": runtime.locator.facts(now),
        "asn_db": runtime.asn_db.facts(now) if runtime.asn_db is not None else None,
        "state_file": None if state is None else {
            "path": str(state.path), "ok": state.error is None, "error": state.error},
        # coming and current windows: the state file's, then the fleet's ("fleet": true)
        "windows": ([] if state is None else [
            {**w, "fleet": False} for w in listed(state.windows, now)])
        + ([] if fleet is None else [{**w, "fleet": True} for w in fleet["windows"]]),
        "client": _client(client, address, runtime),
        "fleet": fleet,
        "dnssec": [_signing(s, now) for s in runtime.signing()],
        "pid": os.getpid(),  # which process answered (--workers: each knows its own files)
        "services": [_service(s, snap, totals, runtime.ledger, runtime.speeds,
                              runtime.board.figures)
                     for s in runtime.config.services],
        # redirects and DNS answers decided (not those from the answer cache), by the
        # client's country: the live mix ``mirror-router simulate --traffic URL`` reads
        "countries": dict(totals.countries.most_common()),
    }


HIDDEN = "details on the admin listener (--admin) and in the log"


def public(data: dict[str, Any]) -> dict[str, Any]:
    """``overview()`` as the public listener shows it (no ``--admin``): what a user of the
    mirrors may see. No file paths (databases, state file, keys, reload problems), no
    store address, no PID; the operator's whole view is on the admin listener."""
    shown = {k: v for k, v in data.items() if k != "pid"}
    for db in ("geoip", "asn_db"):
        if shown.get(db):
            shown[db] = {k: v for k, v in shown[db].items() if not k.endswith("_file")}
    if shown.get("state_file"):
        ok = shown["state_file"]["ok"]
        shown["state_file"] = {"ok": ok, "error": None if ok else HIDDEN}
    last = shown["config"]["last_reload"]
    if last is not None:
        shown["config"] = {**shown["config"], "last_reload": {
            "ok": last["ok"], "at": last["at"], "problems": [
                f"{len(last['problems'])} problem(s): {HIDDEN}"]
            if last["problems"] else []}}
    if shown.get("fleet"):
        shown["fleet"] = {**shown["fleet"], "store": HIDDEN}
    shown["dnssec"] = [{**s, "keys": [{**k, "file": HIDDEN} for k in s["keys"]]}
                       for s in shown["dnssec"]]
    return shown


def _signing(s: Signing, now: float) -> dict[str, Any]:
    """A signed zone: its keys, their states and timing, the next key event, and the
    signatures made and reused."""
    keys = [{"file": k.file, "algorithm": k.algorithm, "key_tag": k.tag, "state": k.state,
             "key_age_s": round(now - k.created),
             "events": {e: stamp(t) for e, t in sorted(k.events.items(), key=lambda i: i[1])}}
            for k in s.keys]
    coming = None if s.next_event is None else {
        "at": stamp(s.next_event[0]), "in_s": round(s.next_event[0] - now),
        "event": s.next_event[1], "key_tag": s.next_event[2]}
    return {"zone": s.zone, "keys": keys, "next_event": coming, "signatures_made": s.made,
            "signatures_reused": s.reused}


def _config(runtime: Runtime) -> dict[str, Any]:
    """The config in force, and how the last reload went (None: none since start)."""
    last = runtime.last_reload
    return {"loaded_at": runtime.config_loaded, "last_reload": None if last is None else {
        "ok": last.ok, "at": last.at, "problems": list(last.problems)}}


def _client(client: Location | None, address: str | None, runtime: Runtime
            ) -> dict[str, Any] | None:
    if client is None:
        return None
    point = client.point
    asn = runtime.asn_db.number(ipaddress.ip_address(address)) \
        if runtime.asn_db is not None and address is not None else None
    return {"address": address, "network": str(client.network), "country": client.country,
            "city": client.city, "lat": point.lat if point else None,
            "lon": point.lon if point else None, "asn": asn,
            "rules": sorted(f"{r.service}: {r.basis}" for r in client.matched)}


def _service(service: Service, snap: Snapshot, stats: Stats, ledger: Ledger,
             speeds: Speeds, figures: Mapping[Key, Pressure]) -> dict[str, Any]:
    total = sum(stats.answers((service.name, t.id)) for t in service.targets)
    admin = snap.overrides(service.name)
    barred = ledger.barred(service.name)
    rows = [{**_target(service, t.id, snap.get(service.name, t.id), admin(t.id),
                       stats.answers((service.name, t.id)), total),
             "files": ledger.counts(service.name, t.id),
             "corrupt": t.id in barred,
             "corrupt_files": {name: {"expected_sha256": c.expected, "got_sha256": c.got,
                                      "at": c.at}
                               for name, c in ledger.corrupt(service.name, t.id).items()},
             "addresses": _addresses(service, t, snap),
             # what clients reported (the beacon): the median of their downloads' speeds
             "client_bytes_per_second": speeds.median(service.name, None, t.id),
             **_pressure(t, figures.get((service.name, t.id)))}
            for t in service.targets]
    for row in rows:
        if row["corrupt"]:
            row["colour"] = "red"
    return {"name": service.name, "zone": service.origin, "answers": total,
            "dns_names": list(service.dns_names), "http_prefix": service.http_prefix,
            "targets": rows}


def _target(service: Service, tid: str, h: Health, admin: Override, answers: int,
            total: int) -> dict[str, Any]:
    t = service.target(tid)
    assert t is not None
    return {
        "id": tid, "state": h.status.value, "admin": admin.value, "colour": colour(h, admin),
        "enabled": t.enabled, "country": t.country, "url": t.url,
        "health_url": t.health_url,
        "location": None if t.location is None else {"lat": t.location.lat,
                                                     "lon": t.location.lon},
        "ttfb_ms": _ms(h.ttfb_ewma), "wait_ms": _ms(h.wait_ewma), "latency_ms": h.latency_ms,
        "last_ok": h.last_ok, "last_failure": h.last_failure, "last_error": h.last_error,
        "checks": h.checks, "answers": answers, "rules": target_rules(t),
        "share": round(answers / total, 4) if total else 0.0,
    }


def _pressure(target: Target, p: Pressure | None) -> dict[str, Any]:
    """Its load against its capacity, and what it keeps (``core.capacity``)."""
    c, load = target.capacity, p.load if p is not None else None
    return {
        "capacity": None if c is None else {"mbps": c.mbps, "requests": c.requests,
                                            "load": c.load, "high": c.high, "low": c.low},
        "load": None if load is None else {
            "mbps": None if load.bytes_per_second is None
            else round(load.bytes_per_second * 8 / 1e6, 3),
            "requests": None if load.requests_per_second is None
            else round(load.requests_per_second, 3),
            "load": load.reported},
        "load_ratio": None if p is None or p.ratio is None else round(p.ratio, 4),
        "shed": 0.0 if p is None else round(p.shed, 4),
        "keep": 1.0 if p is None else p.keep,
        "ramping": None if p is None else p.ramp,
        "pressure": None if p is None or p.keep >= 1 else p.why(),
    }


def _addresses(service: Service, target: Target, snap: Snapshot) -> list[dict[str, Any]]:
    """Each address checked on its own (a DNS target's): its state and last error."""
    if not per_address(service, target):
        return []
    rows = []
    for a in target.addresses:
        h = snap.get(service.name, address_id(target.id, a))
        rows.append({"address": str(a), "state": h.status.value, "last_error": h.last_error,
                     "latency_ms": h.latency_ms})
    return rows


def colour(h: Health, admin: Override) -> str:
    state = effective(h.status, admin)
    if state in (Effective.DOWN, Effective.ADMIN_DOWN):
        return "red"
    if state is not Effective.USABLE or h.status is not Status.UP or h.failures \
            or admin is Override.UP:  # forced up: served whatever its check says
        return "amber"
    return "green"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
