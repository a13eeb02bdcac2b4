"""The rough ceiling of a Python HTTP redirector here: aiohttp on uvloop, one fixed 302.

Every ``GET /dl/<file>`` gets ``302 Location: https://fra.mirror.example.net/dl/<file>``:
no client address, no GeoIP, no decision, no headers read. ``bench/http`` runs it beside
mirror-router as a yardstick for the machine (after ../shared/peers/py/http_ceiling.py).

    python bench/http_ceiling.py --port 8399
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web

BASE = "https://fra.mirror.example.net/dl/"


async def dl(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": BASE + request.match_info["file"]})


async def root(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.router.add_get("/dl/{file}", dl)
    app.router.add_get("/", root)
    web.run_app(app, host="127.0.0.1", port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
