"""dnstap: sampled queries and answers, in the format Knot, BIND, PowerDNS and unbound
write, to a Frame Streams reader (``fstrm_capture``, dnstap-read's files, a collector).

``--dnstap unix:/run/dnstap.sock`` (or ``tcp:127.0.0.1:6000``) with ``--dnstap-sample``
(``dnstap_sample`` in ``[server]``, 1.0 by default): each answered query is kept with
that probability, as two messages, ``AUTH_QUERY`` and ``AUTH_RESPONSE`` (the bytes of
both, the times, the client's address and port, UDP or TCP). The listener only puts the
raw bytes on a bounded queue (``Tap.seen``: a random draw and an append); one task,
every ``FLUSH_EVERY`` seconds, encodes them (``dnstap_pb``'s protobuf) and writes them
as Frame Streams data frames (``fstrm``), after the bidirectional handshake (READY,
ACCEPT, START). It encodes for at most ``CPU_SHARE`` of the time (the encoding runs on
the loop that answers): what it has no time for is dropped and counted, as is what a
full queue cannot take, so neither a slow reader nor a high sample slows answers.
The writer reconnects with back-off; frames queued while the reader is away are dropped
(and counted) rather than kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import deque
from dataclasses import dataclass

import fstrm
import structlog
from dnstap_pb import dnstap_pb2

from router import __version__
from router.core.ip import IPAddress
from router.core.stats import Stats

log = structlog.get_logger("router.dns.dnstap")

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
QUEUE = 10_000  # answers waiting to be written; past it they are dropped
BACKOFF = (0.5, 30.0)  # seconds between reconnections: first, most
FLUSH_EVERY = 0.1  # seconds between the writer's turns
CPU_SHARE = 0.05  # of the time, at most, spent encoding (the rest of a turn's queue: dropped)


@dataclass(frozen=True)
class Destination:
    """Where the frames go: a unix socket path, or a TCP (host, port)."""

    path: str | None = None
    host: str | None = None
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``unix:/path`` or ``tcp:HOST:PORT``; ValueError says which form is wanted."""
        kind, _, rest = text.partition(":")
        if kind == "unix" and rest:
            return cls(path=rest)
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            if host and port.isdigit() and 0 < int(port) < 65536:
                return cls(host=host.strip("[]"), port=int(port))
        raise ValueError(f"{text!r}: want unix:/path/to/socket or tcp:HOST:PORT")

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"tcp:{self.host}:{self.port}"


Seen = tuple[float, bytes, bytes, IPAddress, int, bool, bytes, int]


class Tap:
    """Sampled answers on their way to a dnstap reader (see the module)."""

    def __init__(self, destination: Destination, sample: float, stats: Stats,
                 identity: str | None = None) -> None:
        self.destination = destination
        self.sample = sample
        self.stats = stats
        self.identity = (identity or socket.gethostname()).encode()
        self.version = f"mirror-router {__version__}".encode()
        self.queue: deque[Seen] = deque()
        self.room = QUEUE  # answers taken per turn: twice what the last turn had time for
        self.task: asyncio.Task[None] | None = None
        self.codec = fstrm.FstrmCodec()

    def seen(self, query: bytes, reply: bytes, peer: IPAddress, port: int, tcp: bool,
             server: tuple[bytes, int]) -> None:
        """One answer given, just now, from ``server`` (its address, packed, and port)."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        if len(self.queue) >= self.room:
            self.stats.dnstap["dropped"] += 1
            return
        self.queue.append((time.time(), query, reply, peer, port, tcp, *server))

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="dnstap")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        log.info("dnstap_closed", destination=str(self.destination),
                 sent=self.stats.dnstap["sent"], dropped=self.stats.dnstap["dropped"],
                 left=len(self.queue))

    async def _run(self) -> None:
        wait = BACKOFF[0]
        while True:
            try:
                reader, writer = await self._connect()
            except (OSError, ValueError, TimeoutError) as e:
                self._drop_all()
                log.warning("dnstap_unreachable", destination=str(self.destination),
                            error=str(e), retry_in=wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, BACKOFF[1])
                continue
            wait = BACKOFF[0]
            log.info("dnstap_connected", destination=str(self.destination))
            try:
                await self._write(writer)
            except (OSError, ConnectionError) as e:
                log.warning("dnstap_lost", destination=str(self.destination), error=str(e))
            finally:
                writer.close()
                reader.feed_eof()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connected, and the handshake done: READY (our content type), ACCEPT, START."""
        d = self.destination
        if d.path is not None:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(d.path), 5)
        else:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(d.host, d.port), 5)
        writer.write(self.codec.encode_ctrlready(CONTENT_TYPE))
        await writer.drain()
        codec = fstrm.FstrmCodec()
        while True:
            data = await asyncio.wait_for(reader.read(4096), 5)
            if not data:
                raise ConnectionError("closed during the Frame Streams handshake")
            codec.append(data)
            if codec.process():
                frame, types, _rest = codec.decode()
                if frame != fstrm.FSTRM_CONTROL_ACCEPT or (types and CONTENT_TYPE not in types):
                    raise ValueError(f"the reader did not accept {CONTENT_TYPE.decode()}")
                break
        writer.write(self.codec.encode_ctrlstart(CONTENT_TYPE))
        return reader, writer

    async def _write(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            started, frames = time.perf_counter(), []
            queue = self.queue
            while queue and time.perf_counter() - started < FLUSH_EVERY * CPU_SHARE:
                frames += self._frames(queue.popleft())
            # no time left for the rest this turn; take no more than twice as many
            self.room = QUEUE if not queue else max(64, len(frames))
            self._drop_all()
            if frames:
                writer.write(b"".join(frames))
                self.stats.dnstap["sent"] += len(frames) // 2
                await writer.drain()

    def _drop_all(self) -> None:
        self.stats.dnstap["dropped"] += len(self.queue)
        self.queue.clear()

    def _frames(self, seen: Seen) -> list[bytes]:
        """The answer's AUTH_QUERY and AUTH_RESPONSE messages, as data frames."""
        at, query, reply, peer, port, tcp, server, server_port = seen
        out = []
        for kind in (dnstap_pb2.Message.AUTH_QUERY, dnstap_pb2.Message.AUTH_RESPONSE):
            tap = dnstap_pb2.Dnstap(identity=self.identity, version=self.version,
                                    type=dnstap_pb2.Dnstap.MESSAGE)
            m = tap.message
            m.type = kind
            m.socket_family = dnstap_pb2.INET6 if peer.version == 6 else dnstap_pb2.INET
            m.socket_protocol = dnstap_pb2.TCP if tcp else dnstap_pb2.UDP
            m.query_address, m.query_port = peer.packed, port
            m.response_address, m.response_port = server, server_port
            m.query_time_sec, m.query_time_nsec = int(at), int(at % 1 * 1e9)
            m.query_message = query
            if kind == dnstap_pb2.Message.AUTH_RESPONSE:
                m.response_time_sec, m.response_time_nsec = int(at), int(at % 1 * 1e9)
                m.response_message = reply
            out.append(self.codec.encode_data(tap.SerializeToString()))
        return out
