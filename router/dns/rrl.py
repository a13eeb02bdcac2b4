"""Response rate limiting over UDP (after BIND's RRL), so that an open authoritative
server is no amplifier for a spoofed victim.

Two token buckets decide each UDP response (TCP, and queries with a valid server cookie,
are exempt: their source address is proven):

- one per **(client prefix, ECS subnet, class, name)**: the sender's /24 (IPv4) or /56
  (IPv6), the query's Client Subnet option as sent (none: empty), and the response's
  class: an answer (keyed by the question, name and type), NXDOMAIN or an error (keyed by
  class only, so a random-subdomain flood is one bucket), at ``rate`` a second. A
  resolver that sends ECS for many client subnets fills many buckets, each slowly: it is
  not throttled, however many clients it serves.
- one per **client prefix** alone, at ``per_source`` a second: what a spoofer who varies
  the ECS option or the name can still send a victim is capped here.

A limited response is dropped, except every ``slip``-th one, which is sent truncated and
empty (TC=1), so a real client behind a spoofed-upon address retries over TCP. With
``--workers N`` each worker applies rate / N: SO_REUSEPORT spreads one sender's queries
over the workers evenly, so the server as a whole holds the configured rate.

The buckets are bounded (``MAX_BUCKETS``; all forgotten at once when full).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from router.core.config import RrlConfig
from router.core.ip import IPAddress
from router.core.memo import Memo

MAX_BUCKETS = 200_000


class Action(Enum):
    SEND = "sent"
    DROP = "dropped"
    SLIP = "slipped"  # sent truncated and empty


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float
    limited: int = 0  # responses limited so far (every slip-th one slips)


class Limiter:
    def __init__(self, config: RrlConfig, workers: int = 1) -> None:
        self.config = config
        self.rate = config.responses_per_second / workers
        self.per_source = config.per_source_per_second / workers
        self.buckets: Memo[object, Bucket] = Memo(MAX_BUCKETS)

    def admit(self, peer: IPAddress, ecs: bytes, question: bytes, reply: bytes,
              now: float) -> Action:
        """What to do with ``reply`` (a UDP response to ``peer``) at time ``now``."""
        prefix = _prefix(peer, self.config)
        rcode = reply[3] & 0xF
        answered = rcode == 0 and struct.unpack_from("!H", reply, 6)[0] > 0
        kind = (b"answer", question.lower()) if answered else (b"rcode", bytes([rcode]))
        bucket = self._take((prefix, ecs, *kind), self.rate, now)
        source = self._take(prefix, self.per_source, now)
        limited = bucket if bucket.tokens < 0 else source if source.tokens < 0 else None
        if limited is None:
            return Action.SEND
        limited.limited += 1
        slip = self.config.slip
        return Action.SLIP if slip and limited.limited % slip == 0 else Action.DROP

    def _take(self, key: object, rate: float, now: float) -> Bucket:
        buckets = self.buckets
        bucket = buckets.fresh.get(key) or buckets.from_aged(key)
        if bucket is None:
            bucket = buckets.put(key, Bucket(max(1.0, rate), now))
        # refill up to one second's worth (the burst), then spend one; a limited bucket
        # stays below zero no lower than a second's debt, so it recovers within seconds
        burst = max(1.0, rate)
        bucket.tokens = max(-burst, min(burst, bucket.tokens + (now - bucket.at) * rate) - 1)
        bucket.at = now
        return bucket


def _prefix(peer: IPAddress, config: RrlConfig) -> bytes:
    bits = config.ipv4_prefix if peer.version == 4 else config.ipv6_prefix
    packed = int.from_bytes(peer.packed, "big") >> (peer.max_prefixlen - bits)
    return bytes([peer.version]) + packed.to_bytes(16, "big")
