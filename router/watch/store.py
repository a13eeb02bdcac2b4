"""The fleet's store: Redis or Valkey through ``redis.asyncio``, its keys, and its health.

Every key of a fleet starts with the fleet's ``name`` and a colon, so several fleets can
share one store:

    NAME:nodes                      set    the node names ever seen (pruned when dead)
    NAME:node:NODE                  string heartbeat (JSON), expires after HEARTBEAT_TTL
    NAME:obs:SERVICE/TARGET         hash   node -> observation (JSON)
    NAME:overrides                  hash   selector -> override record (JSON)
    NAME:file:SERVICE/TARGET        hash   file name -> HEAD result (JSON)
    NAME:lock:WHAT                  string a lock's holder, expires on its own

Every call is bounded (``TIMEOUT``) and never retried here: a failure raises
``StoreDown``, and ``Link`` keeps the state (connected or not), the back-off before the
next try and the one log line per change of state. Values are JSON, read strictly by
``router.core.fleet``; nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as redis
import structlog
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.core import fleet as f
from router.core.config import FleetConfig
from router.core.health import Key
from router.core.overrides import Override, Window
from router.core.values import Sentinels, redact, sentinels
from router.errors import RouterError

log = structlog.get_logger("router.fleet")

T = TypeVar("T")
TIMEOUT = 1.0  # seconds any one exchange with the store may take
CONNECTIONS = 16  # open to the store at most, per process
BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0)  # seconds between tries while the store is away


class StoreDown(RouterError):
    """The store did not answer (in time)."""


def connect(config: FleetConfig, timeout: float = TIMEOUT) -> redis.Redis:
    """A client for the fleet's store: short timeouts, no retries of its own (the
    caller's ``Link`` backs off), bytes in and out. At most ``CONNECTIONS`` at once; a
    caller beyond them waits (``timeout`` at most) for one to be free, rather than fail:
    a burst of file checks is not a lost store. Behind Redis Sentinel
    (``redis+sentinel://``), each new connection asks the sentinels for the primary, so
    after a failover the next try reaches the new one."""
    options: dict[str, Any] = {
        "socket_timeout": timeout, "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0), "retry_on_timeout": False, "health_check_interval": 0,
        "client_name": f"mirror-router:{config.node}",
        **({"password": config.password} if config.password is not None else {})}
    found = sentinels(config.store)
    if found is not None:
        return _sentinel(found, options, timeout)
    pool = redis.BlockingConnectionPool.from_url(
        config.store, max_connections=CONNECTIONS, timeout=timeout, **options)
    return redis.Redis.from_pool(pool)  # the client closes the pool with itself


class _SentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """The primary's connections, found through the sentinels, at most ``CONNECTIONS``
    and waited for (as ``BlockingConnectionPool``) rather than refused when all are out."""


def _sentinel(found: Sentinels, options: dict[str, Any], timeout: float) -> redis.Redis:
    password = options.pop("password", None) or found.password
    manager = Sentinel(list(found.hosts), socket_timeout=timeout,
                       sentinel_kwargs={"socket_timeout": timeout,
                                        "socket_connect_timeout": timeout})
    client: redis.Redis = manager.master_for(
        found.service, connection_pool_class=_SentinelPool, db=found.db, password=password,
        max_connections=CONNECTIONS, timeout=timeout, **options)
    return client


class Keys:
    """The names of a fleet's keys."""

    def __init__(self, name: str) -> None:
        self.prefix = f"{name}:"
        self.nodes = f"{name}:nodes"
        self.overrides = f"{name}:overrides"
        self.avoidances = f"{name}:avoidances"  # a stream: client networks' avoidances
        self.loads = f"{name}:loads"  # node -> its rates sent to each target (core.load)

    def node(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    def observations(self, service: str, target: str) -> str:
        return f"{self.prefix}obs:{service}/{target}"

    def files(self, service: str, target: str) -> str:
        return f"{self.prefix}file:{service}/{target}"

    def lock(self, what: str) -> str:
        return f"{self.prefix}lock:{what}"

    def marks(self, service: str) -> str:
        """A service's corrupt copies, field TARGET/FILE (``FleetFiles.mark``)."""
        return f"{self.prefix}corrupt:{service}"


class Link:
    """Whether the store answers, and when to try it again. ``call()`` runs one exchange;
    ``due()`` says whether one is worth trying now (so a node whose store is away does
    not wait on it every round)."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.where = redact(config.store)
        self.client = connect(config)
        self.keys = Keys(config.name)
        self.connected = False
        self.since = time.monotonic()  # when ``connected`` last changed
        self.failures = 0  # in a row
        self.errors = 0  # in all
        self.last_error: str | None = None
        self._next = 0.0  # monotonic time of the next try while away
        self._told = False  # a first failure has been logged

    def due(self) -> bool:
        return self.connected or time.monotonic() >= self._next

    async def call(self, pipeline: Any) -> list[Any]:
        """Run a filled pipeline; ``StoreDown`` if the store does not answer. A command
        the store refuses (a key of the wrong type, written by hand) leaves its error in
        its place in the list (see ``value()``): that is bad data, not a lost store."""
        try:
            result: list[Any] = await pipeline.execute(raise_on_error=False)
        except (RedisError, OSError) as e:
            self.failed(e)
            raise StoreDown(self.last_error or "") from None
        self.answered()
        return result

    def answered(self) -> None:
        if not self.connected:
            away = time.monotonic() - self.since
            log.info("fleet_connected", store=self.where, node=self.config.node,
                     **({"after_seconds": round(away, 1)} if self._told else {}))
            self.connected, self.since, self._told = True, time.monotonic(), True
        self.failures = 0

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:300]
        self._next = time.monotonic() + BACKOFF[min(self.failures, len(BACKOFF)) - 1]
        if self.connected or not self._told:
            log.warning("fleet_disconnected", store=self.where, node=self.config.node,
                        error=self.last_error,
                        effect="serving from this node's own checks and the last overrides "
                               "it knew; trying again with back-off")
            self.connected, self.since, self._told = False, time.monotonic(), True

    async def close(self) -> None:
        await self.client.aclose()


def value(result: Any, default: T) -> T:
    """A pipeline's result, or ``default`` where the store refused the command."""
    return default if isinstance(result, Exception) else result


def refused(results: list[Any]) -> list[str]:
    """The store's reasons for the commands it refused, if any."""
    return [str(r) for r in results if isinstance(r, Exception)]


# ---------------------------------------------------------------- for the command line


@dataclass
class Reading:
    """Everything a fleet has in the store, read at once (``fleet status``, ``admin``)."""

    now: float  # the store's clock
    heartbeats: dict[str, f.Heartbeat] = field(default_factory=dict)
    observations: dict[Key, dict[str, f.Observation]] = field(default_factory=dict)
    overrides: dict[str, f.OverrideRecord] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)


async def read_all(link: Link) -> Reading:
    """The live nodes, every observation and every override; values that do not parse
    are listed in ``bad``, not raised."""
    keys, client = link.keys, link.client
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.smembers(keys.nodes)
    pipe.hgetall(keys.overrides)
    stamp, members, overrides = await link.call(pipe)
    reading = Reading(stamp[0] + stamp[1] / 1e6)
    reading.bad += [(keys.prefix + "*", f"the store refused a command: {r}")
                    for r in refused([members, overrides])]
    members = value(members, set[bytes]())
    overrides = value(overrides, dict[bytes, bytes]())
    names = sorted(m.decode(errors="replace") for m in members)
    obs_keys = [k async for k in client.scan_iter(match=keys.prefix + "obs:*", count=500)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(keys.node(name))
    for key in obs_keys:
        pipe.hgetall(key)
    out = await link.call(pipe)
    reading.bad += [(keys.prefix + "obs:*", f"the store refused a command: {r}")
                    for r in refused(out)]
    out = [value(o, None) for o in out]
    for name, raw in zip(names, out[:len(names)], strict=True):
        if (beat := _load(reading, keys.node(name), raw, f.load_heartbeat)) is not None:
            reading.heartbeats[name] = beat
    for key, fields in zip(obs_keys, out[len(names):], strict=True):
        _observations(reading, key.decode(errors="replace"), fields or {})
    for selector, raw in overrides.items():
        name = selector.decode(errors="replace")
        if (record := _load(reading, f"{keys.overrides} {name}", raw,
                            f.load_override)) is not None:
            reading.overrides[name] = record
    return reading


def _observations(reading: Reading, where: str, fields: dict[bytes, bytes]) -> None:
    """One target's observations (``where``: its key, NAME:obs:SERVICE/TARGET)."""
    service, _, target = where.split(":obs:", 1)[1].partition("/")
    seen = reading.observations.setdefault((service, target), {})
    for node, raw in fields.items():
        name = node.decode(errors="replace")
        found = _load(reading, f"{where} {name}", raw,
                      lambda r, n=name: f.load_observation(n, r))  # type: ignore[misc]
        if found is not None:
            seen[name] = found


def _load(reading: Reading, where: str, raw: bytes | None,
          load: Callable[[bytes], T]) -> T | None:
    """A value read strictly; one that does not parse is listed in ``reading.bad``."""
    if raw is None:
        return None
    try:
        return load(raw)
    except f.BadValue as e:
        reading.bad.append((where, str(e)))
        return None


async def set_override(link: Link, selector: str, state: Override, by: str,
                       window: Window | None = None) -> None:
    """Write one fleet-wide override on the store's clock: a plain one (``auto`` deletes
    it and the selector's windows), or a ``window``. Windows that have ended go."""
    pipe = link.client.pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(link.keys.overrides)
    stamp, fields = await link.call(pipe)
    now = round(stamp[0] + stamp[1] / 1e6, 3)
    gone = []
    for name, raw in value(fields, dict[bytes, bytes]()).items():
        text = name.decode(errors="replace")
        with contextlib.suppress(f.BadValue):
            record = f.load_override(raw)
            if (record.end is not None and record.end <= now) or (
                    state is Override.AUTO and record.start is not None
                    and f.field_selector(text) == selector):
                gone.append(name)
    pipe = link.client.pipeline(transaction=False)
    if gone:
        pipe.hdel(link.keys.overrides, *gone)
    if window is not None:
        record = f.OverrideRecord(state, by, now, window.start, window.end)
        pipe.hset(link.keys.overrides, f.window_field(window), f.dump(record))
    elif state is Override.AUTO:
        pipe.hdel(link.keys.overrides, selector)
    else:
        pipe.hset(link.keys.overrides, selector, f.dump(f.OverrideRecord(state, by, now)))
    await link.call(pipe)
