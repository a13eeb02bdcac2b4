"""One ``--workers`` process: ``python -m router.serve.worker --channel FD [--dns U:T,...
--http FD,...]``, started by the supervisor (``router.serve.supervisor``): the first
worker at start-up on sockets the supervisor bound, every other one binding its own once
it has its config and first snapshot.

It is a ``Server`` whose board is fed by the supervisor (``Feed``, the ``Source``) rather
than by a prober of its own: its config (in the Hello, then each reload staged and
committed), health snapshots, the operator's state file, the other processes' counters
and what their availability ledgers learned arrive over the channel; "ready", "staged",
its own counters and what its own file checks learn go back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence

import structlog

from router import log as logging_setup
from router.core.config import Config
from router.core.fleet import View
from router.core.runtime import Runtime
from router.serve import channel as ch
from router.serve.channel import Channel, Message
from router.serve.lifecycle import first_of, run_loop
from router.serve.server import Server
from router.serve.settings import Sockets
from router.watch.tasks import cancel

log = structlog.get_logger("router.serve.worker")

STATS_EVERY = 1.0  # seconds between counter reports


class Feed:
    """A worker's ``Source``: the supervisor's snapshots instead of a prober."""

    def __init__(self, runtime: Runtime, channel: Channel, on_lost: Callable[[], None],
                 switch: Callable[[Config], None]) -> None:
        self.runtime = runtime
        self.channel = channel
        self.on_lost = on_lost
        self.switch = switch  # serve a committed config
        self.staged: ch.Stage | None = None
        self.state: ch.StateNews | None = None
        self.fleet: View | None = None
        self._first = asyncio.Event()
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # What this worker's own file checks learn, every other process learns too.
        runtime.ledger.journal = lambda event: channel.post(ch.LedgerNews(event))
        # ... and which mirrors the client networks it served came back to avoid
        runtime.retries.journal = lambda news: channel.post(ch.AvoidanceNews(news))
        runtime.speeds.journal = lambda report: channel.post(ch.SpeedNews(report))

    async def start(self) -> None:
        """Wait for the supervisor's first snapshot (its first probe round)."""
        self._tasks = [asyncio.create_task(self._read(), name="feed"),
                       asyncio.create_task(self._report(), name="feed report")]
        if await first_of(self._first.wait(), self._lost.wait()) == 1:
            raise OSError("the supervisor went away before the first snapshot")

    def fleet_view(self) -> View | None:
        return self.fleet

    async def ready(self, dns: list[str], http: list[str]) -> None:
        await self.channel.send(ch.Ready(dns, http, os.getpid()))

    def reconfigure(self, config: Config) -> None:
        """Nothing to do: the supervisor follows the zones and sends what follows."""

    async def close(self) -> None:
        await cancel(self._tasks)
        self.channel.close()

    async def _read(self) -> None:
        try:
            while True:
                self._apply(await self.channel.receive())
        except (asyncio.IncompleteReadError, ConnectionError):
            log.error("supervisor_lost")
            self._lost.set()
            self.on_lost()

    def _apply(self, message: Message) -> None:
        runtime = self.runtime
        match message:
            case ch.NewSnapshot(snapshot, sent):
                runtime.board.adopt(snapshot)
                runtime.stats.state_lag.observe(max(0.0, time.time() - sent))
                self._first.set()
            case ch.LedgerNews(event):
                runtime.ledger.apply(event, runtime.config)
            case ch.AvoidanceNews(news):
                runtime.retries.learn(news, time.monotonic())
            case ch.SpeedNews(report):
                runtime.speeds.add(report)
            case ch.Stage(serial):
                self.staged = message
                self.channel.post(ch.Staged(serial))
            case ch.Commit(serial):
                if self.staged is not None and self.staged.serial == serial:
                    self.switch(self.staged.config)
                    log.info("config_committed", serial=serial)
                self.staged = None
            case ch.ReloadNews(outcome):
                runtime.last_reload = outcome
            case ch.PeerCounts(stats):
                runtime.peers = stats
            case ch.StateNews():
                self.state = message
            case ch.FleetNews(view):
                self.fleet = view
            case ch.LoadNews(figures):
                runtime.board.figures = figures
            case _:
                log.warning("channel_unexpected", message=type(message).__name__)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(STATS_EVERY)
            with contextlib.suppress(ConnectionError):
                self.runtime.sample()
                await self.channel.send(ch.Counts(self.runtime.stats))


async def serve(channel_socket: socket.socket, sockets: Sockets) -> int:
    channel = await Channel.open(channel_socket)
    hello = await channel.receive()
    if not isinstance(hello, ch.Hello):
        raise ConnectionError(f"expected Hello, got {type(hello).__name__}")
    logging_setup.configure(hello.log_format, hello.log_level)
    structlog.contextvars.bind_contextvars(worker=hello.index)
    server: Server

    def feed(runtime: Runtime) -> Feed:
        runtime.last_reload = hello.last_reload
        return Feed(runtime, channel, on_lost=server.signals.stop.set, switch=server.switch)

    def bind() -> Sockets:
        return Sockets.bind(hello.settings, hello.addresses, reuse_port=True)

    server = Server(hello.settings, sockets=sockets if sockets.all() else None, source=feed,
                    config=hello.config, bind=bind)
    return await server.run()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m router.serve.worker")
    p.add_argument("--channel", type=int, required=True)
    p.add_argument("--dns", default="")
    p.add_argument("--http", default="")
    p.add_argument("--admin", default="")
    p.add_argument("--https", default="")
    args = p.parse_args(argv)
    pairs = [pair.split(":") for pair in args.dns.split(",") if pair]
    sockets = Sockets(
        dns=tuple((socket.socket(fileno=int(u)), socket.socket(fileno=int(t))) for u, t in pairs),
        http=_inherited(args.http), admin=_inherited(args.admin),
        https=_inherited(args.https))
    return run_loop(serve(socket.socket(fileno=args.channel), sockets))


def _inherited(fds: str) -> tuple[socket.socket, ...]:
    return tuple(socket.socket(fileno=int(f)) for f in fds.split(",") if f)


if __name__ == "__main__":
    sys.exit(main())
