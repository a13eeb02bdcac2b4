"""``POST /report``: what a client that can report says of its download (``serve
--beacon``; off by default): ``{"file": PATH, "target": ID, "ok": BOOL, "seconds": S,
"bytes": N}`` from an installer script or a download page.

The trust model: a report is believed only about the reporter's own network. A failure
counts toward that network avoiding that mirror (``core.retries``, as a retry does), and
never changes what any other network gets. A success's throughput is a figure shown on
``/status`` (``core.speeds``: one figure per network, a median over many); only a
service that sets ``throughput_size`` charges it in ranking, for the clients of the
reporter's region, once ``MIN_NETWORKS`` networks have reported: the operator's choice
to let many networks' reports move what others get. Reports are rate-limited per client
network (``PER_MINUTE``); a bad body gets 400 and changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import structlog
from aiohttp import web

from router.core.config import Config
from router.core.memo import Memo
from router.core.regions import ALL
from router.core.retries import RetryPolicy, network_of, shown
from router.core.speeds import SpeedReport, heard
from router.errors import RouterError
from router.http import routes as paths
from router.http.keys import RUNTIME, VIEWERS

log = structlog.get_logger("router.http.beacon")
MAX_BODY = 4096  # bytes a report may have
PER_MINUTE = 30  # reports a client network may send a minute
FIELDS: dict[str, type | tuple[type, ...]] = {
    "file": str, "target": str, "ok": bool, "seconds": (int, float), "bytes": int}
BY_NETWORK: web.AppKey[Memo[bytes, list[float]]] = web.AppKey("beacon_networks",
                                                              Memo[bytes, list[float]])
ROUTES: web.AppKey[list[tuple[Config, paths.Routes]]] = web.AppKey(
    "beacon_routes", list[tuple[Config, paths.Routes]])  # the config's, kept


class BadReport(RouterError):
    """A report that does not say what it must (400)."""


def install(app: web.Application) -> None:
    """What ``report`` keeps in ``app``: each network's recent reports, the routes."""
    app[BY_NETWORK] = Memo(65536)
    app[ROUTES] = []


async def report(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    counts = runtime.stats.clients
    address = request.app[VIEWERS].client(request)[0]
    if address is None:
        counts["reports_bad"] += 1
        return _answer(400, "no client address")
    value = ipaddress.ip_address(address)
    network, now = network_of(int(value), value.version), time.monotonic()
    if _limited(request.app[BY_NETWORK], network, now):
        counts["reports_limited"] += 1
        return _answer(429, f"at most {PER_MINUTE} reports a minute per network",
                       {"Retry-After": "60"})
    try:
        body = await _body(request)
        service, target = _subject(request.app, body)
    except BadReport as e:
        counts["reports_bad"] += 1
        return _answer(400, str(e))
    if body["ok"]:
        counts["reports_ok"] += 1
        _speed(request, network, service, target, body["bytes"] / float(body["seconds"]))
    else:
        counts["reports_failed"] += 1
        found = runtime.config.service(service)
        policy = (found.retries if found is not None else None) or RetryPolicy()
        if runtime.retries.failed(service, network, target, now, policy):
            log.info("client_avoids", service=service, target=target, network=shown(network),
                     reported=True, seconds=policy.avoid_for)
    return web.Response(status=204)


def _speed(request: web.Request, network: bytes, name: str, target: str,
           bytes_per_second: float) -> None:
    """A download's speed, kept for the client's region (``core.speeds``): charged here,
    or, in a worker, by the supervisor, which every worker's reports reach."""
    runtime = request.app[RUNTIME]
    service = runtime.config.service(name)
    if service is None:
        return
    client = request.app[VIEWERS].client(request)[1]
    region = runtime.board.snapshot.region_of(client.point or service.default_location)
    report = SpeedReport(name, region or ALL, target, network, bytes_per_second)
    speeds = runtime.speeds
    if speeds.journal is not None:
        speeds.add(report)
        speeds.journal(report)
    else:
        heard(speeds, runtime.board, service, report)


def _limited(seen: Memo[bytes, list[float]], network: bytes, now: float) -> bool:
    """Whether ``network`` has sent ``PER_MINUTE`` reports in the last minute already."""
    times = [t for t in seen.get(network) or [] if now - t < 60]
    if len(times) >= PER_MINUTE:
        return True
    times.append(now)
    seen.put(network, times)
    return False


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadReport(f"a report is at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadReport(f"a report is at most {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadReport("not JSON") from None
    if not isinstance(body, dict) or set(body) != set(FIELDS):
        raise BadReport(f"a JSON object with exactly {', '.join(FIELDS)}")
    for key, kind in FIELDS.items():
        if not isinstance(body[key], kind) or (kind is not bool and isinstance(body[key], bool)):
            raise BadReport(f"{key} has the wrong type")
    if not 0 < body["seconds"] < 86400 * 7 or not 0 <= body["bytes"] < 2**50:
        raise BadReport("seconds must be positive, bytes not negative")
    return body


def _subject(app: web.Application, body: dict[str, Any]) -> tuple[str, str]:
    """The service the reported file belongs to, and the reported target of it."""
    config, known = app[RUNTIME].config, app[ROUTES]
    if not known or known[0][0] is not config:  # made again after a reload
        known[:] = [(config, paths.Routes(config))]
    try:
        route = known[0][1].match(paths.clean(body["file"]))
    except paths.PathError as e:
        raise BadReport(f"file: {e}") from None
    if route is None or route.service.target(body["target"]) is None:
        raise BadReport("file and target name no mirror of a service here")
    return route.service.name, body["target"]


def _answer(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=f"{status}: {text}\n",
                        headers={"Cache-Control": "no-store", **(headers or {})})
