"""systemd's readiness protocol (``Type=notify``): one datagram to ``$NOTIFY_SOCKET`` per
state change. No library needed; without the variable (not under systemd) it does nothing.

READY=1 once the first probe round is done and every socket serves; RELOADING=1 (with
MONOTONIC_USEC, as ``Type=notify-reload`` wants it) then READY=1 around a SIGHUP reload;
STOPPING=1 when the drain starts. Workers of ``--workers`` never notify: the supervisor
starts them without the variable.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger("router.serve")

VARIABLE = "NOTIFY_SOCKET"


def notify(*fields: str) -> None:
    """Send ``fields`` (``READY=1`` ...) to systemd, if it is listening."""
    where = os.environ.get(VARIABLE)
    if not where:
        return
    address = "\0" + where[1:] if where.startswith("@") else where  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as e:
        log.warning("notify_failed", socket=where, error=str(e))


def reloading() -> None:
    notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
