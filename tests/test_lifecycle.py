"""The lifecycle both the single server and the supervisor share (router.serve.lifecycle),
and the typed channel between the supervisor and its workers (router.serve.channel)."""

from __future__ import annotations

import asyncio
import pickle
import signal
import socket
from pathlib import Path
from types import MappingProxyType

import pytest

from router.core.health import Health, Snapshot, Status
from router.core.overrides import Override
from router.core.stats import Stats
from router.serve.channel import Channel, Counts, NewSnapshot, StateNews
from router.serve.lifecycle import Signals, first_of


def run(coro):
    return asyncio.run(coro)


def test_first_of_returns_the_first_done_and_cancels_the_rest():
    async def main():
        slow = asyncio.Event()
        fast = asyncio.sleep(0, "x")
        waiter = asyncio.ensure_future(slow.wait())
        assert await first_of(waiter, fast) == 1
        await asyncio.sleep(0)
        return waiter.cancelled()
    assert run(main())


def test_first_of_raises_what_the_first_raised():
    async def fails():
        raise ValueError("boom")

    async def main():
        await first_of(fails(), asyncio.Event().wait())
    with pytest.raises(ValueError, match="boom"):
        run(main())


def test_one_signal_stops_and_a_second_forces():
    async def main():
        s = Signals()
        s.stopping(signal.SIGTERM)
        first = (s.stop.is_set(), s.force.is_set())
        s.stopping(signal.SIGINT)
        return first, (s.stop.is_set(), s.force.is_set())
    assert run(main()) == ((True, False), (True, True))


def test_a_snapshot_crosses_a_process_boundary_whole():
    health = {("dl", "tyo"): Health(status=Status.DOWN, failures=3)}
    snapshot = Snapshot(MappingProxyType(health), 7, MappingProxyType({"fra": Override.DRAIN}))
    back = pickle.loads(pickle.dumps(snapshot))
    assert (back.get("dl", "tyo"), back.generation, dict(back.admin)) == (
        health[("dl", "tyo")], 7, {"fra": Override.DRAIN})
    assert isinstance(back.health, MappingProxyType)


def test_the_channel_carries_typed_messages_and_refuses_anything_else():
    async def main():
        a, b = socket.socketpair()
        left, right = await Channel.open(a), await Channel.open(b)
        sent = [NewSnapshot(Snapshot(), 1.5), Counts(Stats()), StateNews(Path("/s"), None)]
        for message in sent:
            await left.send(message)
        got = [await right.receive() for _ in sent]
        payload = pickle.dumps(("snapshot", 1))
        left.writer.write(len(payload).to_bytes(4, "big") + payload)  # an untyped tuple
        with pytest.raises(ConnectionError, match="not a channel message: tuple"):
            await right.receive()
        left.close()
        right.close()
        return got
    got = run(main())
    assert [type(m).__name__ for m in got] == ["NewSnapshot", "Counts", "StateNews"]
    assert got[0].sent == 1.5 and got[2] == StateNews(Path("/s"), None)
