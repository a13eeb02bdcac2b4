"""The HTTP face (aiohttp): one app factory, short handlers, errors mapped in middleware.

Routes: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``, ``/status`` and
``/status.json`` (``router.http.status``), and every other GET/HEAD path goes to the
redirector (``router.http.redirect``). Other methods get 405 with ``Allow``. The error
middleware also counts every response by status (``router.stats``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from router.http import downloads, redirect, status
from router.http.client import IPNetwork
from router.inventory import Inventory
from router.memo import Memo
from router.paths import PathError
from router.runtime import Runtime

log = structlog.get_logger("router.http")
access = structlog.get_logger("router.http.access")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    trusted_proxies: tuple[IPNetwork, ...] = ()
    access_log: bool = False


RUNTIME = redirect.RUNTIME
SETTINGS = redirect.SETTINGS
INVENTORY = redirect.INVENTORY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process is up and its event loop answers."""
    return web.Response(text="ok\n", headers=_pid())


async def readyz(request: web.Request) -> web.Response:
    """Readiness: zones loaded and the first probe round done."""
    if not request.app[RUNTIME].ready:
        return web.Response(status=503, text="starting: first probe round not done\n",
                            headers=_pid())
    return web.Response(text="ready\n", headers=_pid())


def _pid() -> dict[str, str]:
    return {"X-Mirror-Router-Pid": str(os.getpid())}  # which process answered (--workers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where our errors become HTTP statuses, and where statuses are counted."""
    stats = request.app[RUNTIME].stats
    try:
        response = await _mapped(request, handler)
    except web.HTTPException as e:  # 405 and the like, raised by aiohttp itself
        stats.http_responses[e.status] += 1
        raise
    except Exception:
        stats.errors["http"] += 1
        stats.http_responses[500] += 1
        raise
    stats.http_responses[response.status] += 1
    return response


async def _mapped(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PathError as e:
        return web.Response(status=400, text=f"400 Bad Request: {e}\n")
    except redirect.NotRouted:
        return web.Response(status=404, text="404 Not Found: no service serves this path\n")
    except downloads.NotListed as e:
        return web.Response(status=404, text=f"404 Not Found: {e} is not in the catalog\n")
    except redirect.Unavailable as e:
        return web.Response(status=503, text=f"503 Service Unavailable: {e}\n",
                            headers={"Retry-After": str(e.retry_after)})


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    access.info("request", client=request.get("client"), method=request.method,
                path=request.raw_path, status=response.status, target=request.get("target"),
                ms=round((time.perf_counter() - started) * 1000, 3))
    return response


def create_app(runtime: Runtime, settings: HttpSettings | None = None, *,
               inventory: Inventory | None = None) -> web.Application:
    settings = settings or HttpSettings()
    middlewares = [access_log, errors] if settings.access_log else [errors]
    app = web.Application(middlewares=middlewares)
    app[RUNTIME] = runtime
    app[SETTINGS] = settings.trusted_proxies
    clients = app[redirect.CLIENTS] = Memo(65536)
    runtime.caches["http_clients"] = clients.counters
    if inventory is not None:
        app[INVENTORY] = inventory
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    status.add_routes(app)
    # [\s\S]: the decoded path may hold newlines (from %0a); those must reach the checks.
    app.router.add_get(r"/{path:[\s\S]*}", redirect.handle)
    return app
