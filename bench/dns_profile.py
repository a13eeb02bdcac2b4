"""Where a query's time goes, without sockets: cProfile over ``Authority.handle``.

    .venv/bin/python bench/dns_profile.py [--queries 20000] [--top N] [--rules]

Builds the bench zone (conf/mirror-router) and asks it, in this process:

- hits: go.example.com A with ECS 1.0.16.0/24, the same query again and again;
- misses: go.example.com A with ECS for distinct routable /24 subnets, the first time
  each is seen (a fresh Authority and GeoIP reader: nothing cached anywhere);
- strict: the same misses with the answer cache off.

With --rules, the zone has bench/http and bench/dns's 10,000 rule prefixes and an ASN
database (``benchlib.with_rules``). For each it prints the time per query (without the
profiler) and the share of each stage in the profiled time (with --top N, also the N
costliest functions). The served figures are in bench/dns; this shows what to make faster.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import Stages, profiled, unprobed_zone, with_rules, with_targets  # noqa: E402
from queries import ecs_queries, unframe  # noqa: E402

from router.core.asn import AsnDb  # noqa: E402
from router.core.geo import Locator  # noqa: E402
from router.core.health import Board  # noqa: E402
from router.core.zonefile import load  # noqa: E402
from router.dns.authority import Authority  # noqa: E402
from router.dns.zone import ZoneTable  # noqa: E402

PEER = ipaddress.ip_address("127.0.0.1")


def authority(cache_size: int, rules: bool = False, targets: int = 0) -> Authority:
    folder = unprobed_zone()
    asn = AsnDb(with_rules(folder, "http://127.0.0.1:9")[1]) if rules else None
    if targets:
        with_targets(folder, targets, "http://127.0.0.1:9")
    board = Board()
    return Authority(ZoneTable(load(folder)), Locator(), lambda: board.snapshot,
                     cache_size=cache_size, asn_db=asn)


STAGES: Stages = {  # (file suffix, function): what the summary calls it; calls overlap
    ("dns/cache.py", "answer"): "cache lookup (AnswerCache.answer)",
    ("dns/wire.py", "read"): "reading the query (wire.read)",
    ("dns/authority.py", "respond"): "decision and records (Authority.respond)",
    ("dns/authority.py", "locate"): "GeoIP (Authority.locate: lookup and decision)",
    ("router/core/audience.py", "place"): "rules (Rules.place)",
    ("router/core/steering.py", "decide"): "steering (steering.decide)",
    ("router/core/geo.py", "_lookup"): "  of which: records decoded (Locator._lookup)",
    ("router/core/steering.py", "rank"): "steering (steering.rank)",
    ("dns/wire.py", "render"): "writing the reply (wire.render)",
    ("dns/cache.py", "store"): "cache fill (AnswerCache.store)",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--queries", type=int, default=20_000)
    p.add_argument("--top", type=int, default=0, help="also the N costliest functions")
    p.add_argument("--rules", action="store_true", help="10,000 rule prefixes, an ASN db")
    p.add_argument("--targets", type=int, default=0, help="this many more targets")
    args = p.parse_args()
    distinct = unframe(ecs_queries(args.queries))
    one = distinct[0]

    def hits() -> Callable[[], None]:
        auth = authority(100_000, args.rules, args.targets)
        auth.handle(one, PEER)
        return lambda: [auth.handle(one, PEER) for _ in range(args.queries)] and None

    def misses(size: int) -> Callable[[], None]:
        def make() -> Callable[[], None]:
            auth = authority(size, args.rules, args.targets)
            return lambda: [auth.handle(q, PEER) for q in distinct] and None
        return make

    profiled("cache hits (ECS, one subnet)", hits, args.queries, args.top, STAGES, "query")
    profiled("cache misses (ECS, distinct subnets, cold)", misses(100_000), args.queries,
             args.top, STAGES, "query")
    profiled("strict path only (--dns-cache 0, cold)", misses(0), args.queries, args.top,
             STAGES, "query")


if __name__ == "__main__":
    main()
