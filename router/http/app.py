"""The HTTP face (aiohttp): one app factory, short handlers, errors mapped in one place.

Routes: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/explain`` (one client's
decision, ``router.http.explain``), ``/metrics``, ``/status`` and ``/status.json``
(``router.http.status.handlers``), and every other GET/HEAD path goes to the redirector
(``router.http.redirect``). Other methods get 405 with ``Allow``. With an admin listener
(``serve --admin``), the first six are served there (``create_admin_app``) and leave the
public app, where those paths are ordinary paths.

Every response says ``Server: mirror-router``, with no version of anything.

Every handler is registered wrapped by ``counted``, which turns our errors into HTTP
statuses and counts every response by status (``router.core.stats``). A wrapper, not an
aiohttp middleware: a middleware costs the hot redirect about four microseconds a
request (a tenth of its rate, bench/http), a wrapper less than one. The access log is
the one middleware, and only with ``--access-log``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import HttpVersion10, HttpVersion11, web, web_response
from aiohttp.typedefs import Handler

from router.core.ip import IPNetwork
from router.core.runtime import Runtime
from router.core.stats import Stats
from router.core.steering import FileChecker
from router.errors import RouterError
from router.http import beacon, downloads, explain, redirect
from router.http.keys import CLIENT, PRIVATE, RUNTIME, TARGET, VIEWERS
from router.http.routes import PathError
from router.http.status import handlers as status

# aiohttp names itself and Python, with versions, in every response it prepares (its
# own error pages too): name ourselves instead, with no version to look up exploits by.
SERVER = "mirror-router"
web_response.SERVER_SOFTWARE = SERVER  # type: ignore[attr-defined]  # read when a response is prepared

log = structlog.get_logger("router.http")
REDIRECTOR = web.AppKey("redirector", redirect.Redirector)  # the public app's
access = structlog.get_logger("router.http.access")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    trusted_proxies: tuple[IPNetwork, ...] = ()
    access_log: bool = False
    beacon: bool = False  # POST /report (router.http.beacon)




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


def counted(stats: Stats, handler: Handler) -> Handler:
    """``handler`` with our errors turned into HTTP statuses, and every response counted."""
    responses = stats.http_responses

    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:  # 405 and the like
            responses[e.status] += 1
            raise
        except RouterError as e:
            response = _mapped(e)
        except Exception:
            stats.errors["http"] += 1
            responses[500] += 1
            raise
        responses[response.status] += 1
        return response

    return serve


def _mapped(error: RouterError) -> web.Response:
    if isinstance(error, PathError):
        return web.Response(status=400, text=f"400 Bad Request: {error}\n")
    if isinstance(error, redirect.NotRouted):
        return web.Response(status=404, text="404 Not Found: no service serves this path\n")
    if isinstance(error, downloads.NotListed):
        return web.Response(status=404, text=f"404 Not Found: {error} is not in the catalog\n")
    if isinstance(error, redirect.Missing):
        reason = "Gone" if error.status == 410 else "Not Found"
        return web.Response(status=error.status, text=f"{error.status} {reason}: no mirror "
                            f"has {error}: every one that is up lacks it\n")
    if isinstance(error, redirect.Unavailable):
        return web.Response(status=503, text=f"503 Service Unavailable: {error}\n",
                            headers={"Retry-After": str(error.retry_after)})
    raise error


async def not_allowed(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    access.info("request", client=request.get(CLIENT, request.remote), method=request.method,
                path=request.raw_path, status=response.status, target=request.get(TARGET),
                ms=round((time.perf_counter() - started) * 1000, 3))
    return response


def http_1_only(stats: Stats) -> Any:
    """A middleware: HTTP/1.0 and HTTP/1.1 only (an ``HTTP/0.9`` or ``HTTP/2.0`` request
    line gets 505, not a redirect), and CONNECT, which names no path of ours, 405 (not
    404). Middlewares see requests no route matches, so this is the one place for both."""
    allowed = "GET, HEAD"

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.version not in (HttpVersion10, HttpVersion11):
            stats.http_responses[505] += 1
            raise web.HTTPVersionNotSupported(headers={"Connection": "close"})
        if request.method == "CONNECT":
            stats.http_responses[405] += 1
            raise web.HTTPMethodNotAllowed("CONNECT", allowed.split(", "))
        return await handler(request)

    return check


def create_app(runtime: Runtime, settings: HttpSettings | None = None, *,
               inventory: FileChecker | None = None, admin: bool = True) -> web.Application:
    """The public app: the redirector, and (``admin``) the health and status pages."""
    settings = settings or HttpSettings()
    app = web.Application(middlewares=[http_1_only(runtime.stats),
                                       *([access_log] if settings.access_log else [])])
    app[RUNTIME] = runtime
    app[PRIVATE] = False
    redirector = app[REDIRECTOR] = redirect.Redirector(
        runtime, settings.trusted_proxies, inventory, access_log=settings.access_log)
    app[VIEWERS] = redirector
    if settings.beacon:  # before the redirector's catch-all route takes every path
        beacon.install(app)
        app.router.add_post("/report", counted(runtime.stats, beacon.report))
    pages = _admin_routes(app) if admin else {}
    # [\s\S]: the decoded path may hold newlines (from %0a); the checks see them.
    _add(app, {**pages, r"/{path:[\s\S]*}": redirector.handle})
    return app


def create_admin_app(public: web.Application) -> web.Application:
    """The private listener's app: health, readiness, metrics and status, nothing else."""
    app = web.Application(middlewares=[http_1_only(public[RUNTIME].stats)])
    app[RUNTIME] = public[RUNTIME]
    app[PRIVATE] = True
    app[VIEWERS] = public[VIEWERS]  # to place the viewer
    _add(app, _admin_routes(app))
    return app


def _admin_routes(app: web.Application) -> dict[str, Handler]:
    return {"/healthz": healthz, "/readyz": readyz, "/explain": explain.explain,
            **status.routes(app)}


def _add(app: web.Application, routes: dict[str, Handler]) -> None:
    stats = app[RUNTIME].stats
    for path, handler in routes.items():
        app.router.add_get(path, counted(stats, handler))
        app.router.add_route("*", path, counted(stats, not_allowed))
