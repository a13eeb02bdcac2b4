"""``serve --workers N``: N serving processes on SO_REUSEPORT sockets, one prober for all.

The supervisor (the process ``serve`` starts) loads and checks the zones, binds the
first worker's sockets with SO_REUSEPORT (fixing any port 0 for all), runs the one
``Monitor`` (prober and state file), and starts each worker as a fresh interpreter,
``python -m router.serve.worker``, with one end of a socketpair (``router.serve.channel``).
Over that channel go the settings, the supervisor's config (a worker never reads the zone
folder), every new health snapshot (looked for 20 times a second) and, once a second, the
other processes' counters; a worker sends back "ready" and, once a second, its own
counters. Every worker but the first at start-up binds its own SO_REUSEPORT sockets, and
only once it has its config and first snapshot: the kernel spreads queries only over
workers that read them.

A worker that dies is started again with the supervisor's current config (its last counts
are kept). SIGTERM and SIGINT are passed to every worker, which drains as a single
server does (a second signal cuts the drain short everywhere). SIGHUP reloads the zones
here, once, and hands the new config over in two phases: every worker stages it, then
every worker commits it; if one does not stage it in time, none serves it (the log says
``reload_failed``). SIGHUP is passed on for what each worker reads itself (certificate,
GeoIP database).

Health probing, the operator's state file, catalog fetches and the freshness probe run
once, here. A worker still checks files on mirrors for its own requests (a request may
wait for such a check), but every result goes through the supervisor to every other
worker's ledger, so what one worker learned no other worker asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from router import __version__
from router.core.availability import Ledger
from router.core.config import Config
from router.core.fleet import View
from router.core.health import Board, Key, Snapshot
from router.core.runtime import Reload
from router.core.speeds import Speeds, heard
from router.core.stats import Stats
from router.serve import channel as ch
from router.serve import notify
from router.serve.channel import Channel, Message
from router.serve.lifecycle import Lifecycle, first_of, first_round, run_loop
from router.serve.settings import Addresses, Settings, Sockets, claim, fmt
from router.serve.watching import inventory, monitor
from router.watch.monitor import Monitor
from router.watch.tasks import cancel

log = structlog.get_logger("router.serve.supervisor")

SNAPSHOT_POLL = 0.05  # seconds between looks for a new snapshot to hand on
STATS_EVERY = 1.0  # seconds between counter exchanges
STAGE_TIMEOUT = 10.0  # seconds every worker has to stage a reloaded config
STOP_GRACE = 5.0  # seconds a worker gets past the drain timeout before it is killed
FORCE_GRACE = 1.0  # ... once a second signal cut the drain short


@dataclass(slots=True)
class Slot:
    """One worker's place: restarted workers take the same index."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    stats: Stats = field(default_factory=Stats)
    ready: bool = False
    started: float = 0.0
    restarts: int = 0


