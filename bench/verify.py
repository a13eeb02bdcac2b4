"""What content verification really costs a mirror: bytes fetched per target over one day,
against its budget, with the day scaled down (real fetches over loopback, a clock that
runs ``--scale`` times faster than the wall's).

    .venv/bin/python bench/verify.py [--targets 3] [--budget 512MiB] [--every 10m]
                                     [--scale 1440] [--files 40]

Each target is a loopback HTTP server holding ``--files`` files of 1 to 16 MiB (a Go
release's sizes), listed in a catalog with their SHA-256 and known present on every
target. The router's own ``Verifier`` runs on them for one simulated day: its clock runs
``--scale`` times faster, and it is configured with ``every`` and the budget as a day of
that clock sees them. The table gives, per target, the verifications, the bytes fetched,
and their share of the budget (the most a target may cost in a day is its budget and one
period's worth more).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from router.core import values  # noqa: E402
from router.core.availability import Availability, Ledger, Outcome  # noqa: E402
from router.core.catalog import CatalogFile, parse_go  # noqa: E402
from router.core.config import (  # noqa: E402
    CatalogSpec,
    Config,
    Service,
    Target,
    Verify,
    Zone,
)
from router.core.earth import Point  # noqa: E402
from router.watch.verifier import Verifier  # noqa: E402

MIB = 1024 * 1024


def files(count: int, rng: random.Random) -> dict[str, bytes]:
    return {f"go1.22.{i}.linux-amd64.tar.gz": rng.randbytes(rng.randint(1, 16) * MIB)
            for i in range(count)}


def release_list(held: dict[str, bytes]) -> bytes:
    return json.dumps([{"version": "go1.22.0", "stable": True, "files": [
        {"filename": n, "os": "linux", "arch": "amd64", "version": "go1.22.0",
         "sha256": hashlib.sha256(b).hexdigest(), "size": len(b), "kind": "archive"}
        for n, b in held.items()]}]).encode()


async def serve(held: dict[str, bytes]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.Response:
        body = held.get(request.match_info["name"])
        return web.Response(body=body) if body is not None else web.Response(status=404)
    app = web.Application()
    app.router.add_get("/{name}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(7)
    held = files(args.files, rng)
    servers = [await serve(held) for _ in range(args.targets)]
    budget = values.size(1024, 2**50)(args.budget)
    every = values.parse_duration(args.every)
    service = Service("downloads", "dl.example.com.", tuple(
        Target(f"t{i}", Point(0, 0), url=f"http://127.0.0.1:{port}/")
        for i, (_r, port) in enumerate(servers)),
        http_prefix="/", catalog=CatalogSpec("http://127.0.0.1/"),
        verify=Verify(budget, every / args.scale))
    ledger = Ledger()
    ledger.install(service, parse_go(release_list(held)))
    for t in service.targets:
        for name in held:
            ledger.record(service, t.id, CatalogFile(name, ""), Outcome(Availability.PRESENT,
                                                                        "HTTP 200"), 0.0)
    started = time.monotonic()

    def clock() -> float:  # a day of it passes in 86,400 / scale seconds
        return (time.monotonic() - started) * args.scale

    session = aiohttp.ClientSession()
    verifier = Verifier(ledger, lambda: session, clock=clock, rng=random.Random(1))
    verifier.reconfigure(Config((Zone("dl.example.com.", ("ns1.example.net.",),
                                      "hostmaster.example.net.", services=(service,)),)))
    day = 86400 / args.scale
    await asyncio.sleep(day)
    await verifier.close()
    await session.close()
    for runner, _port in servers:
        await runner.cleanup()
    allowed = budget * (1 + every / 86400)
    print(f"one simulated day ({day:.0f} s real, clock x{args.scale:g}), budget "
          f"{budget / MIB:.0f} MiB per target per day, every {args.every}")
    print(f"{'target':<8}{'verified MiB':>14}{'of budget':>11}")
    for t in service.targets:
        spent = verifier.spent.get((service.name, t.id), 0)
        print(f"{t.id:<8}{spent / MIB:>14.1f}{spent / budget:>10.0%}"
              + ("   OVER" if spent > allowed else ""))
    corrupt = sum(len(ledger.corrupt(service.name, t.id)) for t in service.targets)
    print(f"corrupt copies found: {corrupt} (none are: every copy is good)")
    print(f"\nreproduce: .venv/bin/python bench/verify.py --targets {args.targets} "
          f"--budget {args.budget} --every {args.every} --scale {args.scale:g} "
          f"--files {args.files}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", type=int, default=3)
    p.add_argument("--budget", default="512MiB", help="bytes_per_day (default 512MiB)")
    p.add_argument("--every", default="10m", help="between verifications (default 10m)")
    p.add_argument("--scale", type=float, default=1440.0,
                   help="clock speed: 1440 makes a day a minute")
    p.add_argument("--files", type=int, default=40)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
