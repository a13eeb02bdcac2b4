"""``GET /explain?client=IP&name=NAME[&type=AAAA][&host=H][&secure=1]``: the running
router's own decision for one client, as plain data (``mirror-router explain --server``).

A path (``name=/go1.22.5.linux-amd64.tar.gz``) is decided by the redirector as a request
is (``Redirector.explain``): health, latency, overrides, the fleet's verdicts, the catalog
and the per-file checks. A steered DNS name or a service is decided as the DNS face
decides it, from the same health snapshot. The JSON is the shape of ``?mirrorlist=json``
and ``explain --json``. Served where the status pages are (the admin listener, with
``serve --admin``): it answers for any client address.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from aiohttp import web

from router.core.audience import Placer, scope
from router.core.ip import IPAddress
from router.core.runtime import Runtime, signing_line
from router.core.steering import Want, decide, describe_answer
from router.errors import RouterError
from router.http.keys import RUNTIME, VIEWERS

LIVE = ["decided by the running router: health, latency, overrides, fleet verdicts, "
        "the catalog and per-file checks as they are now"]


async def explain(request: web.Request) -> web.Response:
    query = request.query
    try:
        address = ipaddress.ip_address(query.get("client", ""))
    except ValueError:
        return _refused(400, "client= must be an IP address (the client or ECS address)")
    name, kind = query.get("name", ""), query.get("type", "A").upper()
    if not name or kind not in ("A", "AAAA"):
        return _refused(400, "name= is a steered DNS name, a service or a path; type= A or AAAA")
    if name.startswith("/"):
        try:
            data = await request.app[VIEWERS].explain(name, query.get("host"), address,
                                                      query.get("secure") == "1")
        except RouterError as e:  # not routed, not listed, a bad path
            return _refused(404, f"{name}: {e}")
    else:
        found = _by_name(request.app[RUNTIME], name, kind, address)
        if found is None:
            return _refused(404, f"{name}: not a steered name or a service of this router")
        data = found
    data["known"] = LIVE
    return web.Response(text=json.dumps(data, indent=2), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _by_name(runtime: Runtime, name: str, kind: str, address: IPAddress
             ) -> dict[str, Any] | None:
    """The DNS answer for ``name`` now: placed as the DNS face places an ECS address."""
    named = runtime.config.named(name)
    if named is None:
        return None
    zone, service = named
    client = Placer(runtime.locator, runtime.rules, runtime.asn_db).locate(address)
    want = Want.IPV6 if kind == "AAAA" else Want.IPV4
    snapshot = runtime.board.snapshot
    made = decide(snapshot, service, client, want, scope=scope(runtime.rules, service, client))
    signing = next((s for s in runtime.signing() if s.zone == zone.origin), None)
    keys = None if signing is None else [(k.algorithm, k.tag) for k in signing.keys if k.signs]
    return {"name": name, "type": kind, "client_address": str(address),
            **describe_answer(made, want, snapshot), "dnssec": signing_line(zone.origin, keys)}


def _refused(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={"Cache-Control": "no-store"})
