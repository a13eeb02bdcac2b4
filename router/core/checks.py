"""Health checks as the core sees them: what one check looks at (``Probe``), every check
a config asks for (``probes()``), and the one seam a kind of check implements
(``Checker``). Pure: the checks themselves are I/O and live in ``router.watch``, one
``Checker`` per ``Kind`` (``router.watch.kinds``); the prober, ``probe`` and a fleet's
observers run every kind the same way: ``await checker.check(probe)`` gives a
``Result``, which ``core.health.observe`` applies.

To add a kind of check: a member of ``config.Kind`` (the zone file's ``health.kind``),
and a ``Checker`` for it in ``router.watch.kinds.KINDS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from router.core.config import Config, HealthCheck
from router.core.health import Key, Result


@dataclass(frozen=True, slots=True)
class Probe:
    """One check the config asks for: a (service, target), the URL its check names, and
    how to check it (``check.kind`` says which ``Checker``)."""

    key: Key
    url: str
    check: HealthCheck


class Checker(Protocol):
    """One kind of health check. ``check()`` never raises: a failure is a ``Result``
    (``local`` when the reason is ours, not the target's)."""

    async def check(self, probe: Probe) -> Result: ...


def probes(config: Config) -> list[Probe]:
    """Every check the config asks for, one per (service, target) with a health URL."""
    return [Probe((s.name, t.id), t.health_url, s.health)
            for s in config.services for t in s.targets if t.health_url and t.enabled]


def unprobed(config: Config) -> list[Key]:
    """Targets with no health URL: they are always up."""
    return [(s.name, t.id) for s in config.services for t in s.targets if not t.health_url]
