"""``/status`` (HTML, with a world map), ``/status.json`` and ``/metrics`` (Prometheus).

Short handlers: each reads the runtime once and renders. The viewer's own location
(behind trusted proxies, as the redirector sees it) is marked on the map.
"""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CollectorRegistry

from router import metrics
from router.http import statuspage
from router.http.redirect import RUNTIME, _client
from router.overview import overview

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
NO_STORE = {"Cache-Control": "no-store"}
# The classic text format, which every Prometheus reads (our names are plain ASCII, so
# prometheus-client's output is the same whichever version it announces).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_routes(app: web.Application) -> None:
    app[REGISTRY] = metrics.registry(app[RUNTIME])
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/status", status_page)
    app.router.add_get("/status.json", status_json)


async def metrics_handler(request: web.Request) -> web.Response:
    body = metrics.exposition(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, **NO_STORE})


async def status_page(request: web.Request) -> web.Response:
    client = _client(request)
    data = overview(request.app[RUNTIME], client, request.get("client"))
    return web.Response(text=statuspage.page(data), content_type="text/html", headers=NO_STORE)


async def status_json(request: web.Request) -> web.Response:
    data = overview(request.app[RUNTIME], _client(request), request.get("client"))
    return web.Response(text=json.dumps(data, indent=2), content_type="application/json",
                        headers=NO_STORE)
