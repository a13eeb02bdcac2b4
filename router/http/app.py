"""The HTTP face (aiohttp): liveness and readiness for now; redirects build on this app."""

from __future__ import annotations

from aiohttp import web

from router.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process is up and its event loop answers."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: zones loaded and the first probe round done."""
    runtime = request.app[RUNTIME]
    if not runtime.ready:
        return web.Response(status=503, text="starting: first probe round not done\n")
    return web.Response(text="ready\n")


def create_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
