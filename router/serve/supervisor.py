"""``serve --workers N``: N serving processes on SO_REUSEPORT sockets, one prober for all.

The supervisor (the process ``serve`` starts) loads and checks the zones, binds every
worker's sockets with SO_REUSEPORT (the kernel spreads datagrams and connections over
the workers), runs the one ``Monitor`` (prober and state file), and starts each worker
as a fresh interpreter, ``python -m router.serve.supervisor``, handing it its sockets and one end
of a socketpair. Over that channel the supervisor sends the settings, then every new
health snapshot (looked for 20 times a second) and, once a second, the other processes'
counters; a worker sends back "ready" and, once a second, its own counters.

A worker that dies is started again on new sockets on the same ports (its last counts
are kept). SIGTERM and SIGINT are passed to every worker, which drains as a single
server does; SIGHUP reloads the supervisor's zones and is passed on.

Health probing, the operator's state file, catalog fetches and the freshness probe run
once, here. A worker still checks files on mirrors for its own requests (a request may
wait for such a check), but every result goes through the supervisor to every other
worker's ledger, so what one worker learned no other worker asks again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from router import __version__
from router import log as logging_setup
from router.core.availability import Ledger
from router.core.config import Config, ConfigError, load
from router.core.geo import GeoError, Locator
from router.core.health import Board, Snapshot
from router.core.runtime import Runtime
from router.core.stats import Stats
from router.dns.listener import bind
from router.serve.server import (
    Server,
    Settings,
    Sockets,
    bind_http,
    fmt,
    run_loop,
    serve_until_stopped,
)
from router.watch.inventory import Inventory
from router.watch.monitor import Monitor

log = structlog.get_logger("router.serve.supervisor")

SNAPSHOT_POLL = 0.05  # seconds between looks for a new snapshot to hand on
STATS_EVERY = 1.0  # seconds between counter exchanges
STOP_GRACE = 5.0  # seconds a worker gets past the drain timeout before it is killed


# ---------------------------------------------------------------- the channel


async def send(writer: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    writer.write(len(data).to_bytes(4, "big") + data)
    await writer.drain()


def post(writer: asyncio.StreamWriter | None, message: tuple[Any, ...]) -> None:
    """``send`` without waiting for the buffer to drain (for callbacks that cannot wait)."""
    if writer is not None and not writer.is_closing():
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        writer.write(len(data).to_bytes(4, "big") + data)


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    size = int.from_bytes(await reader.readexactly(4), "big")
    message = pickle.loads(await reader.readexactly(size))  # our own process, our own pipe
    assert isinstance(message, tuple)
    return message


# ---------------------------------------------------------------- the worker side


@dataclass(slots=True)
class RemoteState:
    """The supervisor's state file, as the status page shows it."""

    path: Path
    error: str | None


