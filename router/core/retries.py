"""Clients that come back: a client network that asks again for the same file soon after
it was sent to a mirror, with no request for another file in between, was failed by that
mirror (blocked, unreachable from there, a broken copy). After ``threshold`` such retries
from one network to one mirror, the mirror is avoided for that network, and only it, for
``avoid_for`` seconds (openSUSE/MirrorCache#606: a client stuck on a mirror that blocks
its address). Pure; bounded (``Memo``, each table in /metrics); the redirector counts
retries and reads ``avoided()``, the beacon reports failures (the DNS face does not
apply avoidances yet: its answer cache sits before steering).

A client network is the address's /24 (IPv4) or /48 (IPv6), as ECS sends it
(``network_of``).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from router.core.memo import Memo

V4, V6 = 24, 48  # the prefix a client network is
SIZE = 65536  # client networks remembered at most (each table)
SAMPLES = 101  # reported throughputs kept per mirror (the beacon)


def shown(network: bytes) -> str:
    """A client network as logs show it: ``1.0.16.0/24``."""
    address = network[:-1]
    if len(address) == 4:
        return f"{'.'.join(str(b) for b in address)}/{network[-1]}"
    return f"{ipaddress.IPv6Address(address)}/{network[-1]}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retry_window``, ``retry_threshold`` and ``avoid_for`` (a service's keys)."""

    window: float = 30.0
    threshold: int = 2
    avoid_for: float = 600.0


def network_of(value: int, version: int) -> bytes:
    """The client network of an address: its first address, packed, masked to /24 or
    /48, and the prefix length."""
    width = 32 if version == 4 else 128
    bits = V4 if version == 4 else V6
    first = value >> (width - bits) << (width - bits)
    return first.to_bytes(width // 8, "big") + bytes((bits,))


# What an address was last sent: (path, target, when, retries in a row to it). A plain
# tuple of strings and numbers, which the collector stops tracking: the table holds tens
# of thousands, and a class instance each would make every full collection walk them.
_Last = tuple[str, str, float, int]


class Retries:
    """What each client was last sent, and which mirrors each client network avoids.

    A retry is one client's (one address's): many hosts behind one network fetching the
    same file (a CI farm) are not retries of each other. What a retry teaches is the
    network's: the mirror is avoided for every client of it."""

    def __init__(self, counts: Counter[str] | None = None, size: int = SIZE) -> None:
        self.last: Memo[tuple[str, str], _Last] = Memo(size)  # (service, address as text)
        # (service, network) -> target -> until when it is avoided
        self.avoiding: Memo[tuple[str, bytes], dict[str, float]] = Memo(size)
        self.reports: Memo[tuple[str, bytes, str], int] = Memo(size)  # failures reported
        # (service, target) -> the last SAMPLES reported throughputs (bytes a second)
        self.speeds: dict[tuple[str, str], list[float]] = {}
        self.latest = 0.0  # when the last avoidance ends
        # "retries" counted and "avoidances" begun (Stats.clients: /metrics)
        self.counts: Counter[str] = Counter() if counts is None else counts

    def asked(self, service: str, address: str, path: str, now: float,
              policy: RetryPolicy) -> str | None:
        """A GET of ``path`` from ``address``: a retry of the mirror it was last sent to
        when that was for the same path within the window. Returns the mirror its network
        must now avoid (``avoid()``; None: none): the threshold was reached."""
        key = (service, address)
        last = self.last.get(key)
        if last is None or last[0] != path or now - last[2] > policy.window:
            return None
        self.counts["retries"] += 1
        count = last[3] + 1
        if count < policy.threshold:
            self.last.put(key, (path, last[1], last[2], count))
            return None
        self.last.put(key, (path, last[1], last[2], 0))
        return last[1]

    def sent(self, service: str, address: str, path: str, target: str, now: float) -> None:
        """``address`` was sent to ``target`` for ``path``: a retry counts from now."""
        key = (service, address)
        last = self.last.get(key)
        count = last[3] if last is not None and last[0] == path and last[1] == target else 0
        self.last.put(key, (path, target, now, count))

    def failed(self, service: str, network: bytes, target: str, now: float,
               policy: RetryPolicy) -> bool:
        """A client of ``network`` reported a failed download from ``target`` (the
        beacon): counted as a retry of it; at the threshold the network avoids it.
        Whether this report began an avoidance (not one in force made longer)."""
        key = (service, network, target)
        count = (self.reports.get(key) or 0) + 1
        if count < policy.threshold:
            self.reports.put(key, count)
            return False
        self.reports.pop(key)
        return self.avoid(service, network, target, now + policy.avoid_for, now)

    def throughput(self, service: str, target: str, size: int, seconds: float) -> None:
        """A client's download from ``target``: its bytes a second, the last ``SAMPLES``
        kept for a median (``median_throughput``)."""
        samples = self.speeds.setdefault((service, target), [])
        samples.append(size / seconds)
        del samples[:-SAMPLES]

    def median_throughput(self, service: str, target: str) -> float | None:
        samples = sorted(self.speeds.get((service, target), ()))
        return samples[len(samples) // 2] if samples else None

    def avoid(self, service: str, network: bytes, target: str, until: float,
              now: float) -> bool:
        """``network`` avoids ``target`` of ``service`` until ``until``: whether that is
        new (an avoidance in force is only made longer, neither counted nor logged)."""
        self.latest = max(self.latest, until)
        avoided = self.avoiding.get((service, network)) or {}
        new = avoided.get(target, 0.0) <= now
        if new:
            self.counts["avoidances"] += 1
        avoided[target] = until
        self.avoiding.put((service, network), avoided)
        return new

    def avoided(self, service: str, network: bytes, now: float) -> frozenset[str]:
        """The mirrors ``network`` avoids now (an avoidance over is forgotten)."""
        if not self.avoiding:
            return frozenset()
        if now >= self.latest:  # every avoidance is over: forget them all at once
            self.avoiding.clear()
            return frozenset()
        found = self.avoiding.get((service, network))
        if not found:
            return frozenset()
        live = {t: until for t, until in found.items() if until > now}
        if len(live) != len(found):
            self.avoiding.put((service, network), live)
        return frozenset(live)

    def caches(self) -> dict[str, dict[str, int]]:
        return {"client_last_sent": self.last.counters(),
                "client_avoidances": self.avoiding.counters(),
                "client_failure_reports": self.reports.counters()}
