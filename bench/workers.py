"""How fast a change reaches every worker of ``serve --workers N``.

    .venv/bin/python bench/workers.py [--workers 2] [--changes 20]

Starts mirror-router with N workers on the bench zone (conf/mirror-router, --no-probe:
nothing is contacted) and an operator state file, then ``--changes`` times drains the
mirror that Tokyo gets (tyo) or puts it back, and times, from the moment the file is
written, until every worker answers with the change: each poll asks from 16 fresh UDP
sockets (SO_REUSEPORT spreads them over the workers by source port) and also checks that
answers came from every worker (X-Mirror-Router-Pid of the HTTP face). The file is
looked at every 0.25 s (``statefile.POLL``) and applied once it has stood still for one
look (so a half-written file is never read): 0.25 to 0.5 s of the end-to-end time is
that, by design.

Then it reads ``mirror_router_worker_state_lag_seconds`` from /metrics: the time from the
supervisor's snapshot to a worker serving it, whatever the change (the hand-on itself,
which a health check's result takes too). The first hand-ons, at start, wait for the
workers to start, and land in the top buckets.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import dns.message  # noqa: E402
import dns.query  # noqa: E402
from benchlib import Server, free_port, started, unprobed_zone  # noqa: E402
from dns.edns import ECSOption  # noqa: E402

from router.core.overrides import Override  # noqa: E402
from router.watch import statefile  # noqa: E402

TOKYO = ECSOption("1.0.16.0", 24)
ADDRESS = {"tyo": "192.0.2.2", "bj": "192.0.2.1"}  # drained tyo: Beijing is next


def get(port: int, path: str) -> tuple[str, str]:
    """The body of GET path, and the pid of the worker that answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.read().decode(), r.headers.get("X-Mirror-Router-Pid", "")
    finally:
        conn.close()


def ready(port: int) -> bool:
    with contextlib.suppress(OSError):
        return get(port, "/readyz")[0].startswith("ready")
    return False


def answers(port: int, count: int = 16) -> set[str]:
    """The A records of go.example.com for Tokyo, asked from ``count`` fresh sockets."""
    seen: set[str] = set()
    for _ in range(count):
        query = dns.message.make_query("go.example.com", "A", use_edns=0, options=[TOKYO])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2, sock=sock)
        seen |= {rr.address for rrset in reply.answer for rr in rrset}
    return seen


def until(check: object, bound: float) -> float:
    """Seconds until ``check()`` is true, polling as fast as it goes (bounded)."""
    assert callable(check)
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > bound:
            raise SystemExit(f"no change after {bound} s")
    return time.monotonic() - started


def lag(http_port: int) -> tuple[float, float, list[tuple[str, float]]]:
    """The worker state lag histogram: count, mean seconds, and its buckets."""
    body, _ = get(http_port, "/metrics")
    count = total = 0.0
    buckets = []
    for line in body.splitlines():
        if line.startswith("mirror_router_worker_state_lag_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("mirror_router_worker_state_lag_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("mirror_router_worker_state_lag_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((le, float(line.split()[-1])))
    return count, (total / count if count else 0.0), buckets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--cpus", default="0,1", help="taskset list for mirror-router")
    args = p.parse_args()
    run = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    state = run / "state.toml"
    statefile.write(state, {})
    dns_port, http_port = free_port(), free_port()

    def start(run: Path, port: int, cpu: str) -> list[str]:
        zones = unprobed_zone(run)  # --no-probe
        return ["taskset", "-c", cpu, sys.executable, "-m", "router", "serve", "--zones",
                str(zones), "--no-probe", "--workers", str(args.workers), "--state", str(state),
                "--dns", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http_port}"]

    router = Server("mirror-router", ("taskset",), True, start)
    with started(router, run, dns_port, args.cpus, lambda: ready(http_port)) as running:
        pids = {get(http_port, "/healthz")[1] for _ in range(8 * args.workers)}
        print(f"mirror-router pid {running.proc.pid}, workers answering HTTP: {sorted(pids)}")
        if len(pids) < args.workers:
            print("  (not every worker answered those 8 x N connections: the kernel chose)")
        assert answers(dns_port) == {ADDRESS["tyo"]}
        times = []
        for i in range(args.changes):
            drained = i % 2 == 0
            want = {ADDRESS["bj" if drained else "tyo"]}
            statefile.write(state, {"tyo": Override.DRAIN} if drained else {})
            times.append(until(lambda want=want: answers(dns_port) == want, 5.0))
            time.sleep(0.1 + (i % 5) * 0.05)  # not in step with the file's polling
        count, mean, buckets = lag(http_port)
    q = statistics.quantiles(times, n=10)
    print(f"\nstate file written -> every worker answers with it ({args.changes} changes, "
          f"{args.workers} workers):")
    print(f"  min {min(times) * 1000:.0f} ms  median {statistics.median(times) * 1000:.0f} ms"
          f"  p90 {q[-1] * 1000:.0f} ms  max {max(times) * 1000:.0f} ms")
    print(f"supervisor snapshot -> worker serving it (worker_state_lag_seconds, {count:.0f} "
          f"hand-ons): mean {mean * 1000:.2f} ms")
    print("  buckets (le: count): " + ", ".join(f"{le}: {n:.0f}" for le, n in buckets))
    print(f"\nreproduce: .venv/bin/python bench/workers.py --workers {args.workers} "
          f"--changes {args.changes} --cpus {args.cpus}   (on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
