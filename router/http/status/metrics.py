"""``/metrics``: the router's state and counters in Prometheus' text format.

Nothing is counted through prometheus-client on the hot paths: the faces add to plain
integers (``router.core.stats``), and ``RouterCollector`` reads those, the health snapshot and
the config only when Prometheus scrapes. Every series is prefixed ``mirror_router_``.

Per target (labels ``service``, ``target``): ``target_up``, ``target_override{state}``,
``target_ttfb_ewma_seconds``, ``target_wait_ewma_seconds`` (what steering charges for)
and ``target_wait_steering_seconds`` (the quantized figure it sees),
``target_last_success_timestamp_seconds`` / ``..._failure_...``,
``target_chosen_total{face}`` (dns, http), ``probes_total{result}`` and the histogram
``probe_phase_seconds{phase}`` (dns, connect, tls, ttfb, total).

Per server: ``dns_queries_total{qtype, rcode}``, ``http_responses_total{status}``,
``errors_total{where}``, ``dns_cookies_total{verdict}``, ``dns_rrl_total{action}``,
``dnstap_total{outcome}``,
``cache_events_total{cache, event}`` (hit, miss, stale, eviction) and
``cache_entries{cache}``, ``health_generation``, ``ready``,
``state_file_ok``, ``fleet_*`` (in a fleet), ``info``, and the standard ``process_*`` series.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from router import __version__
from router.core.capacity import Load
from router.core.health import Effective, Health, Key, Status, effective
from router.core.overrides import Override
from router.core.runtime import Runtime
from router.core.stats import QTYPE_NAMES, RCODE_NAMES, Stats

PREFIX = "mirror_router_"
TARGET = ["service", "target"]


def registry(runtime: Runtime) -> CollectorRegistry:
    """A registry of its own (not the global one), so that tests may run several."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RouterCollector(runtime))
    ProcessCollector(registry=reg)
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)


class RouterCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterable[Metric]:
        stats = self.runtime.totals()  # every worker's counts, read once per scrape
        yield from self._targets()
        yield from self._activity(stats)
        yield from self._probes(stats)
        yield from self._server(stats)
        yield from self._fleet()
        yield from self._signing()

    def _fleet(self) -> Iterator[Metric]:
        view = self.runtime.fleet()
        if view is None:
            return
        now = time.time()
        yield _gauge("fleet_connected", "1 while the fleet's store answers (0: this node "
                     "serves from its own checks and the last overrides it knew)",
                     value=float(view.connected))
        yield _gauge("fleet_nodes", "live nodes of the fleet (fresh heartbeats)",
                     value=len(view.live))
        ages = _gauge("fleet_observation_age_seconds", "age of each observer's last check "
                      "of each target, as read from the store", ["service", "target", "node"])
        votes = _gauge("fleet_verdict_votes", "fresh observations behind each target's "
                       "verdict (0: no verdict, this node checks it itself)",
                       ["service", "target"])
        for t in view.targets:
            for o in t.observations:
                ages.add_metric([*t.key, o.node], round(view.age(o, now), 3))
            votes.add_metric(list(t.key), t.verdict.votes if t.verdict else 0)
        yield ages
        yield votes

    def _signing(self) -> Iterator[Metric]:
        signing = self.runtime.signing()
        if not signing:
            return
        age = _gauge("dnssec_key_age_seconds", "age of each signed zone's keys (their created "
                     "line)", ["zone", "key_tag"])
        states = _gauge("dnssec_key_state", "each signed zone's keys, 1 for the state each "
                        "is in (planned, published, ready, active, signing-unpublished, "
                        "retired, removed)", ["zone", "key_tag", "algorithm", "state"])
        coming = _gauge("dnssec_next_event_timestamp_seconds", "when each signed zone's next "
                        "key event (a rollover's step) comes, as a Unix time",
                        ["zone", "key_tag", "event"])
        made = _counter("dnssec_signatures", "RRSIGs made, and found in the signature "
                        "cache, per signed zone (this process; reset by a reload)",
                        ["zone", "result"])
        now = time.time()
        for s in signing:
            for k in s.keys:
                age.add_metric([s.zone, str(k.tag)], round(now - k.created))
                states.add_metric([s.zone, str(k.tag), k.algorithm, k.state], 1)
            if s.next_event is not None:
                coming.add_metric([s.zone, str(s.next_event[2]), s.next_event[1]],
                                  s.next_event[0])
            made.add_metric([s.zone, "made"], s.made)
            made.add_metric([s.zone, "cached"], s.reused)
        yield from (age, states, coming, made)

    def _keys(self) -> list[Key]:
        return [(s.name, t.id) for s in self.runtime.config.services for t in s.targets]

    def _targets(self) -> Iterator[Metric]:
        snap = self.runtime.board.snapshot
        up = _gauge("target_up", "1 while the target is served as up: passing, or suspect (its "
                    "last check failed, fewer than fall times), or forced up by the operator; "
                    "0 when down, drained or marked down", TARGET)
        suspect = _gauge("target_suspect", "1 while the target's last check failed but it "
                         "is still served, checked again every suspect_interval", TARGET)
        admin = _gauge("target_override", "the operator's override (1 for the one in force)",
                       [*TARGET, "state"])
        figures = {name: _gauge(name, text, TARGET) for name, text in _FIGURES}
        corrupt = _gauge("target_corrupt", "1 while the target is corrupt for its service: "
                         "corrupt_after of its copies failed verification", TARGET)
        bad_files = _gauge("target_corrupt_files", "its copies that failed verification "
                           "(each excluded for its file)", TARGET)
        ledger = self.runtime.ledger
        for key in self._keys():
            h = snap.get(*key)
            corrupt.add_metric(list(key), 1.0 if key[1] in ledger.barred(key[0]) else 0.0)
            bad_files.add_metric(list(key), float(len(ledger.corrupt(*key))))
            state = snap.overrides(key[0])(key[1])
            up.add_metric(list(key), 1.0 if _served(h.status, state) else 0.0)
            suspect.add_metric(list(key), 1.0 if h.status is Status.SUSPECT else 0.0)
            for a in Override:
                admin.add_metric([*key, a.value], 1.0 if a is state else 0.0)
            for name, _text in _FIGURES:
                value = _figure(name, h)
                if value is not None:
                    figures[name].add_metric(list(key), value)
        yield up
        yield suspect
        yield admin
        yield corrupt
        yield bad_files
        yield from figures.values()
        yield from self._pressures()

    def _pressures(self) -> Iterator[Metric]:
        """Each target's load, capacity and kept share (core.capacity), by kind."""
        load = _gauge("target_load", "the load measured on the target, a second: mbps "
                      "(from the redirects' file sizes), requests, or its load_url's figure",
                      [*TARGET, "kind"])
        capacity = _gauge("target_capacity", "what the target can take, a second, by kind",
                          [*TARGET, "kind"])
        shed = _gauge("target_shed_ratio", "the share of its client networks the target "
                      "sheds for load (0: none)", TARGET)
        keep = _gauge("target_keep_ratio", "the share of its client networks the target "
                      "keeps: shed for load, or ramping up after recovery (slow_start)", TARGET)
        pressures = self.runtime.board.figures
        for service in self.runtime.config.services:
            for t in service.targets:
                key = [service.name, t.id]
                p = pressures.get((service.name, t.id))
                for kind, value in _kinds(p.load if p else None):
                    load.add_metric([*key, kind], value)
                c = t.capacity
                limits = (("mbps", c.mbps), ("requests", c.requests), ("load", c.load)) \
                    if c is not None else ()
                for kind, limit in limits:
                    if limit is not None:
                        capacity.add_metric([*key, kind], limit)
                if p is not None:
                    shed.add_metric(key, p.shed)
                    keep.add_metric(key, p.keep)
        yield from (load, capacity, shed, keep)

    def _activity(self, stats: Stats) -> Iterator[Metric]:
        chosen = _counter("target_chosen", "answers (dns) and redirects (http) that chose "
                          "the target", [*TARGET, "face"])
        for face, counts in (("dns", stats.dns_chosen), ("http", stats.http_chosen)):
            for key, n in sorted(counts.items()):
                chosen.add_metric([*key, face], n)
        yield chosen
        for name, text in (("retries", "requests counted as a client coming back for the "
                            "same file (retry_window)"),
                           ("avoidances", "mirrors a client network began to avoid after "
                            "retry_threshold retries or failure reports")):
            counter = _counter(f"client_{name}", text, [])
            counter.add_metric([], stats.clients[name])
            yield counter
        reports = _counter("client_reports", "POST /report bodies (serve --beacon), by "
                           "outcome", ["outcome"])
        for outcome in ("ok", "failed", "bad", "limited"):
            reports.add_metric([outcome], stats.clients[f"reports_{outcome}"])
        yield reports
        probes = _counter("probes", "health checks done", [*TARGET, "result"])
        for (service, target, verdict), n in sorted(stats.probes.items()):
            probes.add_metric([service, target, verdict], n)
        yield probes

    def _probes(self, stats: Stats) -> Iterator[Metric]:
        phases = HistogramMetricFamily(
            PREFIX + "probe_phase_seconds", "when each phase of a health check ended, from "
            "its start (as curl -w reports them)", labels=[*TARGET, "phase"])
        for (service, target, phase), h in sorted(stats.phases.items()):
            phases.add_metric([service, target, phase], h.cumulative(), h.total)
        yield phases
        if stats.state_lag.total or any(stats.state_lag.counts):
            lag = HistogramMetricFamily(
                PREFIX + "worker_state_lag_seconds", "--workers: from the supervisor's health "
                "snapshot to a worker answering with it")
            lag.add_metric([], stats.state_lag.cumulative(), stats.state_lag.total)
            yield lag

    def _config(self) -> Iterator[Metric]:
        """As Prometheus reports its own: alert on ..._success == 0. And the GeoIP
        database's age: alert when time() - ..._build_timestamp_seconds grows past weeks."""
        rt = self.runtime
        built = _gauge("geoip_build_timestamp_seconds", "when the GeoIP database in use was "
                       "built (its metadata's build_epoch)", [])
        built.add_metric([], float(rt.locator.build_epoch))
        yield built
        if rt.asn_db is not None:
            asn = _gauge("asn_db_build_timestamp_seconds", "when the ASN database in use was "
                         "built (its metadata's build_epoch)", [])
            asn.add_metric([], float(rt.asn_db.build_epoch))
            yield asn
        ok = rt.last_reload is None or rt.last_reload.ok
        success = _gauge("config_last_reload_success",
                         "1 when the last reload (or the start) read the zones, 0 when it failed "
                         "and the previous config still serves", [])
        success.add_metric([], 1.0 if ok else 0.0)
        at = _gauge("config_last_reload_success_timestamp_seconds",
                    "when the config in force was read", [])
        at.add_metric([], rt.config_loaded)
        yield success
        yield at

    def _server(self, stats: Stats) -> Iterator[Metric]:
        rt = self.runtime
        queries = _counter("dns_queries", "DNS queries by type and response code",
                           ["qtype", "rcode"])
        for (qtype, rcode), n in sorted(stats.dns_queries.items()):
            queries.add_metric([QTYPE_NAMES.get(qtype, str(qtype)),
                                RCODE_NAMES.get(rcode, str(rcode))], n)
        responses = _counter("http_responses", "HTTP responses by status", ["status"])
        for status, n in sorted(stats.http_responses.items()):
            responses.add_metric([str(status)], n)
        yield from self._config()
        errors = _counter("errors", "unexpected errors caught at an edge, and connections "
                          "closed to stay within bounds", ["where"])
        for where in sorted({"dns", "http", *stats.errors}):
            errors.add_metric([where], stats.errors[where])
        cookies = _counter("dns_cookies", "DNS queries with a COOKIE option, by verdict "
                           "(new: a client cookie only)", ["verdict"])
        for verdict in ("new", "valid", "invalid", "malformed"):
            cookies.add_metric([verdict], stats.dns_cookies[verdict])
        limited = _counter("dns_rrl", "UDP responses rate-limited, by what was done "
                           "(dropped, or slipped: sent empty with TC=1)", ["action"])
        for action in ("dropped", "slipped"):
            limited.add_metric([action], stats.dns_rrl[action])
        tapped = _counter("dnstap", "DNS answers for --dnstap: sent (as a query and a "
                          "response message), or dropped (the queue full, or no reader)",
                          ["outcome"])
        for outcome in ("sent", "dropped"):
            tapped.add_metric([outcome], stats.dnstap[outcome])
        yield from (queries, responses, errors, cookies, limited, tapped)
        yield from _caches(stats)
        yield _gauge("health_generation", "bumps whenever a decision could change",
                     value=rt.board.snapshot.generation)
        yield _gauge("ready", "1 once the first probe round is done", value=float(rt.ready))
        if rt.state is not None:
            yield _gauge("state_file_ok", "0 while the state file has a problem (the last "
                         "good overrides stay in force)", value=float(rt.state.error is None))
        info = InfoMetricFamily(PREFIX + "build", "the running version")
        info.add_metric([], {"version": __version__})
        yield info


