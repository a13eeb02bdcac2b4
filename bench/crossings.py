"""Which of the project's modules one request crosses, in order: a DNS answer-cache miss and
an HTTP redirect for a new client, traced call by call (``sys.setprofile``), nothing mocked
but the socket.

    .venv/bin/python bench/crossings.py [--json]

Each path is warmed up first with other clients (so what is traced is the steady state: a
new client in a running server, not the first request after start), then one request is
traced. A *crossing* is a call from a function of one module into a function of another
(calls within a module, into the standard library or a third-party package, and reads
of a value's property are not crossings). For each path it prints the modules in the
order the calls first enter them, each (caller module -> callee module) pair with how
often it is crossed, and every call *back up*: into a module that is still waiting
further up the stack (a callback), where a value goes back and forth.
``tests/test_layout.py`` holds both paths to none, and to one GeoIP lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from aiohttp.test_utils import make_mocked_request  # noqa: E402
from benchlib import unprobed_zone  # noqa: E402
from queries import ecs_queries, unframe  # noqa: E402

from router.core.geo import Locator  # noqa: E402
from router.core.health import Board  # noqa: E402
from router.core.runtime import Runtime  # noqa: E402
from router.core.zonefile import load  # noqa: E402
from router.dns.authority import Authority  # noqa: E402
from router.dns.zone import ZoneTable  # noqa: E402
from router.http.redirect import Redirector  # noqa: E402

PACKAGE = str(ROOT / "router") + "/"
PEER = ipaddress.ip_address("127.0.0.1")
PATH = "/dl/go1.22.5.linux-amd64.tar.gz"


def module_of(frame: FrameType | None) -> str | None:
    """``dns/cache`` for a frame in router/dns/cache.py; None outside the package."""
    if frame is None:
        return None
    name = frame.f_code.co_filename
    return name[len(PACKAGE):-3] if name.startswith(PACKAGE) else None


Call = tuple[str, str, bool]  # caller module, callee module, a call back up


def getters() -> set[CodeType]:
    """The code of every property getter in the package: reading a value's property is
    reading the value, not a call into its module, so it is not a crossing."""
    found: set[CodeType] = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("router."):
            continue
        for cls in vars(module).values():
            if isinstance(cls, type) and cls.__module__ == name:
                found.update(p.fget.__code__ for p in vars(cls).values()
                             if isinstance(p, property) and p.fget is not None)
    return found


def traced(call: Callable[[], Any]) -> list[Call]:
    """Every call between two of our modules made while ``call`` runs, in order: the
    caller's module, the callee's, and whether the callee's module is already waiting
    further up the stack (a call back up: a callback into a module that called down)."""
    seen: list[Call] = []
    skipped = getters()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event != "call" or frame.f_code in skipped:
            return
        callee = module_of(frame)
        if callee is None:
            return
        above = []
        caller = frame.f_back
        while caller is not None:
            mine = module_of(caller)
            if mine is not None:
                above.append(mine)
            caller = caller.f_back
        if above and above[0] != callee:
            seen.append((above[0], callee, callee in above[1:]))

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return seen


def summary(name: str, calls: list[Call]) -> dict[str, Any]:
    modules: list[str] = []
    for caller, callee, _up in calls:
        for m in (caller, callee):
            if m not in modules:
                modules.append(m)
    pairs = Counter((a, b) for a, b, _up in calls)
    return {"path": name, "modules": modules, "crossings": len(calls),
            "calls": [f"{a} -> {b}" + (" (back up)" if up else "") for a, b, up in calls],
            "back_up": sorted({f"{a} -> {b}" for a, b, up in calls if up}),
            "pairs": {f"{a} -> {b}": n for (a, b), n in pairs.items()}}


def dns_miss() -> list[Call]:
    board = Board()
    authority = Authority(ZoneTable(load(unprobed_zone())), Locator(), lambda: board.snapshot)
    queries = unframe(ecs_queries(101))
    for q in queries[:100]:  # warm: other clients, the same question
        authority.handle(q, PEER)
    return traced(lambda: authority.handle(queries[100], PEER))


def http_new_client() -> list[Call]:
    runtime = Runtime(load(unprobed_zone()), Locator(), Board())
    runtime.ready = True
    redirector = Redirector(runtime, (ipaddress.ip_network("127.0.0.1/32"),), None)
    loop = asyncio.new_event_loop()
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("127.0.0.1", 40000)

    def ask(client: str) -> None:
        request = make_mocked_request("GET", PATH, headers={"X-Forwarded-For": client},
                                      transport=transport)
        loop.run_until_complete(redirector.handle(request))

    for i in range(100):  # warm: other clients (Tokyo, Frankfurt, ...)
        ask(f"1.0.{16 + i}.1")
    try:
        return traced(lambda: ask("2.16.0.1"))
    finally:
        loop.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = p.parse_args()
    found = [summary("DNS answer-cache miss (ECS, a new subnet)", dns_miss()),
             summary("HTTP redirect, a new client (X-Forwarded-For)", http_new_client())]
    if args.json:
        print(json.dumps(found, indent=2))
        return
    for s in found:
        print(f"{s['path']}: {len(s['modules'])} modules, {s['crossings']} crossings, "
              f"{len(s['back_up'])} calls back up")
        print("  modules, in the order first entered: " + " ".join(s["modules"]))
        for pair, n in s["pairs"].items():
            print(f"    {pair}" + (f" x{n}" if n > 1 else ""))
        for call in s["back_up"]:
            print(f"  back up: {call}")
    print("\nreproduce: .venv/bin/python bench/crossings.py")


if __name__ == "__main__":
    main()
