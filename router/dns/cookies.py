"""DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018).

A client cookie is 8 bytes of the client's choosing; the server cookie we give back is
RFC 9018's: version 1, three reserved bytes, the time in seconds, and SipHash-2-4 (key:
the 16-byte secret) of client cookie | version | reserved | time | client address. Every
worker and every node of a deployment that shares the secret makes and accepts the same
cookies, so a resolver may ask any of them. During a rollover the previous secret is
accepted too (new cookies are always made with the current one).

``judge()`` is pure: the query's COOKIE option, the client's address and the time in, a
``Verdict`` and the option to send back out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from siphash24 import siphash24

VERSION_HEAD = b"\x01\x00\x00\x00"  # version 1, reserved
PAST = 3600  # seconds a server cookie stays valid (RFC 9018 4.3: one hour)
FUTURE = 300  # seconds a server cookie's time may be ahead of ours (clock skew)


class Verdict(Enum):
    MALFORMED = "malformed"  # a length no cookie has: FORMERR (RFC 7873 5.2.2)
    NEW = "new"  # a client cookie only: answered, with our server cookie
    VALID = "valid"  # a server cookie we made (this secret or the previous) and current
    INVALID = "invalid"  # a server cookie we did not make, or too old: BADCOOKIE over UDP


@dataclass(frozen=True, slots=True)
class Secrets:
    current: bytes  # 16 bytes
    previous: bytes | None = None  # accepted during a rollover, never used to make one


def new_secret() -> bytes:
    """A random 16-byte secret, for a server whose nodes share none."""
    return os.urandom(16)


def server_cookie(secret: bytes, client: bytes, address: bytes, now: int) -> bytes:
    """RFC 9018 4.4: the 16-byte server cookie for ``client`` at ``address`` (packed)."""
    head = VERSION_HEAD + (now & 0xFFFFFFFF).to_bytes(4, "big")
    digest: bytes = siphash24(client + head + address, key=secret).digest()
    return head + digest


def judge(option: bytes, address: bytes, now: int, secrets: Secrets) -> tuple[Verdict, bytes]:
    """The verdict on a query's COOKIE option, and the option data to answer with (the
    client cookie and a fresh server cookie; empty when malformed)."""
    if len(option) != 8 and not 16 <= len(option) <= 40:
        return Verdict.MALFORMED, b""
    client = option[:8]
    fresh = client + server_cookie(secrets.current, client, address, now)
    if len(option) == 8:
        return Verdict.NEW, fresh
    theirs = option[8:]
    if len(theirs) != 16 or theirs[:4] != VERSION_HEAD:
        return Verdict.INVALID, fresh
    stamp = int.from_bytes(theirs[4:8], "big")
    age = (now - stamp + 2**31) % 2**32 - 2**31  # serial-number arithmetic (RFC 1982)
    if not -FUTURE <= age <= PAST:
        return Verdict.INVALID, fresh
    for secret in (secrets.current, secrets.previous):
        if secret is not None and server_cookie(secret, client, address, stamp) == theirs:
            return Verdict.VALID, fresh
    return Verdict.INVALID, fresh
