"""What ``bench/dns`` and ``bench/http`` share: the servers' start and stop (pinned to a
CPU), the loopback health endpoint, the configs rendered into the run folder, the CPU and
memory readings from /proc, the best-of-runs rows, and the tables.
"""

from __future__ import annotations

import contextlib
import cProfile
import ipaddress
import os
import pstats
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Generic, Protocol, TypeVar

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "bench" / "conf"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from queries import subnets  # noqa: E402

from router.core.geo import SPECIAL, embedded_database  # noqa: E402

# ------------------------------------------------------------------ health endpoint


class Health:
    """GET /health/<address>: 200, or 503 for the addresses in ``down`` (loopback only)."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                bad = self.path.rsplit("/", 1)[-1] in health.down
                self.send_response(503 if bad else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # socketserver's 5 dropped a round of 100 checks' SYNs
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


# ------------------------------------------------------------------ the servers

Start = Callable[[Path, int, str], list[str]]  # (run folder, port, cpus) -> command


@dataclass(frozen=True)
class Server:
    name: str
    needs: tuple[str, ...]  # executables (or files: absolute paths)
    steered: bool  # answers by location (else one fixed answer)
    start: Start

    def available(self) -> bool:
        return all(Path(n).exists() if n.startswith("/") else shutil.which(n) for n in self.needs)


def chosen_servers(known: dict[str, Server], names: str) -> list[Server]:
    """The servers named (comma-separated) that are installed; a line for each that is not."""
    chosen = [known[n] for n in names.split(",")]
    for s in chosen:
        if not s.available():
            print(f"skipping {s.name}: {', '.join(s.needs)} not installed")
    return [s for s in chosen if s.available()]


@dataclass
class Running:
    proc: subprocess.Popen[str]
    command: str
    log: list[str] = field(default_factory=list)


def render(name: str, run: Path, values: dict[str, str]) -> Path:
    """Copy conf/NAME to the run folder with ``values`` (and @RUN@, @CONF@, @MMDB@) filled in.

    @RUN@ and @CONF@ are the rendered folder itself.
    """
    folder = run / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(CONF / name, folder)
    values = {"@RUN@": str(folder), "@CONF@": str(folder),
              "@MMDB@": str(embedded_database()), **values}
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for key, value in values.items():
                text = text.replace(key, value)
            path.write_text(text)
    return folder


def unprobed_zone(run: Path | None = None) -> Path:
    """The bench zone (conf/mirror-router) rendered into ``run`` (a new temporary folder
    when None) with a health URL nothing listens on: for in-process runs and --no-probe,
    where no check is ever made."""
    run = run or Path(tempfile.mkdtemp(prefix="bench-zone-"))
    return render("mirror-router", run, {"@HEALTH@": "http://127.0.0.1:9"})


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (at the time of asking)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


@contextlib.contextmanager
def started(server: Server, run: Path, port: int, cpu: str,
            ready: Callable[[], bool]) -> Iterator[Running]:
    """Start ``server`` pinned to ``cpu``, wait until ``ready()``, stop it on the way out."""
    command = server.start(run, port, cpu)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    running = Running(proc, shlex.join(command))
    assert proc.stderr is not None
    threading.Thread(target=lambda: running.log.extend(proc.stderr or []), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{server.name} did not come up:\n{''.join(running.log[-20:])}")
            time.sleep(0.2)
        for pid in [proc.pid, *children(proc.pid)]:  # knotd pins its own threads: re-pin
            subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)],
                           stdout=subprocess.DEVNULL, check=False)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Router:
    """A mirror-router started by ``router()``: its process, ports and log lines."""

    proc: subprocess.Popen[str]
    dns: int
    http: int
    log: list[str]

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]


@contextlib.contextmanager
def router(tree: Path, zones: Path, *extra: str, prefix: Sequence[str] = ()) -> Iterator[Router]:
    """``python -m router serve`` from the checkout ``tree`` on fresh loopback ports, JSON
    log collected, ready (or SystemExit with the log); SIGTERM (then kill) on the way out."""
    dns, http = free_port(), free_port()
    command = [*prefix, sys.executable, "-m", "router", "serve", "--zones", str(zones),
               "--dns", f"127.0.0.1:{dns}", "--http", f"127.0.0.1:{http}",
               "--trusted-proxy", "127.0.0.1/32", "--log-format", "json", *extra]
    proc = subprocess.Popen(command, cwd=tree, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stderr or []), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not any('"ready"' in line for line in log):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the router did not start:\n" + "".join(log[-20:]))
            time.sleep(0.1)
        yield Router(proc, dns, http, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_STORE: list[tuple[subprocess.Popen[bytes], str]] = []


def store_url() -> str:
    """A ``redis-server`` on a loopback port for this bench run (no persistence), started
    on first use and stopped when the bench exits: what the ``fleet`` servers share."""
    if not _STORE:
        import atexit
        port = free_port()
        folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", str(folder)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(proc.kill)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        _STORE.append((proc, f"redis://127.0.0.1:{port}/0"))
    return _STORE[0][1]


_PEERS: list[subprocess.Popen[bytes]] = []


def regional_fleet(zones: Path, run: Path) -> list[str]:
    """A fleet in two regions for a ``regions`` bench server: a peer node in region AS
    (its own process on the same zones and store, ``--no-probe``: it only beats, so it
    takes no CPU from the server's side to speak of; the last run's is stopped first) and
    the arguments that make the server the fleet's node in EU. With live nodes in two
    regions, every new client is mapped to the nearer region and judged by its verdicts."""
    import atexit
    for old in _PEERS:
        old.kill()
        old.wait()
    _PEERS.clear()
    config = run / "regions.toml"
    config.write_text(f'[fleet]\nstore = "{store_url()}"\nname = "{run.name}"\n')
    peer = subprocess.Popen([sys.executable, "-m", "router", "serve", "--zones", str(zones),
                             "--no-http", "--dns", "127.0.0.1:0", "--config", str(config),
                             "--node", "peer", "--region", "AS", "--no-probe"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(peer.kill)
    _PEERS.append(peer)
    return ["--config", str(config), "--node", "bench", "--region", "EU"]


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout
    return [int(p) for p in out.split()]


def prepare(client_cpu: str) -> None:
    """Stop the servers on SIGTERM too, and pin this script (and its threads) to the client."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    os.sched_setaffinity(0, cpus(client_cpu))


