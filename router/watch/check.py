"""One HTTP(S) health check, timed the way ``curl -w`` times a request.

``check_once()`` GETs a URL on a fresh connection (a probe should feel what a new
downloader feels), reads at most 64 KiB of the body, and returns a ``Result`` with the
phases a user feels: DNS lookup, TCP connect, TLS handshake, request sent, first byte,
total, each counted from the start like curl's ``time_*`` variables.

aiohttp's ``TraceConfig`` marks DNS, the connection and the request; it sees TCP and
TLS as one step, so ``TimedContext`` (an ``SSLContext``) marks when the handshake starts:
asyncio and uvloop both call ``wrap_bio()`` the moment the TCP connection is up. The
marks of the check under way live in a context variable, so concurrent checks on one
session never mix their clocks.

A check passes when the status is in the check's ``expect_status`` (2xx and 3xx by
default) and, if it has one, ``expect_body`` occurs in the first 64 KiB.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ssl
import time
from contextvars import ContextVar
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from router import __version__
from router.core.checks import Probe
from router.core.config import HealthCheck
from router.core.health import Phases, Result
from router.core.ip import IPAddress
from router.core.memo import Memo
from router.errors import RouterError

USER_AGENT = f"mirror-router/{__version__} (health check; +https://github.com/mirror-router)"


def user_agent(node: str | None = None) -> str:
    """What our checks call themselves; a fleet's node adds its name, so a mirror's
    operator (and a test) can tell the fleet's nodes apart."""
    if node is None:
        return USER_AGENT
    return f"mirror-router/{__version__} (health check; node {node}; " \
           "+https://github.com/mirror-router)"
BODY_LIMIT = 64 * 1024


class _Clock:
    """The marks of one check, in seconds since it started."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.dns: float | None = None
        self.tcp: float | None = None  # the TCP connection is up (TLS starts here)
        self.connected: float | None = None  # TCP (and TLS) done
        self.sent: float | None = None
        self.queued: float | None = None  # began to wait for a connection slot of ours
        self.dequeued: float | None = None  # got one

    def waited(self, now: float) -> float:
        """Seconds spent waiting for a connection slot of our own (the connector's limit)."""
        if self.queued is None:
            return 0.0
        return (self.dequeued if self.dequeued is not None else now) - self.queued

    def now(self) -> float:
        return time.perf_counter() - self.started

    def phases(self, ttfb: float, total: float) -> Phases:
        connected = self.connected if self.connected is not None else ttfb
        dns = self.dns if self.dns is not None else 0.0  # an IP literal: no lookup
        tls = connected if self.tcp is not None else None
        connect = self.tcp if self.tcp is not None else connected
        sent = self.sent if self.sent is not None else connected
        return Phases(dns, connect, tls, sent, ttfb, total)


_CLOCK: ContextVar[_Clock | None] = ContextVar("check_clock", default=None)


def _mark(name: str) -> Any:
    async def mark(_session: aiohttp.ClientSession, _ctx: SimpleNamespace, _params: Any) -> None:
        clock = _CLOCK.get()
        if clock is not None:
            setattr(clock, name, clock.now())
    return mark


def _trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_dns_resolvehost_end.append(_mark("dns"))
    trace.on_connection_create_end.append(_mark("connected"))
    trace.on_request_headers_sent.append(_mark("sent"))
    trace.on_connection_queued_start.append(_mark("queued"))
    trace.on_connection_queued_end.append(_mark("dequeued"))
    return trace


class LoopLag:
    """How late this process's event loop runs: a task wakes every ``TICK`` seconds and
    keeps how late each wake-up was, for the last minute. A check that fails while the
    loop ran late was the loop's failure to look, not the mirror's (``check_once``)."""

    TICK = 0.1

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=600)
        self.task: asyncio.Task[None] | None = None
        self.asleep = time.perf_counter()  # when the sleep now in progress began

    async def run(self) -> None:
        while True:
            self.asleep = before = time.perf_counter()
            await asyncio.sleep(self.TICK)
            now = time.perf_counter()
            self.samples.append((now, max(0.0, now - before - self.TICK)))

    def worst(self, since: float) -> float:
        """The most the loop ran late from ``since`` (``time.perf_counter()``) on, the
        sleep in progress included (a wake-up overdue now is lateness already)."""
        worst = max(0.0, time.perf_counter() - self.asleep - self.TICK)
        for at, lag in reversed(self.samples):
            if at < since:
                break
            worst = max(worst, lag)
        return worst


_LAGS: Memo[int, tuple[asyncio.AbstractEventLoop, LoopLag]] = Memo(16)  # id(loop) -> it


def loop_lag() -> LoopLag:
    """The running loop's ``LoopLag``, started at first use."""
    loop = asyncio.get_running_loop()
    found = _LAGS.get(id(loop))
    if found is None or found[0] is not loop:
        lag = LoopLag()
        lag.task = loop.create_task(lag.run(), name="loop lag")
        found = _LAGS.put(id(loop), (loop, lag))
    return found[1]


class TimedContext(ssl.SSLContext):
    """A client ``SSLContext`` that marks the start of each TLS handshake."""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        clock = _CLOCK.get()
        if clock is not None:
            clock.tcp = clock.now()
        return super().wrap_bio(*args, **kwargs)


