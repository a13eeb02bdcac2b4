"""How much memory ever-new ECS subnets can take: the caches' bounds, in one process.

    .venv/bin/python bench/dns_memory.py [--subnets 400000] [--every 100000]
                                         [--dns-cache N] [--geoip-cache N]

Asks the bench zone (conf/mirror-router, as bench/dns_profile.py builds it) for
go.example.com A with ECS for that many distinct routable /24 subnets, each once, and
prints the RSS every ``--every`` queries with the caches' counters. The queries are built
one at a time, so the figures are the server's own. bench/dns measures the served RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import memory_mb  # noqa: E402
from dns_profile import PEER, authority  # noqa: E402
from queries import ecs_queries, unframe  # noqa: E402

from router.core.geo import Locator  # noqa: E402
from router.dns.cache import DEFAULT_SIZE  # noqa: E402

CHUNK = 5_000  # queries built at a time (small, so that they barely show in the RSS)


def memory() -> str:
    """VmRSS, its anonymous and file-backed parts, and VmHWM, in MB."""
    return "  ".join(f"{name} {memory_mb(os.getpid(), name):4.0f} MB"
                     for name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subnets", type=int, default=400_000)
    p.add_argument("--every", type=int, default=100_000)
    p.add_argument("--dns-cache", type=int, default=DEFAULT_SIZE)
    p.add_argument("--geoip-cache", type=int, default=None,
                   help="the Locator's size (default: its own default)")
    args = p.parse_args()
    auth = authority(args.dns_cache)
    if args.geoip_cache is not None:
        auth.locator = Locator(cache_size=args.geoip_cache)
    print(f"{'start':>10}  {memory()}")
    done = 0
    while done < args.subnets:
        count = min(CHUNK, args.subnets - done)
        # a different seed per chunk: new subnets (a few may repeat across chunks)
        for query in unframe(ecs_queries(count, seed=done + 1)):
            auth.handle(query, PEER)
        done += count
        if done % args.every < CHUNK or done == args.subnets:
            print(f"{done:>10,}  {memory()}")
    cache = auth.cache.counters() if auth.cache is not None else {}
    print(f"answer cache {cache}")
    print(f"geoip cache  {auth.locator.counters()}")
    print(f"reproduce: .venv/bin/python bench/dns_memory.py --subnets {args.subnets} "
          f"--every {args.every} --dns-cache {args.dns_cache}"
          + (f" --geoip-cache {args.geoip_cache}" if args.geoip_cache is not None else ""))


if __name__ == "__main__":
    main()