def cpus(text: str) -> set[int]:
    """``1``, ``0,1`` or ``0-3`` (taskset's list form) as a set of CPU numbers."""
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


# ------------------------------------------------------------------ measuring


def cpu_ticks(pid: int) -> int:
    total = 0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


class CpuShare:
    """The server's utime+stime (with its children) from now on, per second of wall time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks, self.began = cpu_ticks(pid), time.monotonic()

    def share(self) -> float:
        return (cpu_ticks(self.pid) - self.ticks) / os.sysconf("SC_CLK_TCK") / (
            time.monotonic() - self.began)


def memory_mb(pid: int, field_name: str) -> float:
    with contextlib.suppress(OSError):
        m = re.search(rf"{field_name}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        if m:
            return int(m.group(1)) / 1024
    return float("nan")


def peak_mb(pid: int) -> float:
    """The VmHWM of the process and its children, added up."""
    return sum(memory_mb(p, "VmHWM") for p in [pid, *children(pid)])


# ------------------------------------------------------------------ output


class Measured(Protocol):
    server: str
    job: str
    runs: list[float]  # the rate of every run (the row: the best)

    @property
    def rate(self) -> float: ...


R = TypeVar("R", bound=Measured)


def best_of(rows: Sequence[R]) -> list[R]:
    """One row per (server, job): the run with the highest rate, with every run's rate."""
    best: dict[tuple[str, str], R] = {}
    for row in rows:
        key = (row.server, row.job)
        runs = [*best[key].runs, row.rate] if key in best else [row.rate]
        if key not in best or row.rate > best[key].rate:
            best[key] = row
        best[key].runs = runs
    return list(best.values())


def all_runs(row: Measured) -> str:
    return " / ".join(f"{q:.0f}" for q in row.runs) if len(row.runs) > 1 else ""


@dataclass(frozen=True)
class Column(Generic[R]):
    title: str
    width: int  # right-aligned in this width; 0: left-aligned after two spaces, unpadded
    cell: Callable[[R], str]


def table(columns: Sequence[Column[R]], rows: Sequence[R], header: bool = True) -> list[str]:
    def line(cells: list[str]) -> str:
        return "".join(f"  {c}" if col.width == 0 else f"{c:<{-col.width}}" if col.width < 0
                       else f"{c:>{col.width}}" for col, c in zip(columns, cells, strict=True))

    out = [line([c.title for c in columns])] if header else []
    out += [line([c.cell(r) for c in columns]).rstrip() for r in rows]
    return out


