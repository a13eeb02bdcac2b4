"""One node of a fleet: share health observations and overrides through the store.

Four times a second (``TICK``) a node, in one pipelined exchange with the store:

- renews its heartbeat and reads the others' (the live nodes);
- writes its observations of the targets it checks (its own board: the prober's);
- reads every observation of every target, and the fleet's overrides.

Then, with or without the store, it decides what steering reads (the serving board):
a target with a verdict of its fresh observers (``core.fleet.agree``) gets that verdict;
one without (too few fresh observations, or the store away) gets this node's own view,
and this node checks it. The prober is told which targets to check: those this node
observes (rendezvous hashing) and those without a verdict; all of them while the store
is away. The fleet's overrides are applied (a node's own state file still wins for its
entries) and kept in a cache file beside the state file, so they hold across a restart
while the store is unreachable.

Nothing on the DNS or HTTP paths waits for this: they read the board's snapshot, which
this only replaces.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from router.core import fleet as f
from router.core import reading
from router.core.checks import groups, probes
from router.core.config import Config, FleetConfig
from router.core.health import Board, Health, Key
from router.core.load import Sent
from router.core.memo import Memo
from router.core.regions import Region
from router.core.retries import Avoidance
from router.core.values import Invalid, selector
from router.watch import store as st
from router.watch.files import off_loop, write_whole
from router.watch.statefile import told
from router.watch.store import Link, StoreDown
from router.watch.tasks import cancel

log = structlog.get_logger("router.fleet")

Select = Callable[[set[Key] | None], None]
BAD_VALUES = 1024  # bad store values reported once each (more are reported again)
OUTBOX = 1024  # avoidances waiting for the store at most (the oldest dropped)
STREAM = 10_000  # avoidances the store's stream keeps (about)
READ = 1000  # ... read at most in one round


class Fleet:
    def __init__(self, config: FleetConfig, board: Board, own: Board,
                 zones: Callable[[], Config], select: Select, *, cache: Path | None = None,
                 probing: bool = True, link: Link | None = None) -> None:
        self.config = config
        self.board = board  # what steering reads
        self.own = own  # what this node's prober sees
        self.zones = zones
        self.select = select
        self.cache = cache
        self.probing = probing
        self.link = link or Link(config)
        self.instance = secrets.token_hex(8)
        self.epoch: str | None = None  # the store's data set: a new one means it was reset
        self.skew = 0.0
        self.live: tuple[str, ...] = ()
        self.places: dict[str, Region] = {}  # each live node's region
        self.observations: dict[Key, dict[str, f.Observation]] = {}
        self.overrides: dict[str, f.OverrideRecord] = {}  # the fleet's, last good
        self.targets: tuple[f.TargetView, ...] = ()
        self._written: dict[Key, f.Observation] = {}
        self._probing: set[Key] | None = None  # None: every target
        self._since: dict[Key, float] = {}  # when this node began checking a target again
        self._bad: Memo[tuple[str, str], bool] = Memo(BAD_VALUES)  # (key, value) reported
        self._reseed = False
        self._beaten = False  # a heartbeat of this process is in the store
        self._task: asyncio.Task[None] | None = None
        # client networks' avoidances (core.retries): this node's for the store, the
        # others' handed to ``learned``; read from the stream after ``_stream``
        self.outbox: list[Avoidance] = []
        self.learned: Callable[[Avoidance], None] | None = None
        self._stream = b"0"
        # this node's rates sent to each target (core.load), and the other live nodes'
        # summed, as last read
        self.rates: Callable[[], Mapping[Key, Sent]] = dict
        self._others: dict[Key, Sent] = {}

    def tell(self, news: Avoidance) -> None:
        """An avoidance this node began: for the other nodes, at the next round."""
        self.outbox.append(news)
        del self.outbox[:-OUTBOX]

    async def start(self) -> None:
        """Load the cached overrides, take a first round (bounded), then keep going."""
        await self._load_cache()
        await self.round()
        self._task = asyncio.create_task(self._loop(), name="fleet")

    async def close(self) -> None:
        await cancel([self._task])
        await self.link.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(f.TICK)
            try:
                await self.round()
            except Exception as e:  # a bug here must not stop the fleet for good
                if self._bad_once("round", repr(e)):
                    log.exception("fleet_round_failed")

    async def round(self) -> None:
        """One exchange with the store (when it is worth trying), then decide."""
        config = self.zones()
        if self.link.due():
            try:
                await self._exchange(config)
            except StoreDown:
                self._written.clear()  # write everything again once it is back
        self._decide(config, time.time())
        if any(r.start is not None for r in self.overrides.values()):
            self._apply_overrides(save=False)  # a window starts or ends on time

    # ---------------------------------------------------------------- the exchange

    async def _exchange(self, config: Config) -> None:
        keys, link, node = self.link.keys, self.link, self.config.node
        targets = [probe.key for probe in probes(config)]
        pipe = link.client.pipeline(transaction=False)
        pipe.time()
        pipe.set(keys.prefix + "epoch", secrets.token_hex(8), nx=True)
        pipe.get(keys.prefix + "epoch")
        pipe.set(keys.node(node), f.dump(self._heartbeat()),
                 px=int(f.HEARTBEAT_TTL * 1000), get=True)
        pipe.sadd(keys.nodes, node)
        writes = self._observations_to_write(config) if self.probing else {}
        for (service, target), (obs, ttl) in writes.items():
            pipe.hset(keys.observations(service, target), node, f.dump(obs))
            pipe.pexpire(keys.observations(service, target), int(ttl * 2000))
        pipe.smembers(keys.nodes)
        pipe.hgetall(keys.overrides)
        for service, target in targets:
            pipe.hgetall(keys.observations(service, target))
        told = self._shared(pipe)
        began = time.time()
        try:
            out = await link.call(pipe)
        except StoreDown:
            self.outbox = [*told, *self.outbox][-OUTBOX:]  # told once it is back
            raise
        for reason in st.refused(out):  # keys of the wrong type, put there by hand
            self._report(f"{keys.prefix}*", "", f"the store refused a command: {reason}")
        self._read_clock(out[0], began)
        self._read_epoch(st.value(out[2], None))
        self._check_name(st.value(out[3], None))
        out = out[5 + 2 * len(writes):]
        await self._read_live(st.value(out[0], set[bytes]()))
        if (overrides := st.value(out[1], None)) is not None:  # refused: keep what we had
            self._read_overrides(overrides)
        self._read_observations(targets, [st.value(o, {}) for o in out[2:2 + len(targets)]])
        self._read_avoidances(st.value(out[-3], None))
        self._read_rates(st.value(out[-1], {}))
        self._written.update({k: obs for k, (obs, _ttl) in writes.items()})
        if self._reseed:
            await self._seed()

    def _shared(self, pipe: Any) -> list[Avoidance]:
        """This node's new avoidances added to the stream, and the others' read after
        the last read; this node's rates written, every node's read. The avoidances told
        (put back if the exchange fails)."""
        told, self.outbox = self.outbox, []
        keys, node, now = self.link.keys, self.config.node, self._store_now()
        for news in told:
            pipe.xadd(keys.avoidances, {"v": f.dump_avoidance(news, node, now)},
                      maxlen=STREAM, approximate=True)
        pipe.xread({keys.avoidances: self._stream}, count=READ)
        pipe.hset(keys.loads, node, f.dump_rates(self.rates(), now))
        pipe.hgetall(keys.loads)
        return told

    def _heartbeat(self) -> f.Heartbeat:
        config = self.config
        return f.Heartbeat(config.node, time.time() + self.skew, self.instance,
                           config.observers, config.quorum, config.region,
                           config.observers_per_region)

    def _read_clock(self, stamp: Any, began: float) -> None:
        """The store's clock (TIME) less ours, so every node stamps on one clock."""
        seconds, micros = stamp
        self.skew = seconds + micros / 1e6 - (began + time.time()) / 2

    def _read_epoch(self, raw: bytes | None) -> None:
        """A store that lost its data (restarted without persistence) has a new epoch:
        the overrides this node knows are written back (without overwriting any)."""
        epoch = raw.decode(errors="replace") if raw else None
        if self.epoch is not None and epoch != self.epoch:
            log.warning("fleet_store_reset", old_epoch=self.epoch, epoch=epoch,
                        effect="writing back the overrides this node knew")
            self._reseed = True
        self.epoch = epoch

    def _check_name(self, previous: bytes | None) -> None:
        """Another process writing this node's heartbeat between two of ours: two nodes
        were given the same name. (The first round may find our own last life's.)"""
        beaten, self._beaten = self._beaten, True
        if previous is None or not beaten:
            return
        try:
            beat = f.load_heartbeat(previous)
        except f.BadValue:
            return
        if beat.instance != self.instance and self._bad_once("node", beat.instance):
            log.error("fleet_duplicate_node", node=self.config.node,
                      other_instance=beat.instance,
                      effect="two processes share this node name; give each its own --node")

    async def _read_live(self, members: set[bytes]) -> None:
        names = sorted(m.decode(errors="replace") for m in members)
        keys, link = self.link.keys, self.link
        if not names:
            self.live, self.places = (), {}
            return
        pipe = link.client.pipeline(transaction=False)
        pipe.mget([keys.node(n) for n in names])
        beats = st.value((await link.call(pipe))[0], [None] * len(names))
        live: list[str] = []
        dead: list[str] = []
        places: dict[str, Region] = {}
        for name, raw in zip(names, beats, strict=True):
            if raw is None:
                dead.append(name)
                continue
            try:
                beat = f.load_heartbeat(raw)
            except f.BadValue as e:
                self._report(keys.node(name), raw, str(e))
                continue
            if beat.node != name:
                self._report(keys.node(name), raw, f"names node {beat.node!r}")
                continue
            live.append(name)
            places[name] = beat.region
            self._compare(beat)
        if dead:  # a node that comes back adds itself again
            pipe = link.client.pipeline(transaction=False)
            pipe.srem(keys.nodes, *dead)
            await link.call(pipe)
        self.live = tuple(sorted(set(live)))
        self.places = places

    def _compare(self, beat: f.Heartbeat) -> None:
        """Nodes that count votes differently do not agree: say so, once per node."""
        config = self.config
        mine = (config.observers, config.quorum, config.observers_per_region)
        theirs = (beat.observers, beat.quorum, beat.per_region)
        if theirs != mine and self._bad_once("settings", f"{beat.node} {theirs}"):
            log.warning("fleet_settings_differ", node=beat.node, observers=beat.observers,
                        quorum=beat.quorum, observers_per_region=beat.per_region,
                        ours={"observers": mine[0], "quorum": mine[1],
                              "observers_per_region": mine[2]},
                        effect="the nodes may reach different verdicts; give every node "
                               "the same [fleet] observers, quorum and observers_per_region")

    def _read_overrides(self, raw: Mapping[bytes, bytes]) -> None:
        if self._reseed:  # the store lost them: ours stand, and are written back
            return
        found: dict[str, f.OverrideRecord] = {}
        for field, value in raw.items():
            selector = field.decode(errors="replace")
            try:
                found[_field(selector)] = f.load_override(value)
            except f.BadValue as e:
                self._report(f"{self.link.keys.overrides} {selector}", value, str(e))
                if selector in self.overrides:  # a bad value never replaces a good one
                    found[selector] = self.overrides[selector]
        if found != self.overrides:
            self.overrides = found
            self._apply_overrides(save=True)

    def _read_observations(self, targets: list[Key], found: list[Mapping[bytes, bytes]]
                           ) -> None:
        self.observations = {}
        for key, raw in zip(targets, found, strict=True):
            seen: dict[str, f.Observation] = {}
            for field, value in raw.items():
                node = field.decode(errors="replace")
                try:
                    seen[node] = f.load_observation(node, value)
                except f.BadValue as e:
                    self._report(f"{self.link.keys.observations(*key)} {node}", value, str(e))
            self.observations[key] = seen

    def others(self) -> dict[Key, Sent]:
        """What the other live nodes send each target (a second), as last read."""
        return self._others if self.link.connected else {}

    def _read_rates(self, found: Mapping[bytes, bytes]) -> None:
        now, live, me = self._store_now(), set(self.live), self.config.node
        summed: dict[Key, Sent] = {}
        for field, raw in found.items():
            node = field.decode(errors="replace")
            if node == me or node not in live:
                continue
            try:
                rates = f.load_rates(raw, now)
            except f.BadValue as e:
                self._report(f"{self.link.keys.loads} {node}", raw, str(e))
                continue
            for key, (b, r) in rates.items():
                mine = summed.get(key, (0.0, 0.0))
                summed[key] = (mine[0] + b, mine[1] + r)
        self._others = summed

    def _store_now(self) -> float:
        return time.time() + self.skew

    def _read_avoidances(self, found: Any) -> None:
        """The other nodes' avoidances since the last read, handed to ``learned``."""
        if not found:
            return
        now, me = self._store_now(), self.config.node
        for entry_id, fields in found[0][1]:
            self._stream = entry_id
            raw = fields.get(b"v", b"")
            try:
                node, news = f.load_avoidance(raw, now)
            except f.BadValue as e:
                self._report(f"{self.link.keys.avoidances} {entry_id!r}", raw, str(e))
                continue
            if node != me and news.seconds > 0 and self.learned is not None:
                self.learned(news)

    def _observations_to_write(self, config: Config) -> dict[Key, tuple[f.Observation, float]]:
        """This node's observations that are new since they were last written."""
        out: dict[Key, tuple[f.Observation, float]] = {}
        for probe in probes(config):
            key, check = probe.key, probe.check
            health = self.own.snapshot.get(*key)
            if health.last is None or health.last.local or not self._checks(key):
                continue
            ttl = f.observation_ttl(check.interval, check.timeout)
            obs = f.Observation(self.config.node, health.status, health.latency_ms,
                                round(health.last.at + self.skew, 3), ttl,
                                health.last_error if health.failures else None)
            if self._written.get(key) != obs:
                out[key] = (obs, ttl)
        return out

    async def _seed(self) -> None:
        pipe = self.link.client.pipeline(transaction=False)
        for name, record in self.overrides.items():
            pipe.hsetnx(self.link.keys.overrides, name, f.dump(record))
        if self.overrides:
            await self.link.call(pipe)
        self._reseed = False
        if self.cache is not None:
            await self._save_cache()  # with the new epoch

    # ---------------------------------------------------------------- deciding

    def _decide(self, config: Config, now: float) -> None:
        """Every target's health on the serving board: the fleet's verdict, else ours."""
        connected = self.link.connected and self.probing
        checked = {probe.key for probe in probes(config)}
        grouped = groups(config)  # targets whose addresses are judged one by one
        self.board.set_groups(grouped)
        self.targets = f.survey(self.observations, sorted(checked), live=self.live,
                                count=self.config.observers, quorum=self.config.quorum,
                                now=now + self.skew, me=self.config.node, connected=connected,
                                places=self.places,
                                per_region=self.config.observers_per_region)
        for view in self.targets:
            health, verdict = self.own.snapshot.get(*view.key), view.verdict
            if verdict is not None:
                self._put(view.key, verdict.health(self.board.snapshot.get(*view.key), now),
                          verdict)
            elif self._checks(view.key) and health.last is not None \
                    and health.last.at >= self._since.get(view.key, 0.0):
                self._put(view.key, health)  # for want of a verdict: this node's own view
        for key, health in self.own.snapshot.health.items():
            if key not in checked and key not in grouped:  # never checked: as it is
                self._put(key, health)
        self.board.retain({*self.own.snapshot.health, *checked, *grouped})
        self._regional(now if connected else None)
        self._choose({v.key for v in self.targets if v.probing} if connected else None, now)

    def _regional(self, now: float | None) -> None:
        """Each region's own verdicts, for the clients mapped to it (none with one
        region, or the store away: every client is judged by this node's board)."""
        centres = f.centres(self.places) if now is not None else ()
        mapped = {name for name, _point in centres}
        overlays: dict[str, dict[Key, Health]] = {name: {} for name in mapped}
        for view in self.targets if centres else ():
            before = self.board.snapshot.get(*view.key)
            for region in view.regions:
                if region.region in mapped and region.verdict is not None:
                    overlays[region.region][view.key] = region.verdict.health(before, now or 0)
        self.board.set_regional(centres, overlays)

    def verifies(self, key: Key) -> bool:
        """Whether this node is the one that verifies ``key``'s copies: the first of its
        observers among the live nodes (alone, or with the store away: yes)."""
        if not self.link.connected or not self.live:
            return True
        return f.observers(key, self.live, 1) == (self.config.node,)

    def _put(self, key: Key, health: Health, verdict: f.Verdict | None = None) -> None:
        before = self.board.snapshot.get(*key)
        if before == health:
            return
        self.board.put(key, health)
        if before.status is not health.status and verdict is not None:
            log.info("fleet_verdict", service=key[0], target=key[1], old=before.status.value,
                     new=health.status.value, votes=verdict.votes, down=verdict.down,
                     needed=verdict.needed)

    def _checks(self, key: Key) -> bool:
        return self._probing is None or key in self._probing

    def _choose(self, probing: set[Key] | None, now: float) -> None:
        """Tell the prober; a target it takes up again counts from its next check."""
        if probing == self._probing:
            return
        for key in (probing if probing is not None else self.own.snapshot.health):
            if not self._checks(key):
                self._since[key] = now
        self._probing = probing
        self.select(probing)

    # ---------------------------------------------------------------- overrides

    def _apply_overrides(self, save: bool) -> None:
        """The fleet's overrides in force now (its windows in or out, on the store's
        clock) on the board; ``save``: the records changed, so the cache is rewritten."""
        now = time.time() + self.skew
        before = dict(self.board.fleet_overrides)
        after = f.in_force_now(self.overrides, now)
        if self.board.set_overrides(after, fleet=True) or save:
            log.info("fleet_overrides", overrides={k: str(r.state) for k, r in
                                                   sorted(self.overrides.items())})
            told(f.windows_of(self.overrides), before, after, now, fleet=True)
        if save and self.cache is not None:
            asyncio.get_running_loop().create_task(self._save_cache())

    async def _save_cache(self) -> None:
        assert self.cache is not None
        data = {"fleet": self.config.name, "epoch": self.epoch, "saved": time.time(),
                "overrides": {k: json.loads(f.dump(r)) for k, r in self.overrides.items()}}
        path = self.cache
        try:
            await off_loop(lambda: write_whole(path, json.dumps(data, indent=1)), 5.0,
                           str(path))
        except (OSError, TimeoutError) as e:
            log.warning("fleet_cache_not_saved", file=str(path), error=str(e))

    async def _load_cache(self) -> None:
        """The overrides last known, until the store says otherwise."""
        if self.cache is None:
            log.warning("fleet_cache_off", effect="without --state, the fleet's overrides "
                        "are not kept across a restart while the store is away")
            return
        path = self.cache
        try:
            text = await off_loop(lambda: reading.read_text(path, "fleet cache"), 5.0,
                                  str(path))
            data = json.loads(text)
            self.epoch = data.get("epoch") if isinstance(data.get("epoch"), str) else None
            found = data["overrides"]
            self.overrides = {_field(k): f.load_override(json.dumps(r))
                              for k, r in found.items()}
        except FileNotFoundError:
            return
        except (OSError, TimeoutError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.error("fleet_cache_invalid", file=str(path), error=str(e),
                      effect="starting without the fleet's overrides until the store answers")
            self.overrides = {}
            return
        self._apply_overrides(save=False)
        log.info("fleet_cache_loaded", file=str(path), overrides=len(self.overrides))

    # ---------------------------------------------------------------- seeing

    def view(self) -> f.View:
        link = self.link
        since = time.time() - (time.monotonic() - link.since)
        return f.View(link.where, self.config.name, self.config.node, link.connected,
                      round(since, 3), link.last_error, self.skew, self.live, self.targets,
                      dict(self.overrides), dict(self.places))

    def _report(self, where: str, raw: bytes | str, reason: str) -> None:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if self._bad_once(where, text):
            log.error("fleet_bad_value", key=where, value=text[:200], error=reason,
                      effect="ignored; the last good value stays in force")

    def _bad_once(self, where: str, text: str) -> bool:
        if self._bad.get((where, text)):
            return False
        self._bad.put((where, text), True)
        return True


def _field(text: str) -> str:
    """A field of the overrides: a selector, or (a window) a selector and a time."""
    name = f.field_selector(text)
    try:
        return selector(name) + text[len(name):]
    except Invalid as e:
        raise f.BadValue(e.reason) from None


def cache_path(state: Path | None, name: str) -> Path | None:
    """Where the fleet's overrides are kept: beside the state file."""
    return None if state is None else state.with_name(f"fleet-{name}.json")
