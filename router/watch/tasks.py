"""Background tasks: how a watcher (or a server) ends its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel every task (None: none) and wait until each has ended (errors are theirs
    to log). The one way a watcher, or a server, ends its own."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