class CaFileError(RouterError):
    """The extra CA file (``--ca-file``, ``tls_ca``) cannot be read."""


def tls_context(ca_file: Path | None = None) -> TimedContext:
    """Verifying context: the system's CAs, plus ``ca_file`` (PEM) when given."""
    context = TimedContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.load_default_certs()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as e:
            raise CaFileError(f"{ca_file}: cannot read CA certificates (--ca-file, "
                              f"tls_ca): {getattr(e, 'strerror', None) or e}") from None
    return context


def new_session(ca_file: Path | None = None, node: str | None = None
                ) -> aiohttp.ClientSession:
    # A fresh connection and a fresh DNS lookup per check: a new downloader's view.
    connector = aiohttp.TCPConnector(force_close=True, limit=64, use_dns_cache=False,
                                     ssl=tls_context(ca_file))
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": user_agent(node)},
                                 trace_configs=[_trace()])


def at_address(url: str, address: IPAddress) -> tuple[str, dict[str, Any]]:
    """``url`` reached at ``address``: the URL to connect to, and what makes the request
    say the URL's own host name (``Host``; over TLS the SNI, and the name the
    certificate must carry: ``server_hostname``)."""
    parts = urlsplit(url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    extra: dict[str, Any] = {"headers": {"Host": parts.netloc.rpartition("@")[2]}}
    if parts.scheme == "https":
        extra["server_hostname"] = parts.hostname
    return parts._replace(netloc=netloc).geturl(), extra


async def check_once(session: aiohttp.ClientSession, url: str, check: HealthCheck,
                     address: IPAddress | None = None) -> Result:
    """One health check of ``url``, bounded by ``check.timeout``; with ``address``, of
    the URL's host at that address (``at_address``)."""
    clock = _Clock()
    token = _CLOCK.set(clock)
    at = time.time()
    lag = loop_lag()
    extra: dict[str, Any] = {}
    if address is not None:
        url, extra = at_address(url, address)
    try:
        async with session.get(url, allow_redirects=False, **extra,
                               timeout=aiohttp.ClientTimeout(total=check.timeout)) as resp:
            ttfb = clock.now()
            body = await _read(resp)
            phases = clock.phases(ttfb, clock.now())
            error = _verdict(check, resp.status, body)
            return Result(error is None, at, error, resp.status, ttfb, phases.total, phases)
    except TimeoutError:
        took = clock.now()
        late = took > check.timeout * STARVED + STARVED_SLACK  # the timer itself ran late
        busy = _busy(clock, lag, check, took)
        reason = f"timeout after {check.timeout:g}s" + (
            f", noticed after {took:.1f}s: this process was too busy to tell" if late else
            f": {busy}" if busy else "")
        return Result(False, at, reason, total=took, local=late or busy is not None)
    except (aiohttp.ClientError, OSError, ValueError) as e:
        took = clock.now()
        busy = _busy(clock, lag, check, took)
        return Result(False, at, _describe(e) + (f": {busy}" if busy else ""), total=took,
                      local=_ours(e) or busy is not None)
    finally:
        _CLOCK.reset(token)


# A check is not made, rather than failed, when the reason is ours: out of descriptors or
# buffers (the mirror was never asked), or a timeout noticed far past its time (the event
# loop was starved: the answer may have come and waited unread).
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
STARVED = 1.5  # a timeout noticed past 1.5 x its time (+ the slack) ...
STARVED_SLACK = 0.5  # ... seconds, was the loop's, not the mirror's


BUSY = 0.25  # of the timeout: the loop this late, or a slot waited for this long, is ours


def _busy(clock: _Clock, lag: LoopLag, check: HealthCheck, took: float) -> str | None:
    """Why a failed check says nothing of the mirror, if it does not: the event loop ran
    late while it was out, or it waited for a connection slot of our own."""
    late = lag.worst(clock.started)
    if late > BUSY * check.timeout:
        return f"this process's loop ran {late:.2f}s late meanwhile: not the mirror's doing"
    waited = clock.waited(took)
    if waited > BUSY * check.timeout:
        return f"waited {waited:.2f}s for a connection slot of ours: not the mirror's doing"
    return None


def _ours(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) is a local shortage, not the mirror's doing."""
    seen: BaseException | None = e
    for _ in range(5):  # aiohttp wraps the OSError: walk the chain a little
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in LOCAL_ERRNOS:
            return True
        os_error = getattr(seen, "os_error", None)
        seen = os_error if isinstance(os_error, OSError) and os_error is not seen \
            else seen.__cause__ or seen.__context__
    return False


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    body = b""
    while len(body) < BODY_LIMIT:
        chunk = await resp.content.read(BODY_LIMIT - len(body))
        if not chunk:
            break
        body += chunk
    return body


def _verdict(check: HealthCheck, status: int, body: bytes) -> str | None:
    """None when the check passes, else why not."""
    if not check.passes(status):
        return f"HTTP {status}"
    if check.expect_body is not None and check.expect_body.encode() not in body:
        return f"body lacks {check.expect_body!r}"
    return None


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class HttpChecker:
    """The ``http`` kind (``core.checks.Checker``): ``check_once`` on a session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def check(self, probe: Probe) -> Result:
        return await check_once(self.session, probe.url, probe.check, probe.address)