def ratios(rows: Sequence[Measured], job_names: list[str], unit: str) -> list[str]:
    """mirror-router's rate over each peer's, per job."""
    rate = {(r.server, r.job): r.rate for r in rows}
    peers = sorted({r.server for r in rows} - {"mirror-router"}, key=[r.server for r in rows].index)
    out = [f"mirror-router {unit} / peer {unit}, same job, same run:",
           f"{'peer':<15}" + "".join(f"{j:>9}" for j in job_names)]
    for peer in peers:
        cells = [rate.get(("mirror-router", j), 0) / rate[(peer, j)] if rate.get((peer, j))
                 else 0 for j in job_names]
        out.append(f"{peer:<15}" + "".join(f"{c:>9.2f}" if c else f"{'-':>9}" for c in cells))
    return out


def round_ratios(runs: Sequence[Measured], job_names: list[str], unit: str) -> list[str]:
    """mirror-router's rate over each peer's in every round (rows in the order they were
    run, one per server and job a round), and the median of those: what one round's
    noise cannot decide."""
    rounds: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        rounds.setdefault((r.server, r.job), []).append(r.rate)
    peers = [s for s in dict.fromkeys(r.server for r in runs) if s != "mirror-router"]
    if not peers or len(rounds.get(("mirror-router", job_names[0]), [])) < 2:
        return []
    out = [f"mirror-router {unit} / peer {unit} in each round (same round), and the median:"]
    for peer in peers:
        for job in job_names:
            ours, theirs = rounds.get(("mirror-router", job), []), rounds.get((peer, job), [])
            each = [a / b for a, b in zip(ours, theirs, strict=False) if b]
            if each:
                out.append(f"{peer:<15}{job:<9}" + " ".join(f"{x:.2f}" for x in each)
                           + f"   median {statistics.median(each):.2f}")
    return out


def baseline(tree: Path, command: Sequence[str]) -> list[str]:
    """``command`` (a ``python -m router`` line) run from the checkout ``tree`` instead
    of this one: the same router before a change, measured in the same run as after."""
    i = list(command).index(sys.executable)  # run in the tree: ``-m`` imports from the cwd
    return [*command[:i], "env", "-C", str(tree), f"PYTHONPATH={tree}", *command[i:]]


Stages = dict[tuple[str, str], str]  # (file suffix, function) -> what a summary calls it


def profiled(label: str, make: Callable[[], Callable[[], None]], count: int, top: int,
             stages: Stages, unit: str) -> None:
    """Time ``make()``'s run of ``count`` ``unit``s, then profile another: the share of
    each of ``stages`` (cumulative; calls overlap) and, with ``top``, the costliest
    functions. For the in-process profiles, dns_profile.py and http_profile.py."""
    run = make()
    started = time.perf_counter()
    run()
    each = (time.perf_counter() - started) / count * 1e6
    print(f"\n== {label}: {each:.1f} us per {unit} ({1e6 / each:,.0f} per second)")
    profile = cProfile.Profile()
    profile.runcall(make())
    stats = pstats.Stats(profile)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    found = {(suffix, name): row for (path, _line, func), row in stats.stats.items()  # type: ignore[attr-defined]
             for suffix, name in stages if func == name and path.endswith(suffix)}
    print(f"   share of the profiled time (cumulative), {count} {unit}s:")
    for key, stage in stages.items():
        if key in found:
            row = found[key]
            print(f"   {stage:<52}{100 * row[3] / total:5.0f}%  ({row[1]} calls)")
    if top:
        stats.sort_stats("tottime").print_stats(top)


# ------------------------------------------------------------------ rules (issue: audience)

RULE_PREFIXES = 10_000  # client prefixes in the bench zone's rules (server "rules")
RULES_ZONE = """
[[services.go.targets]]
id = "uni"                      # private: only the clients of its 5,000 prefixes
url = "https://uni.mirror.example.net/dl/"
location = {{ lat = 52.52, lon = 13.40 }}
addresses = ["192.0.2.6"]
health_url = "{health}/health/192.0.2.6"
only_networks_file = "uni-nets.txt"

[[services.go.targets]]
id = "isp"                      # preferred for its ASes' clients
url = "https://isp.mirror.example.net/dl/"
location = {{ lat = 48.14, lon = 11.58 }}
addresses = ["192.0.2.7"]
health_url = "{health}/health/192.0.2.7"
asns = [{asns}]

[[services.go.routes]]
name = "lab"                    # 5,000 prefixes routed to Frankfurt first
networks_file = "lab-nets.txt"
targets = ["fra"]
"""