_EVENTS = {"hits": "hit", "misses": "miss", "evictions": "eviction"}


def _caches(stats: Stats) -> Iterator[Metric]:
    events = _counter("cache_events", "lookups and evictions of every bounded table, by "
                      "table (dns*: the DNS face's; http*: the redirector's; geoip*: "
                      "decoded records; dnssec_signatures: a miss is an RRSIG made); "
                      "a reload starts a face's tables afresh", ["cache", "event"])
    entries = _gauge("cache_entries", "entries held, all workers together", ["cache"])
    for (cache, figure), n in sorted(stats.caches.items()):
        if figure == "size":
            entries.add_metric([cache], n)
        else:
            events.add_metric([cache, _EVENTS.get(figure, figure)], n)
    yield events
    yield entries


_FIGURES = (
    ("target_ttfb_ewma_seconds", "moving average of the time to first byte, from here"),
    ("target_wait_ewma_seconds", "moving average of the server's wait (first byte less "
                                 "one round trip): what steering charges for"),
    ("target_wait_steering_seconds", "the wait as steering sees it (quantized)"),
    ("target_last_success_timestamp_seconds", "when the last check passed"),
    ("target_last_failure_timestamp_seconds", "when the last check failed"),
)


def _figure(name: str, h: Health) -> float | None:
    values = {
        "target_ttfb_ewma_seconds": h.ttfb_ewma,
        "target_wait_ewma_seconds": h.wait_ewma,
        "target_wait_steering_seconds": None if h.latency_ms is None else h.latency_ms / 1000,
        "target_last_success_timestamp_seconds": h.last_ok,
        "target_last_failure_timestamp_seconds": h.last_failure,
    }
    return values[name]


def _kinds(load: Load | None) -> list[tuple[str, float]]:
    if load is None:
        return []
    figures = (("mbps", None if load.bytes_per_second is None
                else load.bytes_per_second * 8 / 1e6),
               ("requests", load.requests_per_second), ("load", load.reported))
    return [(kind, value) for kind, value in figures if value is not None]


def _gauge(name: str, text: str, labels: list[str] | None = None,
           value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, text, value=value, labels=labels)


def _counter(name: str, text: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, text, labels=labels)


def _served(status: Status, override: Override) -> bool:
    """Whether a target is served as up (``target_up``): passing or suspect and left to
    its checks, or forced up by the operator; not when drained or marked down."""
    served = effective(status, override)
    return served is Effective.FORCED or (
        served is Effective.USABLE and status in (Status.UP, Status.SUSPECT))