class Feed:
    """A worker's ``Source``: the supervisor's snapshots instead of a prober."""

    def __init__(self, runtime: Runtime, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, on_lost: Callable[[], None]) -> None:
        self.runtime = runtime
        self.reader, self.writer = reader, writer
        self.on_lost = on_lost
        self.state: RemoteState | None = None
        self._first = asyncio.Event()
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # What this worker's own file checks learn, every other process learns too.
        runtime.ledger.journal = lambda event: post(writer, ("ledger", event))

    async def start(self) -> None:
        """Wait for the supervisor's first snapshot (its first probe round)."""
        self._tasks = [asyncio.create_task(self._read(), name="feed"),
                       asyncio.create_task(self._report(), name="feed report")]
        first = asyncio.ensure_future(self._first.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        await asyncio.wait({first, lost}, return_when=asyncio.FIRST_COMPLETED)
        first.cancel()
        lost.cancel()
        if not self._first.is_set():
            raise OSError("the supervisor went away before the first snapshot")

    async def ready(self, dns: list[str], http: list[str]) -> None:
        await send(self.writer, ("ready", dns, http, os.getpid()))

    def reconfigure(self, config: Config) -> None:
        """Nothing to do: the supervisor follows the zones and sends what follows."""

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.writer.close()

    async def _read(self) -> None:
        try:
            while True:
                self._apply(await receive(self.reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.error("supervisor_lost")
            self._lost.set()
            self.on_lost()

    def _apply(self, message: tuple[Any, ...]) -> None:
        tag = message[0]
        if tag == "snapshot":
            self.runtime.board.adopt(Snapshot.from_wire(message[1]))
            self.runtime.stats.state_lag.observe(max(0.0, time.time() - message[2]))
            self._first.set()
        elif tag == "ledger":
            self.runtime.ledger.apply(message[1], self.runtime.config)
        elif tag == "peers":
            self.runtime.peers = message[1]
        elif tag == "state":
            self.state = self.runtime.state = RemoteState(message[1], message[2])

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(STATS_EVERY)
            with contextlib.suppress(ConnectionError):
                self.runtime.sample()
                await send(self.writer, ("stats", self.runtime.stats))


async def _serve_worker(channel: socket.socket, sockets: Sockets) -> int:
    reader, writer = await asyncio.open_connection(sock=channel)
    _tag, index, settings, log_format, log_level = await receive(reader)
    logging_setup.configure(log_format, log_level)
    structlog.contextvars.bind_contextvars(worker=index)
    server: Server

    def feed(runtime: Runtime) -> Feed:
        return Feed(runtime, reader, writer, on_lost=server.stop.set)

    server = Server(settings, sockets=sockets, feed=feed)
    return await server.run()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m router.serve.supervisor --channel FD --dns UDP:TCP,... --http FD,...``."""
    p = argparse.ArgumentParser(prog="python -m router.serve.supervisor")
    p.add_argument("--channel", type=int, required=True)
    p.add_argument("--dns", default="")
    p.add_argument("--http", default="")
    args = p.parse_args(argv)
    pairs = [pair.split(":") for pair in args.dns.split(",") if pair]
    sockets = Sockets(
        dns=tuple((socket.socket(fileno=int(u)), socket.socket(fileno=int(t))) for u, t in pairs),
        http=tuple(socket.socket(fileno=int(f)) for f in args.http.split(",") if f))
    return run_loop(_serve_worker(socket.socket(fileno=args.channel), sockets))


# ---------------------------------------------------------------- the supervisor


@dataclass(slots=True)
class Slot:
    """One worker's place: restarted workers take the same index."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    stats: Stats = field(default_factory=Stats)
    ready: bool = False
    started: float = 0.0
    restarts: int = 0


class Supervisor:
    def __init__(self, settings: Settings, count: int, log_format: str = "console",
                 log_level: str = "info") -> None:
        self.settings = settings
        self.count = count
        self.log_format, self.log_level = log_format, log_level
        self.stop = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.slots = [Slot(i) for i in range(count)]
        self.board = Board()
        self.stats = Stats()  # this process's: the health checks
        self.retired = Stats()  # the last counts of workers that have exited
        self.config: Config | None = None
        self.monitor: Monitor | None = None
        self.ledger = Ledger()  # catalogs and file results, the whole machine's
        self.ledger.journal = lambda event: self._post_all(("ledger", event))
        self.inventory = Inventory(self.ledger) if settings.probe else None
        self.dns = list(settings.dns)
        self.http = list(settings.http)
        self.feeding = False  # the first probe round is done: snapshots go out
        self.stopping = False
        self.all_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        try:
            config = self.config = load(self.settings.zones)
            Locator(self.settings.geoip).close()  # a bad database fails here, not N times
            first = self._bind()  # resolves any port 0, for every later worker too
        except (ConfigError, GeoError, OSError) as e:
            log.error("startup_failed", error=str(e))
            return 1
        self.monitor = Monitor(self.board, self.stats, self._config, probe=self.settings.probe,
                               state=self.settings.state, ca_file=self.settings.ca_file)
        for slot in self.slots:
            await self._spawn(slot, first if slot.index == 0 else None)
        await asyncio.gather(self.monitor.start(), self._first_catalogs(config))
        self.feeding = True
        self._task(self._hand_on(), "snapshots")
        self._task(self._exchange(), "counters")
        if await self._wait_ready():
            log.info("ready", version=__version__, workers=self.count,
                     pids=[s.proc.pid for s in self.slots if s.proc],
                     dns=[fmt(a) for a in self.dns], http=[fmt(a) for a in self.http],
                     zones=[z.origin for z in config.zones], probing=self.settings.probe)
            await serve_until_stopped(self.stop, self.reload_requested, self._reload)
        await self._shutdown()
        return 0

    async def _first_catalogs(self, config: Config) -> None:
        """Fetch every catalog once before the workers answer (their ledgers are told)."""
        if self.inventory is not None:
            await self.inventory.start(config)
            await self.inventory.first_fetch()

    def _config(self) -> Config:
        assert self.config is not None
        return self.config

    def _task(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _bind(self) -> Sockets:
        """One worker's sockets; the first call fixes the ports for all the others."""
        s = self.settings
        dns = tuple(bind(host, port, reuse_port=True, rcvbuf=s.rcvbuf) for host, port in self.dns)
        http = tuple(bind_http(host, port, reuse_port=True) for host, port in self.http)
        self.dns = [(host, udp.getsockname()[1]) for (host, _), (udp, _t) in zip(
            self.dns, dns, strict=True)]
        self.http = [(host, sock.getsockname()[1]) for (host, _), sock in zip(
            self.http, http, strict=True)]
        return Sockets(dns, http)

    async def _spawn(self, slot: Slot, sockets: Sockets | None = None) -> None:
        sockets = sockets or self._bind()
        mine, theirs = socket.socketpair()
        fds = [theirs.fileno(), *(s.fileno() for pair in sockets.dns for s in pair),
               *(s.fileno() for s in sockets.http)]
        args = [sys.executable, "-m", "router.serve.supervisor", "--channel", str(theirs.fileno()),
                "--dns", ",".join(f"{u.fileno()}:{t.fileno()}" for u, t in sockets.dns),
                "--http", ",".join(str(s.fileno()) for s in sockets.http)]
        try:
            slot.proc = await asyncio.create_subprocess_exec(*args, pass_fds=fds)
        finally:
            for sock in (theirs, *(s for pair in sockets.dns for s in pair), *sockets.http):
                sock.close()
        slot.started, slot.ready = time.monotonic(), False
        reader, slot.writer = await asyncio.open_connection(sock=mine)
        await send(slot.writer, ("hello", slot.index, self.settings, self.log_format,
                                 self.log_level))
        for event in self.ledger.events():  # catch up: catalogs and what is known of files
            post(slot.writer, ("ledger", event))
        if self.feeding:
            await send(slot.writer, self._snapshot_message())
        self._task(self._listen(slot, reader), f"worker {slot.index}")
        self._task(self._watch(slot, slot.proc), f"watch {slot.index}")
        log.info("worker_started", worker=slot.index, pid=slot.proc.pid)

    def _snapshot_message(self) -> tuple[Any, ...]:
        return ("snapshot", self.board.snapshot.to_wire(), time.time())

    async def _listen(self, slot: Slot, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                message = await receive(reader)
                if message[0] == "stats":
                    slot.stats = message[1]
                elif message[0] == "ledger":  # one worker's file check: tell the others
                    self.ledger.apply(message[1], self._config())
                    for other in self.slots:
                        if other is not slot:
                            post(other.writer, message)
                elif message[0] == "ready":
                    slot.ready = True
                    if all(s.ready for s in self.slots):
                        self.all_ready.set()

    async def _watch(self, slot: Slot, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self.stopping:
            return
        log.error("worker_exited", worker=slot.index, pid=proc.pid, code=code)
        self.retired = self.retired.merged(slot.stats)
        slot.stats, slot.ready, slot.writer = Stats(), False, None
        if time.monotonic() - slot.started > 30:
            slot.restarts = 0
        delay = min(10.0, 0.25 * 2 ** slot.restarts)  # back off a worker that cannot live
        slot.restarts += 1
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(slot)

    async def _wait_ready(self) -> bool:
        ready = asyncio.ensure_future(self.all_ready.wait())
        stop = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        stop.cancel()
        return not self.stop.is_set()

    async def _hand_on(self) -> None:
        """Every new snapshot (and state file news) to every worker, within 50 ms."""
        sent: Snapshot | None = None
        state: tuple[Any, ...] | None = None
        while True:
            if self.board.snapshot is not sent:
                sent = self.board.snapshot
                await self._to_all(lambda _slot: self._snapshot_message())
            file = self.monitor.state if self.monitor else None
            news = None if file is None else ("state", file.path, file.error)
            if news is not None and news != state:
                state = news
                await self._to_all(_constant(news))
            await asyncio.sleep(SNAPSHOT_POLL)

    async def _exchange(self) -> None:
        """Once a second, every worker learns the others' counts (for /metrics, /status)."""
        while True:
            await asyncio.sleep(STATS_EVERY)
            await self._to_all(lambda slot: ("peers", (
                self.stats, self.retired, *(s.stats for s in self.slots if s is not slot))))

    def _post_all(self, message: tuple[Any, ...]) -> None:
        for slot in self.slots:
            post(slot.writer, message)

    async def _to_all(self, message: Callable[[Slot], tuple[Any, ...]]) -> None:
        for slot in self.slots:
            if slot.writer is not None:
                with contextlib.suppress(ConnectionError):
                    await send(slot.writer, message(slot))

    def _reload(self) -> None:
        try:
            config = load(self.settings.zones)
        except ConfigError as e:
            log.error("reload_failed", problems=[str(p) for p in e.problems],
                      keeping="the previous config")
            return
        self.config = config
        if self.monitor is not None:
            self.monitor.reconfigure(config)
        if self.inventory is not None:
            self.inventory.reconfigure(config)
        self._signal_all(signal.SIGHUP)
        log.info("reloaded", zones=[z.origin for z in config.zones], workers=self.count)

    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(sig)

    async def _shutdown(self) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        procs = [s.proc for s in self.slots if s.proc is not None]
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        if waits:
            await asyncio.wait(waits, timeout=self.settings.drain_timeout + STOP_GRACE)
        for p in procs:
            if p.returncode is None:
                log.error("worker_killed", pid=p.pid)
                p.kill()
                await p.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.monitor is not None:
            await self.monitor.close()
        if self.inventory is not None:
            await self.inventory.close()
        log.info("stopped", workers=self.count)


def _constant(message: tuple[Any, ...]) -> Callable[[Slot], tuple[Any, ...]]:
    return lambda _slot: message


def run(settings: Settings, count: int, log_format: str, log_level: str) -> int:
    return run_loop(Supervisor(settings, count, log_format, log_level).run())


if __name__ == "__main__":
    sys.exit(worker_main())