class Supervisor(Lifecycle):
    def __init__(self, settings: Settings, count: int, log_format: str = "console",
                 log_level: str = "info") -> None:
        super().__init__(settings)
        self.count = count
        self.log_format, self.log_level = log_format, log_level
        self.slots = [Slot(i) for i in range(count)]
        self.board = Board()
        self.stats = Stats()  # this process's: the health checks
        self.retired = Stats()  # the last counts of workers that have exited
        self.config: Config | None = None
        self.last_reload: Reload | None = None
        self.serial = 0  # of the last config handed to the workers
        self.staged: dict[int, set[int]] = {}  # serial -> worker indexes that staged it
        self.staging = asyncio.Event()  # a Staged arrived
        self.monitor: Monitor | None = None
        self.ledger = Ledger()  # catalogs and file results, the whole machine's
        self.speeds = Speeds()  # what clients reported to every worker (core.speeds)
        self.ledger.journal = lambda event: self._post_all(ch.LedgerNews(event))
        self.inventory = inventory(settings, self.ledger, owns=self._verifies) \
            if settings.probe else None
        self.addresses = Addresses.of(settings)  # port 0 becomes a port at the first bind
        self.feeding = False  # the first probe round is done: snapshots go out
        self.stopping = False
        self.all_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def startup(self) -> None:
        config = self.config = await self.zones()
        self.claims = claim(self.addresses)
        first = self._bind()  # resolves any port 0, for every later worker too
        self.monitor = monitor(self.settings, self.board, self.stats, self._config,
                               lambda: self.stats.merged(self.retired,
                                                         *(s.stats for s in self.slots)))
        self.monitor.learned = lambda news: self._post_all(ch.AvoidanceNews(news))
        for slot in self.slots:
            await self._spawn(slot, first if slot.index == 0 else None)
        await first_round(self.monitor, self.inventory, config)
        self.feeding = True
        self._task(self._hand_on(), "snapshots")
        self._task(self._exchange(), "counters")
        if await first_of(self.all_ready.wait(), self.signals.stop.wait()) == 0:
            log.info("ready", version=__version__, workers=self.count,
                     pids=[s.proc.pid for s in self.slots if s.proc],
                     dns=[fmt(a) for a in self.addresses.dns],
                     http=[fmt(a) for a in self.addresses.http],
                     admin=[fmt(a) for a in self.addresses.admin],
                     https=[fmt(a) for a in self.addresses.https],
                     zones=[z.origin for z in config.zones], probing=self.settings.probe)

    async def reload(self) -> bool:
        """The zones here, handed to every worker; then SIGHUP passed on, for what the
        workers read themselves (certificate, GeoIP database)."""
        ok = await super().reload()
        self._signal_all(signal.SIGHUP)
        return ok

    async def install(self, config: Config) -> str | None:
        """Every worker stages ``config``, then every worker commits it; or none does."""
        self.serial += 1
        serial, live = self.serial, [s for s in self.slots if s.channel is not None]
        self.staged[serial] = set()
        try:
            await self._to_all(lambda _slot: ch.Stage(serial, config))
            deadline = time.monotonic() + STAGE_TIMEOUT
            while not {s.index for s in live} <= self.staged[serial]:
                missing = [s.index for s in live if s.index not in self.staged[serial]]
                if time.monotonic() > deadline or self.signals.stop.is_set():
                    return f"workers {missing} did not stage the new config in time"
                self.staging.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.staging.wait(), 0.5)
        finally:
            del self.staged[serial]
        self.config = config  # a worker started from now on gets it in its Hello
        for slot in self.slots:
            if slot.channel is not None:
                if slot not in live:  # started meanwhile, on the old config
                    slot.channel.post(ch.Stage(serial, config))
                slot.channel.post(ch.Commit(serial))
        if self.monitor is not None:
            self.monitor.reconfigure(config)
        if self.inventory is not None:
            self.inventory.reconfigure(config)
        return None

    def record(self, outcome: Reload) -> None:
        """Kept for workers started later, and told to every worker now."""
        self.last_reload = outcome
        self._post_all(ch.ReloadNews(outcome))

    async def shutdown(self) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        procs = [s.proc for s in self.slots if s.proc is not None]
        if not await self.drain(_exited(procs, self.settings.drain_timeout + STOP_GRACE)):
            self._signal_all(signal.SIGTERM)  # their second signal: cut their drains short
            await _exited(procs, FORCE_GRACE)
        for p in procs:
            if p.returncode is None:
                log.error("worker_killed", pid=p.pid)
                p.kill()
                await p.wait()
        await cancel(self._tasks)
        if self.monitor is not None:
            await self.monitor.close()
        if self.inventory is not None:
            await self.inventory.close()
        log.info("stopped", workers=self.count)

    def _verifies(self, key: Key) -> bool:
        """Whether this machine verifies ``key``'s copies (in a fleet: one node each)."""
        return self.monitor.verifies(key) if self.monitor is not None else True

    def _config(self) -> Config:
        assert self.config is not None
        return self.config

    def _task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _bind(self) -> Sockets:
        """One worker's sockets; the first call fixes the ports for all the others."""
        sockets = Sockets.bind(self.settings, self.addresses, reuse_port=True)
        self.addresses = sockets.addresses()
        return sockets

    async def _spawn(self, slot: Slot, sockets: Sockets | None = None) -> None:
        """Start a worker: on ``sockets`` (the first, at start-up), else on sockets it
        binds itself once it is ready."""
        sockets = sockets or Sockets((), ())
        mine, theirs = socket.socketpair()
        args = [sys.executable, "-m", "router.serve.worker", "--channel", str(theirs.fileno()),
                "--dns", ",".join(f"{u.fileno()}:{t.fileno()}" for u, t in sockets.dns),
                "--http", ",".join(str(s.fileno()) for s in sockets.http),
                "--admin", ",".join(str(s.fileno()) for s in sockets.admin),
                "--https", ",".join(str(s.fileno()) for s in sockets.https)]
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                *args, pass_fds=[theirs.fileno(), *(s.fileno() for s in sockets.all())],
                env={k: v for k, v in os.environ.items() if k != notify.VARIABLE})
        finally:
            theirs.close()
            sockets.close()
        slot.started, slot.ready = time.monotonic(), False
        channel = slot.channel = await Channel.open(mine)
        await channel.send(ch.Hello(slot.index, self.settings, self.log_format, self.log_level,
                                    self._config(), self.addresses, self.last_reload))
        for event in self.ledger.events():  # catch up: catalogs and what is known of files
            channel.post(ch.LedgerNews(event))
        if self.feeding:
            await channel.send(self._snapshot_message())
        self._task(self._listen(slot, channel), f"worker {slot.index}")
        self._task(self._watch(slot, slot.proc), f"watch {slot.index}")
        log.info("worker_started", worker=slot.index, pid=slot.proc.pid)

    def _snapshot_message(self) -> ch.NewSnapshot:
        return ch.NewSnapshot(self.board.snapshot, time.time())

    async def _listen(self, slot: Slot, channel: Channel) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                self._heard(slot, await channel.receive())

    def _heard(self, slot: Slot, message: Message) -> None:
        match message:
            case ch.Counts(stats):
                slot.stats = stats
            case ch.LedgerNews(event):  # one worker's file check: tell the others
                self.ledger.apply(event, self._config())
                self._post_others(slot, message)
            case ch.AvoidanceNews(news):  # the others, and the fleet
                self._post_others(slot, message)
                if self.monitor is not None:
                    self.monitor.tell(news)
            case ch.SpeedNews(report):  # charged here (snapshots carry it), shown by all
                self._post_others(slot, message)
                service = self._config().service(report.service)
                if service is not None:
                    heard(self.speeds, self.board, service, report)
            case ch.Staged(serial):
                if serial in self.staged:
                    self.staged[serial].add(slot.index)
                    self.staging.set()
            case ch.Ready():
                slot.ready = True
                if all(s.ready for s in self.slots):
                    self.all_ready.set()
            case _:
                log.warning("channel_unexpected", worker=slot.index,
                            message=type(message).__name__)

    async def _watch(self, slot: Slot, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self.stopping:
            return
        log.error("worker_exited", worker=slot.index, pid=proc.pid, code=code)
        self.retired = self.retired.merged(slot.stats)
        slot.stats, slot.ready, slot.channel = Stats(), False, None
        if time.monotonic() - slot.started > 30:
            slot.restarts = 0
        delay = min(10.0, 0.25 * 2 ** slot.restarts)  # back off a worker that cannot live
        slot.restarts += 1
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(slot)

    async def _hand_on(self) -> None:
        """Every new snapshot (and state file news) to every worker, within 50 ms."""
        sent: Snapshot | None = None
        state: ch.StateNews | None = None
        fleet = _FleetNews()
        figures = self.board.figures
        while True:
            if self.board.snapshot is not sent:
                sent = self.board.snapshot
                await self._to_all(lambda _slot: self._snapshot_message())
            if self.board.figures is not figures:  # at most once a tick (capacity.TICK)
                figures = self.board.figures
                await self._to_all(_constant(ch.LoadNews(dict(figures))))
            file = self.monitor.state if self.monitor else None
            news = None if file is None else ch.StateNews(file.path, file.error, file.windows)
            if news is not None and news != state:
                state = news
                await self._to_all(_constant(news))
            view = self.monitor.fleet_view() if self.monitor else None
            if fleet.due(view):
                assert view is not None
                await self._to_all(_constant(ch.FleetNews(view)))
            await asyncio.sleep(SNAPSHOT_POLL)

    async def _exchange(self) -> None:
        """Once a second, every worker learns the others' counts (for /metrics, /status)."""
        while True:
            await asyncio.sleep(STATS_EVERY)
            await self._to_all(lambda slot: ch.PeerCounts((
                self.stats, self.retired, *(s.stats for s in self.slots if s is not slot))))

    def _post_others(self, slot: Slot, message: Message) -> None:
        for other in self.slots:
            if other is not slot and other.channel is not None:
                other.channel.post(message)

    def _post_all(self, message: Message) -> None:
        for slot in self.slots:
            if slot.channel is not None:
                slot.channel.post(message)

    async def _to_all(self, message: Callable[[Slot], Message]) -> None:
        for slot in self.slots:
            if slot.channel is not None:
                with contextlib.suppress(ConnectionError):
                    await slot.channel.send(message(slot))

    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(sig)


def _constant(message: Message) -> Callable[[Slot], Message]:
    return lambda _slot: message


async def _exited(procs: list[asyncio.subprocess.Process], timeout: float) -> None:
    """Until every process has exited, or ``timeout`` seconds."""
    waits = [asyncio.ensure_future(p.wait()) for p in procs]
    if waits:
        await asyncio.wait(waits, timeout=timeout)


def run(settings: Settings, count: int, log_format: str, log_level: str) -> int:
    return run_loop(Supervisor(settings, count, log_format, log_level).run())


class _FleetNews:
    """When the fleet's view is worth handing on: at once when the store comes or goes,
    else at most once a second while it changes (its clock skew moves every round)."""

    def __init__(self) -> None:
        self.sent: View | None = None
        self.at = 0.0

    def due(self, view: View | None) -> bool:
        if view is None or view == self.sent:
            return False
        flipped = self.sent is None or view.connected != self.sent.connected
        if not flipped and time.monotonic() - self.at < 1.0:
            return False
        self.sent, self.at = view, time.monotonic()
        return True
