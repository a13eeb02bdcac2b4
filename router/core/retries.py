"""Clients that come back: a client network that asks again for the same file soon after
it was sent to a mirror, with no request for another file in between, was failed by that
mirror (blocked, unreachable from there, a broken copy). After ``threshold`` such retries
from one network to one mirror, the mirror is avoided for that network, and only it, for
``avoid_for`` seconds (openSUSE/MirrorCache#606: a client stuck on a mirror that blocks
its address). Pure; bounded (``Memo``, each table in /metrics); the redirector counts
retries and reads ``avoided()``, the beacon reports failures, and the DNS face gives the
same network the same avoidance: its answer cache asks ``avoids()`` first, while any
avoidance is in force (``live``), and never keeps such an answer.

A client network is the address's /24 (IPv4) or /48 (IPv6), as ECS sends it
(``network_of``).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from router.core.ip import IPAddress
from router.core.memo import Memo

V4, V6 = 24, 48  # the prefix a client network is
SIZE = 65536  # client networks remembered at most (each table)


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


@dataclass(frozen=True, slots=True)
class Avoidance:
    """A client network that began to avoid a mirror: what one process tells the others
    (``--workers``' channel) and one node the fleet (the store), so every face of every
    process gives that network the same answer."""

    service: str
    network: bytes  # ``network_of``
    target: str
    seconds: float  # how long it holds, from when it is told


def network_of_ecs(value: bytes) -> bytes | None:
    """The client network an ECS option's value (family, source, scope, address) names:
    None when its source prefix is shorter than a client network's (it names many)."""
    family, source = int.from_bytes(value[:2], "big"), value[2]
    version, width = (4, 4) if family == 1 else (6, 16)
    if source < (V4 if version == 4 else V6):
        return None
    return network_of(int.from_bytes(value[4:4 + width].ljust(width, b"\0"), "big"), version)


def network_asking(ecs: bytes, sender: IPAddress) -> bytes | None:
    """The client network of a DNS query: its ECS option's (``ecs``, its value; b"" or
    a source prefix of 0: none), else its sender's."""
    if ecs and ecs[2]:
        return network_of_ecs(ecs)
    return network_of(int(sender), sender.version)


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
        # network -> until when it avoids some mirror (of any service): the DNS face's
        # question before its answer cache
        self.networks: Memo[bytes, float] = Memo(size)
        self.latest = 0.0  # when the last avoidance ends
        self.live = False  # an avoidance may be in force (the DNS face reads only this)
        # told of each avoidance this process begins: the other processes, the fleet
        self.journal: Callable[[Avoidance], None] | None = None
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

    def learn(self, news: Avoidance, now: float) -> None:
        """An avoidance another process or node began (told on to no one)."""
        self.avoid(news.service, news.network, news.target, now + news.seconds, now,
                   told=True)

    def avoid(self, service: str, network: bytes, target: str, until: float,
              now: float, told: bool = False) -> bool:
        """``network`` avoids ``target`` of ``service`` until ``until``: whether that is
        new (an avoidance in force is only made longer, neither counted nor logged, nor
        told to the ``journal``; nor one it was ``told`` of)."""
        self.latest = max(self.latest, until)
        self.live = True
        self.networks.put(network, max(until, self.networks.get(network) or 0.0))
        avoided = self.avoiding.get((service, network)) or {}
        new = avoided.get(target, 0.0) <= now
        if new and not told:
            self.counts["avoidances"] += 1
            if self.journal is not None:
                self.journal(Avoidance(service, network, target, until - now))
        avoided[target] = max(until, avoided.get(target, 0.0))
        self.avoiding.put((service, network), avoided)
        return new

    def avoided(self, service: str, network: bytes, now: float) -> frozenset[str]:
        """The mirrors ``network`` avoids now (an avoidance over is forgotten)."""
        if not self.avoiding:
            return frozenset()
        if now >= self.latest:  # every avoidance is over: forget them all at once
            self._forget()
            return frozenset()
        found = self.avoiding.get((service, network))
        if not found:
            return frozenset()
        live = {t: until for t, until in found.items() if until > now}
        if len(live) != len(found):
            self.avoiding.put((service, network), live)
        return frozenset(live)

    def avoids(self, network: bytes, now: float) -> bool:
        """Whether ``network`` avoids some mirror now (of any service)."""
        if now >= self.latest:
            self._forget()
            return False
        until = self.networks.get(network)
        return until is not None and until > now

    def _forget(self) -> None:
        self.avoiding.clear()
        self.networks.clear()
        self.live = False

    def caches(self) -> dict[str, dict[str, int]]:
        return {"client_last_sent": self.last.counters(),
                "client_avoidances": self.avoiding.counters(),
                "client_avoiding_networks": self.networks.counters(),
                "client_failure_reports": self.reports.counters()}
