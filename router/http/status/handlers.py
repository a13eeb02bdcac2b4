"""``/status`` (HTML, with a world map), ``/status.json`` and ``/metrics`` (Prometheus).

Short handlers: each reads the runtime once and renders. The viewer's own location
(behind trusted proxies, as the redirector sees it) is marked on the map.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from router.http.keys import PRIVATE, RUNTIME, VIEWERS
from router.http.status import metrics, statuspage
from router.http.status.overview import overview, public

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
NO_STORE = {"Cache-Control": "no-store"}
# The classic text format, which every Prometheus reads (our names are plain ASCII, so
# prometheus-client's output is the same whichever version it announces).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def routes(app: web.Application) -> dict[str, Handler]:
    """The GET routes of these pages (the app factory registers them)."""
    app[REGISTRY] = metrics.registry(app[RUNTIME])
    return {"/metrics": metrics_handler, "/status": status_page,
            "/status.json": status_json}


async def metrics_handler(request: web.Request) -> web.Response:
    body = metrics.exposition(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, **NO_STORE})


def _overview(request: web.Request) -> dict[str, Any]:
    """The status data: whole on the admin listener, ``public()`` on the public one."""
    address, client = request.app[VIEWERS].client(request)
    data = overview(request.app[RUNTIME], client, address)
    return data if request.app[PRIVATE] else public(data)


async def status_page(request: web.Request) -> web.Response:
    data = _overview(request)
    return web.Response(text=statuspage.page(data), content_type="text/html", headers=NO_STORE)


async def status_json(request: web.Request) -> web.Response:
    data = _overview(request)
    return web.Response(text=json.dumps(data, indent=2), content_type="application/json",
                        headers=NO_STORE)
