"""Background tasks: how a watcher (or a server) ends its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


async def cancel(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel every task (None: none) and wait until each has ended (errors are theirs
    to log). The one way a watcher, or a server, ends its own."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def reconcile(running: dict[K, tuple[asyncio.Task[None], V]], wanted: Mapping[K, V],
              start: Callable[[K, V], asyncio.Task[None]]) -> None:
    """Make ``running`` (key → its task and what it was started for) match ``wanted``: a
    task whose value changed or is no longer wanted is cancelled, a wanted key without
    a task is ``start``-ed, the rest are kept. The prober's and the verifier's loops on
    start and reload."""
    for key, (task, value) in list(running.items()):
        if wanted.get(key) != value:
            task.cancel()
            del running[key]
    for key, value in wanted.items():
        if key not in running:
            running[key] = (start(key, value), value)
