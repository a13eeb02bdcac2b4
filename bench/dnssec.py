#!/usr/bin/env python3
"""What signing costs a query, in process (no sockets): the bench zone (conf/mirror-router)
with and without DO, with and without the answer cache, over random ECS /24 subnets.

    .venv/bin/python bench/dnssec.py [--queries 20000]

Each row: the first pass over the queries, a second pass over the same ones, and the
signatures made (the set of distinct steered answers is small, so few are).
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import dns.edns  # noqa: E402
import dns.message  # noqa: E402
from benchlib import unprobed_zone  # noqa: E402

from router.core.geo import Locator  # noqa: E402
from router.core.health import Board  # noqa: E402
from router.core.zonefile import load  # noqa: E402
from router.dns.authority import Authority  # noqa: E402
from router.dns.zone import ZoneTable  # noqa: E402

PEER = ipaddress.ip_address("127.0.0.1")


def signed_zone() -> tuple[Path, str]:
    folder = unprobed_zone()
    toml = next(folder.glob("*.toml"))
    origin = next(line for line in toml.read_text().splitlines()
                  if line.startswith("origin")).split('"')[1]
    subprocess.run([sys.executable, "-m", "router", "dnssec", "keygen", "--zone", origin,
                    "--out", str(folder / "zone.key")], check=True, capture_output=True,
                   cwd=ROOT)
    toml.write_text(toml.read_text().replace("[zone]\n", '[zone]\ndnssec_key = "zone.key"\n', 1))
    return folder, origin


def queries(origin: str, count: int, do: bool, rnd: random.Random) -> list[bytes]:
    return [dns.message.make_query(
        "go." + origin, "A", want_dnssec=do, options=[dns.edns.ECSOption(
            f"{rnd.randint(1, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.0", 24)]
    ).to_wire() for _ in range(count)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=20000)
    args = p.parse_args()
    folder, origin = signed_zone()
    board = Board()
    print(f"{'DO':>5} {'cache':>6} {'1st pass us/q':>14} {'2nd pass us/q':>14} {'signed':>7}")
    for do in (False, True):
        for cache in (0, 50000):
            authority = Authority(ZoneTable(load(folder)), Locator(), lambda: board.snapshot,
                                  cache_size=cache)
            data = queries(origin, args.queries, do, random.Random(7))
            passes = []
            for _ in range(2):
                started = time.perf_counter()
                for query in data:
                    authority.handle(query, PEER)
                passes.append((time.perf_counter() - started) / len(data) * 1e6)
            made = sum(z.signer.made for z in authority.table.zones if z.signer)
            print(f"{do!s:>5} {cache:>6} {passes[0]:>14.1f} {passes[1]:>14.1f} {made:>7}")
    print(f"\nreproduce: .venv/bin/python bench/dnssec.py --queries {args.queries}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
