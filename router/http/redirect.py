"""The redirector: ``GET <prefix><path>`` → ``302`` to the nearest healthy mirror's copy.

The handler only extracts the client and the path, asks the core (``paths`` and
``steering.rank``), and encodes the answer: ``Location``, ``Cache-Control: private,
no-store``, and RFC 6249 ``Link: rel=duplicate`` alternatives. ``?mirrorlist`` shows the
same decision as HTML or JSON instead.
"""

from __future__ import annotations

import ipaddress
import json
import math

from aiohttp import web

from router import paths
from router.errors import RouterError
from router.geo import Location
from router.http import pages
from router.http.client import IPNetwork, client_address
from router.runtime import Runtime
from router.steering import Decision, Want, decide

RUNTIME = web.AppKey("runtime", Runtime)
SETTINGS = web.AppKey("trusted_proxies", tuple[IPNetwork, ...])
NOWHERE = Location(ipaddress.ip_network("0.0.0.0/0"))


class NotRouted(RouterError):
    """No service's ``http_prefix`` covers the path (HTTP 404)."""


class Unavailable(RouterError):
    """No target can serve the request now (HTTP 503 with ``Retry-After``)."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


async def handle(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    raw_path, _, raw_query = request.raw_path.partition("?")
    route = runtime.routes.match(paths.clean(raw_path), request.host)
    if route is None:
        raise NotRouted(raw_path)
    service = route.service
    if not runtime.ready:
        raise Unavailable("starting: the first probe round is not done", 1)
    decision = decide(runtime.board.snapshot, service, _client(request), Want.URL)
    if "mirrorlist" in request.query:
        return _mirrorlist(request, route, decision)
    query = paths.check_query(raw_query) if service.pass_query and raw_query else ""
    found = paths.redirect_for(route, decision, query)
    if found is None:
        raise Unavailable("no mirror can serve this now",
                          max(1, math.ceil(service.health.interval)))
    request["target"] = found.target.id
    runtime.stats.http_chosen[(service.name, found.target.id)] += 1
    response = web.Response(status=302, headers={"Location": found.location,
                                                 "Cache-Control": "private, no-store"})
    for link in found.links:
        response.headers.add("Link", link)
    return response


def _client(request: web.Request) -> Location:
    trusted = request.app[SETTINGS]
    address = client_address(request.remote, trusted,
                             request.forwarded if trusted else (),
                             request.headers.getall("X-Forwarded-For", ()) if trusted else ())
    request["client"] = str(address) if address else None
    return request.app[RUNTIME].locator.locate(address) if address else NOWHERE


def _mirrorlist(request: web.Request, route: paths.Route, decision: Decision) -> web.Response:
    data = paths.describe_redirect(request.path, route, decision)
    data["client_address"] = request.get("client")
    wants_json = (request.query.get("mirrorlist") == "json"
                  or "application/json" in request.headers.get("Accept", ""))
    headers = {"Cache-Control": "private, no-store"}
    if wants_json:
        return web.Response(text=json.dumps(data, indent=2), content_type="application/json",
                            headers=headers)
    return web.Response(text=pages.mirrorlist(data), content_type="text/html", headers=headers)
