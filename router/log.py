"""structlog set-up: one line per event, human-readable on a terminal or JSON for machines.

Our own events and the standard library's loggers (aiohttp's, asyncio's) go through the
same processors, so ``--log-format json`` holds for every line. A client's malformed
request is not our error: aiohttp's report of one becomes a single line naming the
problem, without a traceback. Repeated identical warnings and errors are rate-limited:
the first of a kind is written, the same again within ``QUIET`` seconds is counted, and
the next one written after that says how many were left out (``suppressed``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from router.core.memo import Memo

FORMATS = ("console", "json")
QUIET = 10.0  # seconds an identical warning or error is counted rather than written
CLIENT_ERRORS = ("aiohttp.http_exceptions",)  # malformed requests: the sender's mistake
KINDS = 2048  # kinds of warning remembered


class RateLimit:
    """Lets the first of a kind of warning or error through, counts the same again within
    ``quiet`` seconds, and reports that count with the next one it lets through. A
    structlog processor for our events, and a ``logging.Filter`` for the stdlib's."""

    def __init__(self, quiet: float = QUIET, clock: Any = time.monotonic) -> None:
        self.quiet = quiet
        self.clock = clock
        # kinds are few; a flood of distinct ones is not all kept
        self._seen: Memo[tuple[str, ...], tuple[float, int]] = Memo(KINDS)

    def admit(self, *key: str) -> int | None:
        """None: drop it; else how many of its kind were dropped before it."""
        now = self.clock()
        last, dropped = self._seen.get(key) or (-self.quiet - 1.0, 0)
        if now - last < self.quiet:
            self._seen.put(key, (last, dropped + 1))
            return None
        self._seen.put(key, (now, 0))
        return dropped

    def __call__(self, _logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        if method not in ("warning", "error", "critical", "exception"):
            return event
        dropped = self.admit("", *(f"{k}={v}" for k, v in sorted(event.items())
                                   if k not in ("timestamp", "suppressed")))
        if dropped is None:
            raise structlog.DropEvent
        if dropped:
            event["suppressed"] = dropped
        return event


class _StdlibLimit(logging.Filter):
    def __init__(self, limit: RateLimit) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # the kind: the message before its arguments (aiohttp's "Error handling request
        # from %s" names the address) and the error's type, so a flood from many
        # addresses is one kind
        error = type(record.exc_info[1]).__name__ if record.exc_info else ""
        dropped = self.limit.admit(record.name, str(record.msg), error)
        if dropped:
            record.suppressed = dropped
        return dropped is not None


def one_line_client_errors(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """aiohttp's "Error handling request" for a malformed request: the problem, one line."""
    info = event.get("exc_info")
    if isinstance(info, BaseException):
        info = (type(info), info, info.__traceback__)
    if isinstance(info, tuple) and info[0] is not None \
            and info[0].__module__ in CLIENT_ERRORS:
        event.pop("exc_info")
        event["error"] = " ".join(str(info[1]).split())
    return event


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def escape_control(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Control bytes in a console line's text values written as ``\\xNN``: a value from a
    store or a request (a NUL, an escape sequence) must not reach the terminal raw (JSON
    escapes them itself)."""
    for key, value in event.items():
        if isinstance(value, str) and not value.isprintable():
            event[key] = value.translate(_CONTROL)
    return event


def configure(fmt: str = "console", level: str = "info") -> None:
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        one_line_client_errors,
    ]
    limit = RateLimit()
    tracebacks = [structlog.processors.dict_tracebacks] if fmt == "json" else [escape_control]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, limit, *tracebacks, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (message and newline together): with --workers, several
        # processes share stderr, and a line must not be split by another.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(shared, [*tracebacks, renderer], numeric, limit)


def _route_stdlib(shared: list[Processor], final: list[Processor], level: int,
                  limit: RateLimit) -> None:
    """The standard library's loggers (aiohttp, asyncio) through the same processors."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_StdlibLimit(limit))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder({"suppressed"}), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
