"""The life of a serving process, written once for the single server and the ``--workers``
supervisor (after uvicorn's ``Server``): start up, serve until stopped (reloading the
zones on SIGHUP), shut down.

Signal handlers only set events. SIGTERM or SIGINT starts the drain; a second one
during the drain cuts it short, as uvicorn does. SIGHUP asks for a reload, which checks
the zone folder first and keeps the old config on any problem.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import structlog

from router.core.audience import asn_problems
from router.core.config import Config, ConfigError
from router.core.fleet import View
from router.core.geo import Locator
from router.core.runtime import Reload, StateView
from router.core.zonefile import load
from router.dns import dnssec
from router.errors import RouterError
from router.serve.notify import notify, reloading
from router.serve.settings import Settings
from router.serve.tls import certificate_files, server_context
from router.watch.check import tls_context
from router.watch.files import FileWatch, off_loop, stamp
from router.watch.inventory import Inventory

log = structlog.get_logger("router.serve")

LISTS_WATCH_EVERY = 1.0  # seconds between two looks at the prefix files a config read
READ_TIMEOUT = 30.0  # seconds a reload's read of the zone folder may take (a FIFO, a
# dead mount): past it, the old config keeps serving and the read is left behind

# What stops a start-up with a clear message instead of a traceback: our errors name the
# file or the address; an OSError names what the system refused.
STARTUP_ERRORS = (RouterError, OSError)


class Source(Protocol):
    """What feeds the health board: a ``Monitor`` (prober and state file) in the process
    that probes, or the supervisor's snapshots in a worker (``router.serve.worker``)."""

    @property
    def state(self) -> StateView | None: ...

    def fleet_view(self) -> View | None: ...
    async def start(self) -> None: ...
    async def ready(self, dns: list[str], http: list[str]) -> None: ...
    def reconfigure(self, config: Config) -> None: ...
    async def close(self) -> None: ...


class Signals:
    """``stop`` on SIGTERM/SIGINT, ``force`` on a second one, ``reload`` on SIGHUP."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self.reload = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload.set)

    def stopping(self, sig: int = signal.SIGTERM) -> None:
        name = signal.Signals(sig).name
        if self.stop.is_set():
            log.warning("drain_cut_short", signal=name)
            self.force.set()
        else:
            log.info("stopping", signal=name)
        self.stop.set()


async def first_of(*waits: Awaitable[object]) -> int:
    """Wait until the first of ``waits`` is done, cancel the others; its position."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    first = next(i for i, task in enumerate(tasks) if task in done)
    tasks[first].result()  # its exception, if it raised
    return first


def check_files(settings: Settings) -> None:
    """The files ``serve`` was given, read once before anything listens: an error names
    the file (the zones are read by ``startup()``)."""
    if settings.ca_file is not None:
        tls_context(settings.ca_file)
    Locator(settings.geoip).close()
    if settings.https:  # the supervisor too: its workers would fail one after the other
        server_context(*certificate_files(settings))


async def first_round(source: Source, inventory: Inventory | None, config: Config) -> None:
    """Before ready: the first probe round (or the supervisor's first snapshot), and every
    catalog fetched once (--no-probe, or a worker: none here). If one fails, the other
    is cancelled and the first error is raised."""
    async def catalogs() -> None:
        if inventory is not None:
            await inventory.start(config)
            await inventory.first_fetch()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(source.start())
            group.create_task(catalogs())
    except BaseExceptionGroup as e:
        raise e.exceptions[0] from None


