"""Where a redirect's time goes, without sockets: cProfile over ``Redirector.handle``.

    .venv/bin/python bench/http_profile.py [--requests 50000] [--top N] [--rules] [--retries]

Builds the bench zone (conf/mirror-router) and asks its redirector, in this process,
for ``/dl/go1.22.5.linux-amd64.tar.gz`` through aiohttp's mocked requests, from a
trusted proxy (127.0.0.1) with X-Forwarded-For:

- one client: 1.0.16.1 (Tokyo) again and again;
- new clients: ``a.b.c.1`` of distinct routable /24s (bench/dns's subnets), each seen
  once, so every request is a client memo miss, a GeoIP walk and (a third of them) a
  GeoIP record decoded.

With --rules, the zone has bench/http and bench/dns's 10,000 rule prefixes and an ASN
database (``benchlib.with_rules``), and what the rules cost alone is printed first. With
--retries, its service watches for clients that come back (``retry_window = "30s"``,
``retry_threshold = 2``): the one client then retries, by definition, and soon avoids
every mirror; the new clients never come back, which is the cost of watching. For
each it prints the time per request (without the profiler; aiohttp's request and response
objects included, its parser and the socket not) and the share of each stage in the
profiled time (with --top N, also the N costliest functions). bench/http has the served
figures; this shows what to make faster.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402
from benchlib import Stages, profiled, unprobed_zone, with_rules  # noqa: E402
from queries import subnets  # noqa: E402

from router.core.asn import AsnDb  # noqa: E402
from router.core.geo import Locator  # noqa: E402
from router.core.health import Board  # noqa: E402
from router.core.runtime import Runtime  # noqa: E402
from router.core.zonefile import load  # noqa: E402
from router.http.redirect import Redirector  # noqa: E402

PATH = "/dl/go1.22.5.linux-amd64.tar.gz"
TRUSTED = (ipaddress.ip_network("127.0.0.1/32"),)

STAGES: Stages = {  # (file suffix, function): what the summary calls it; calls overlap
    ("http/redirect.py", "client"): "the client (Redirector.client)",
    ("http/client.py", "client"): "  of which: forwarding headers (Proxies.client)",
    ("router/core/geo.py", "at"): "  of which: GeoIP (Locator.at)",
    ("router/core/geo.py", "_lookup"): "    of which: records decoded (Locator._lookup)",
    ("router/core/audience.py", "place"): "  of which: rules (Rules.place)",
    ("http/redirect.py", "_remembered"): "the decision (Redirector._remembered)",
    ("http/redirect.py", "_lineup"): "  of which: a new place's line-up (steering.lined_up)",
    ("router/core/scoring.py", "costs"): "  of which: its costs (Lineup.costs)",
    ("router/core/steering.py", "decision"): "  of which: a full ranking (steering.decision)",
    ("http/redirect.py", "_redirect"): "the 302 (Redirector._redirect)",
    ("web_response.py", "__init__"): "  of which: the response (web.Response)",
}


def redirector(rules: bool = False, retries: bool = False) -> Redirector:
    folder = unprobed_zone()
    if retries:
        zone = next(folder.glob("*.toml"))
        zone.write_text(zone.read_text().replace(
            "[services.go]\n", '[services.go]\nretry_window = "30s"\nretry_threshold = 2\n', 1))
    asn = AsnDb(with_rules(folder, "http://127.0.0.1:9")[1]) if rules else None
    runtime = Runtime(load(folder), Locator(), Board(), asn_db=asn)
    runtime.ready = True
    return Redirector(runtime, TRUSTED, None)


def request(client: str) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("127.0.0.1", 40000)
    return make_mocked_request("GET", PATH, headers={"X-Forwarded-For": client},
                               transport=transport)


def rules_alone(count: int) -> None:
    """What the rules cost a new client by themselves: ``Rules.place`` (as the DNS face
    calls it, narrowing), and its two table lookups, over ``count`` distinct /24s."""
    runtime = redirector(True).runtime
    rules, locator = runtime.rules, runtime.locator
    values = [net + 1 for net in subnets(count)]
    wheres = [locator.at(v, 4) for v in values]
    table, pairs = rules.table, list(zip(values, wheres, strict=True))
    for label, run in (
            ("Rules.place", lambda: [rules.place(w, v, 4) for v, w in pairs]),
            ("PrefixTable.match", lambda: [table.match(v, 4) for v in values]),
            ("PrefixTable.split", lambda: [table.split(v, 4, w.prefixlen) for v, w in pairs])):
        started = time.perf_counter()
        run()
        print(f"   {label}: {(time.perf_counter() - started) / count * 1e6:.2f} us a new client")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--top", type=int, default=0, help="also the N costliest functions")
    p.add_argument("--rules", action="store_true", help="10,000 rule prefixes, an ASN db")
    p.add_argument("--retries", action="store_true", help="watch for clients that come back")
    args = p.parse_args()
    loop = asyncio.new_event_loop()
    clients = [str(ipaddress.IPv4Address(net + 1)) for net in subnets(args.requests)]

    def served(addresses: list[str]) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            handle = redirector(args.rules, args.retries).handle
            requests = [request(a) for a in addresses]  # made before the clock starts

            async def all_of_them() -> None:
                for r in requests:
                    await handle(r)
            return lambda: loop.run_until_complete(all_of_them())
        return make

    if args.rules:
        rules_alone(args.requests)
    profiled("one client (1.0.16.1, Tokyo)", served(["1.0.16.1"] * args.requests),
             args.requests, args.top, STAGES, "request")
    profiled("new clients (distinct /24s)", served(clients), args.requests, args.top, STAGES,
             "request")


if __name__ == "__main__":
    main()
