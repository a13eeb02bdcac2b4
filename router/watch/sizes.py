"""The sizes of files no catalog lists, learned by a HEAD, for the load a redirect adds.

A service whose targets have a capacity in ``mbps`` counts each redirect's file size in
its target's load (``core.load``). A catalog lists the sizes of its files; for a path it
does not list, the first redirect asks the chosen mirror for the file's
``Content-Length`` with a HEAD, in the background (never on the request's path), and the
redirects after it count that size. At most ``HEADS`` HEADs at once and ``PENDING``
waiting; a path whose HEAD gave no size is asked again after ``RETRY`` seconds; the last
``KEPT`` paths are remembered (``core.memo``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from router.core.config import Service
from router.core.memo import Memo
from router.watch.tasks import cancel

KEPT = 65536  # paths whose size is remembered (and whose asking is)
HEADS = 4  # HEADs for sizes at once
PENDING = 256  # ... and waiting: past this, a new path waits for a later redirect
RETRY = 60.0  # seconds before a path whose HEAD told no size is asked again

Key = tuple[str, str]  # (service, path)


class Sizes:
    def __init__(self, session: Callable[[], aiohttp.ClientSession | None]) -> None:
        self.session = session
        self.known: Memo[Key, int] = Memo(KEPT)
        self._asked: Memo[Key, float] = Memo(KEPT)  # when (monotonic)
        self._gate = asyncio.Semaphore(HEADS)
        self._tasks: set[asyncio.Task[None]] = set()

    def size_of(self, service: Service, path: str, url: str) -> int | None:
        """The size of ``path`` if a HEAD told it; else None, and (once a ``RETRY``) a
        HEAD of ``url`` is started to learn it."""
        key = (service.name, path)
        found = self.known.get(key)
        if found is not None:
            return found
        now, asked = time.monotonic(), self._asked.get(key)
        if (asked is None or now - asked >= RETRY) and len(self._tasks) < PENDING \
                and self.session() is not None:
            self._asked.put(key, now)
            task = asyncio.create_task(self._head(key, url, service.health.timeout))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    async def _head(self, key: Key, url: str, timeout: float) -> None:
        session = self.session()
        if session is None:
            return
        async with self._gate:
            try:
                async with session.head(url, allow_redirects=True, max_redirects=3,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    if r.status == 200 and r.content_length is not None:
                        self.known.put(key, r.content_length)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                return  # no size: asked again after RETRY

    async def close(self) -> None:
        await cancel(list(self._tasks))