def with_capacities(zones: Path) -> None:
    """Give every target of the rendered bench zone a capacity far above what a bench
    sends (server "capacity"): the load is measured, pressures are published and read,
    nothing is shed. What capacities cost when no mirror is full."""
    zone = next(zones.glob("*.toml"))
    zone.write_text(zone.read_text().replace(
        "[[services.go.targets]]\n",
        "[[services.go.targets]]\ncapacity = { mbps = 1e8, requests = 1e8 }\n"))


def with_rules(zones: Path, health: str, prefixes: int = RULE_PREFIXES,
               rules: bool = True) -> list[str]:
    """Add rules to the rendered bench zone in ``zones``: a private target for half of
    ``prefixes`` client prefixes (/24 to /16, drawn over the routable IPv4 space), a route
    for the other half, a target preferred for 100 ASes, and an ASN database (a /17 each,
    2,000 ASes, written with mmdb-writer as the tests do). 1.0.0.0/8 (the Tokyo client
    of xff1 and ecs1) and the first client of xffmany and ecs50k stay outside every rule,
    so every job's check still holds. Returns serve's extra arguments (``--asn-db``).
    ``rules=False``: the same two targets without any rule (server "norules"), the
    comparison a rule's cost is measured against."""
    if not rules:
        zone = next(zones.glob("*.toml"))
        text = RULES_ZONE.format(health=health, asns="")
        text = "\n".join(line for line in text.splitlines()
                         if not line.startswith(("only_networks_file", "asns", "networks_file")))
        zone.write_text(zone.read_text() + text.split("[[services.go.routes]]")[0])
        return []
    from mmdb_writer import MMDBWriter  # the tests' writer (a dev dependency): here only
    from netaddr import IPNetwork, IPSet

    rnd = random.Random(25)
    special = [n for n in SPECIAL if n.version == 4]
    keep_out = {subnets(1)[0] >> 16}
    drawn: dict[str, None] = {}
    while len(drawn) < prefixes:
        length = rnd.choice((24, 24, 24, 23, 22, 20, 16))
        first = rnd.randrange(2 << 24, 224 << 24) >> (32 - length) << (32 - length)
        net = ipaddress.IPv4Network((first, length))
        if first >> 16 in keep_out or any(net.overlaps(s) for s in special):
            continue
        drawn[str(net)] = None
    listed = list(drawn)
    half = prefixes // 2
    (zones / "uni-nets.txt").write_text("# private\n" + "\n".join(listed[:half]) + "\n")
    (zones / "lab-nets.txt").write_text("# routed\n" + "\n".join(listed[half:]) + "\n")
    zone = next(zones.glob("*.toml"))
    asns = ", ".join(str(64512 + n) for n in range(0, 2000, 20))  # 100 of the 2,000
    zone.write_text(zone.read_text() + RULES_ZONE.format(health=health, asns=asns))
    db = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    for n in range(2 << 9, 224 << 9):  # every /17 from 2.0.0.0 up: 1.0.0.0/8 has no AS
        db.insert_network(IPSet([IPNetwork((n << 15, 17))]), {
            "autonomous_system_number": 64512 + n % 2000,
            "autonomous_system_organization": f"Bench AS {n % 2000}"})
    db.to_db_file(str(zones.parent / "asn.mmdb"))
    return ["--asn-db", str(zones.parent / "asn.mmdb")]


def with_targets(zones: Path, count: int, health: str) -> None:
    """Add ``count`` targets to the rendered bench zone in ``zones``, spread over the
    world's land by a fixed seed (Fedora's and openSUSE's mirror lists run to hundreds
    or thousands), each with one address in 198.18.0.0/15 and a health URL under
    ``health``: what a new client network costs as the targets grow."""
    rnd = random.Random(28)
    zone = next(zones.glob("*.toml"))
    lines = []
    for n in range(count):
        lat, lon = rnd.uniform(-45, 65), rnd.uniform(-125, 150)
        address = ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + n + 1)
        lines.append(f'[[services.go.targets]]\nid = "m{n}"\n'
                     f'url = "https://m{n}.mirror.example.net/dl/"\n'
                     f"location = {{ lat = {lat:.2f}, lon = {lon:.2f} }}\n"
                     f'addresses = ["{address}"]\nhealth_url = "{health}/health/{address}"\n')
    # checked every 30 s: 10,000 targets every 2 s would be 5,000 checks a second
    text = zone.read_text().replace('interval = "2s"', 'interval = "30s"')
    zone.write_text(text + "\n" + "\n".join(lines))