class Lifecycle(ABC):
    """Start-up, serving, shutdown; ``run()`` is the whole life and its exit code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signals = Signals()
        self.claims: list[socket.socket] = []  # our listen addresses, ours alone
        self.lists: tuple[Path, ...] = ()  # the prefix files the zones last read named
        self.lists_watch: FileWatch | None = None  # ... watched: a change is a SIGHUP

    async def run(self) -> int:
        self.signals.install()
        try:
            check_files(self.settings)
            await self.startup()
        except STARTUP_ERRORS as e:
            problems = _problems(e)
            for problem in problems:  # one line each, as `mirror-router check` prints them
                log.error("startup_problem", problem=problem)
            log.error("startup_failed", problems=len(problems))
            await self.shutdown()
            return 1
        if not self.signals.stop.is_set():
            notify("READY=1", "STATUS=serving")
        await self.watch_lists()
        await self.serve()
        notify("STOPPING=1")
        if self.lists_watch is not None:
            await self.lists_watch.stop()
        await self.shutdown()
        return 0

    async def serve(self) -> None:
        """Until stopped, reload each time SIGHUP asks for it."""
        signals = self.signals
        while not signals.stop.is_set():
            await first_of(signals.stop.wait(), signals.reload.wait())
            if signals.reload.is_set() and not signals.stop.is_set():
                signals.reload.clear()
                reloading()
                reload = asyncio.ensure_future(self.reload())
                if await first_of(reload, signals.stop.wait()) == 1:
                    break  # stopping: a reload still reading is left behind
                ok = reload.result()
                notify("READY=1", "STATUS=serving" if ok else
                       "STATUS=serving the previous config: the reload failed")

    async def drain(self, work: Awaitable[object]) -> bool:
        """Wait for ``work`` unless a second SIGTERM/SIGINT cuts it short (then False)."""
        return await first_of(work, self.signals.force.wait()) == 0

    async def reload(self) -> bool:
        """Load the zones again and switch to them; on any problem keep the old config."""
        try:
            config = await self.zones()
        except (ConfigError, TimeoutError) as e:
            problems = _problems(e)
            log.error("reload_failed", problems=problems, keeping="the previous config")
            self.record(Reload(False, time.time(), tuple(problems)))
            return False
        problem = await self.install(config)
        if problem is not None:
            log.error("reload_failed", problems=[problem], keeping="the previous config")
            self.record(Reload(False, time.time(), (problem,)))
            return False
        self.record(Reload(True, time.time()))
        log.info("reloaded", zones=[z.origin for z in config.zones],
                 services=len(config.services))
        await self.watch_lists()
        return True

    async def watch_lists(self) -> None:
        """Watch the prefix files (``networks_file``) the zones last read named: a change
        that has stood still asks for a reload, as SIGHUP does (the zone files themselves
        are reloaded on SIGHUP only: an edit in progress is never half read)."""
        watch = self.lists_watch
        if watch is not None and watch.files == self.lists:
            return
        if watch is not None:
            await watch.stop()
        self.lists_watch = None
        if self.lists:
            self.lists_watch = FileWatch(self.lists, self._lists_changed, LISTS_WATCH_EVERY)
            self.lists_watch.start()

    async def _lists_changed(self) -> None:
        assert self.lists_watch is not None
        self.lists_watch.loaded = stamp(*self.lists_watch.files)
        log.info("lists_changed", files=[str(f) for f in self.lists_watch.files])
        self.signals.reload.set()

    @abstractmethod
    def record(self, outcome: Reload) -> None:
        """Keep how a reload went, for /metrics and /status."""

    async def zones(self) -> Config:
        """The zone folder, read off the loop and bounded (``TimeoutError`` past it)."""
        zones = self.settings.zones
        asn = self.settings.asn_db is not None
        config = await off_loop(lambda: checked(load(zones), asn), READ_TIMEOUT, str(zones))
        self.lists = config.lists
        return config

    @abstractmethod
    async def startup(self) -> None:
        """Bind, load, run the first round; return once serving (or stopped meanwhile)."""

    @abstractmethod
    async def install(self, config: Config) -> str | None:
        """Serve a new, checked config; or say why not (then the old one stays)."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Stop listening, stop watching, drain (cut short by a second signal)."""


def _problems(error: Exception) -> list[str]:
    """What went wrong, one line each: every problem of a config, else the error."""
    return [str(p) for p in error.problems] if isinstance(error, ConfigError) else [str(error)]


GC_YOUNG = 20_000  # allocations between two collections of the young generation


def settle_memory() -> None:
    """Once started: what start-up made lives as long as the process, so it is moved out
    of the collector's way (``gc.freeze()``, as gunicorn and Instagram do), and the young
    generation is collected every 20,000 allocations instead of CPython's 700. With every
    request allocating a hundred objects or so, the default collected the in-flight
    requests' objects every few requests and promoted them to be traversed again: a
    redirector seeing new clients (bench/http xffmany) served 8,300 req/s with a p99 of
    79 ms under the default, 9,100 and 23 ms with this. Garbage in cycles waits a little
    longer; nothing else changes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed, else on the stdlib loop."""
    try:
        import uvloop
    except ImportError:  # not on Linux: the stdlib loop works too
        return asyncio.run(main)
    return uvloop.run(main)


def checked(config: Config, asn_db: bool = True) -> Config:
    """``config``, once what the core cannot check alone holds: every signed zone's key
    loads, and rules by AS have a database to read (``asn_db``: one is given);
    ``ConfigError`` naming the file and key, else."""
    dnssec.check(config)
    if not asn_db and (problems := asn_problems(config)):
        raise ConfigError(problems)
    return config

