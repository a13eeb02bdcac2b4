"""The channel between the ``--workers`` supervisor and one worker: typed messages over
one end of a socketpair, each a 4-byte length and a pickle.

Pickle is safe here: both ends are our own processes and the socketpair is private to
them. Every message is one of the frozen dataclasses below, so mypy checks both sides;
``receive()`` refuses anything else.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

from router.core.availability import Event
from router.core.capacity import Pressure
from router.core.config import Config
from router.core.fleet import View
from router.core.health import Key, Snapshot
from router.core.overrides import Windows
from router.core.retries import Avoidance
from router.core.runtime import Reload
from router.core.speeds import SpeedReport
from router.core.stats import Stats
from router.serve.settings import Addresses, Settings

# ---------------------------------------------------------------- supervisor → worker


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message: who the worker is, how it serves and logs, the supervisor's
    config in force (a worker never reads the zone folder) and the addresses it binds
    once it is ready (every port already fixed)."""

    index: int
    settings: Settings
    log_format: str
    log_level: str
    config: Config
    addresses: Addresses
    last_reload: Reload | None


@dataclass(frozen=True, slots=True)
class Stage:
    """A reload, phase one: hold this config, do not serve it yet; answer ``Staged``."""

    serial: int
    config: Config


@dataclass(frozen=True, slots=True)
class Commit:
    """Phase two, once every worker staged ``serial``: serve it now."""

    serial: int


@dataclass(frozen=True, slots=True)
class ReloadNews:
    """How the supervisor's last reload went (for /metrics and /status): sent after a
    commit, and instead of one when the reload failed (a staged config is dropped)."""

    outcome: Reload


@dataclass(frozen=True, slots=True)
class NewSnapshot:
    """The supervisor's health snapshot (its probes and the operator's overrides)."""

    snapshot: Snapshot
    sent: float  # wall clock, for the hand-on lag in /metrics


@dataclass(frozen=True, slots=True)
class PeerCounts:
    """Every other process's counters, so each worker's /metrics shows the machine's."""

    stats: tuple[Stats, ...]


@dataclass(frozen=True, slots=True)
class StateNews:
    """The operator's state file as the supervisor last read it (for /status)."""

    path: Path
    error: str | None
    windows: Windows = ()


@dataclass(frozen=True, slots=True)
class LoadNews:
    """Every target's load figures as last measured (``Board.figures``: for /status
    and /metrics; what steering reads of them comes in the snapshot)."""

    figures: dict[Key, Pressure]


@dataclass(frozen=True, slots=True)
class FleetNews:
    """The fleet as the supervisor sees it (for /status and /metrics)."""

    view: View


# ---------------------------------------------------------------- worker → supervisor


@dataclass(frozen=True, slots=True)
class Ready:
    dns: list[str]
    http: list[str]
    pid: int


@dataclass(frozen=True, slots=True)
class Staged:
    """The worker holds the config of ``serial``, ready to serve it."""

    serial: int


@dataclass(frozen=True, slots=True)
class Counts:
    """A worker's own counters, once a second."""

    stats: Stats


# ---------------------------------------------------------------- both ways


@dataclass(frozen=True, slots=True)
class LedgerNews:
    """What one process's availability ledger learned, for every other one."""

    event: Event


@dataclass(frozen=True, slots=True)
class AvoidanceNews:
    """A client network one process (or, through the supervisor, another node) began to
    avoid a mirror for (``core.retries``), for every other one."""

    news: Avoidance


@dataclass(frozen=True, slots=True)
class SpeedNews:
    """A download's speed a client reported to one worker (``core.speeds``): the
    supervisor charges it, every other worker shows it."""

    report: SpeedReport


Message = (Hello | NewSnapshot | PeerCounts | StateNews | FleetNews | LoadNews | Stage | Commit
           | ReloadNews | Ready | Staged | Counts | LedgerNews | AvoidanceNews | SpeedNews)
MESSAGES = (Hello, NewSnapshot, PeerCounts, StateNews, FleetNews, LoadNews, Stage, Commit,
            ReloadNews, Ready, Staged, Counts, LedgerNews, AvoidanceNews, SpeedNews)


def encode(message: Message) -> bytes:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


class Channel:
    """One end of the socketpair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        return cls(*await asyncio.open_connection(sock=sock))

    async def send(self, message: Message) -> None:
        self.writer.write(encode(message))
        await self.writer.drain()

    def post(self, message: Message) -> None:
        """``send`` without waiting for the buffer to drain (for callbacks that cannot)."""
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    async def receive(self) -> Message:
        size = int.from_bytes(await self.reader.readexactly(4), "big")
        message = pickle.loads(await self.reader.readexactly(size))  # our own process
        if not isinstance(message, MESSAGES):
            raise ConnectionError(f"not a channel message: {type(message).__name__}")
        return message

    def close(self) -> None:
        self.writer.close()
