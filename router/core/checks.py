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

from router.core.config import Config, HealthCheck, Kind, Service, Target
from router.core.health import Key, Result, address_id
from router.core.ip import IPAddress


@dataclass(frozen=True, slots=True)
class Probe:
    """One check the config asks for: a (service, target), the URL its check names, and
    how to check it (``check.kind`` says which ``Checker``). With an ``address``, one of
    a DNS target's addresses is checked on its own: the check connects there, and says
    the URL's host name (``Host``, TLS SNI and the certificate's name) as users will."""

    key: Key
    url: str
    check: HealthCheck
    address: IPAddress | None = None


class Checker(Protocol):
    """One kind of health check. ``check()`` never raises: a failure is a ``Result``
    (``local`` when the reason is ours, not the target's)."""

    async def check(self, probe: Probe) -> Result: ...


def probes(config: Config) -> list[Probe]:
    """Every check the config asks for: one per (service, target) with a health URL, or
    for a target whose addresses DNS answers carry, one per address (``groups()``)."""
    return [Probe((s.name, t.id), t.health_url, s.health) if not per_address(s, t)
            else Probe((s.name, address_id(t.id, a)), t.health_url, s.health, a)
            for s in config.services for t in s.targets if t.health_url and t.enabled
            for a in (t.addresses if per_address(s, t) else (None,))]


def per_address(service: Service, target: Target) -> bool:
    """Whether each address of ``target`` is checked on its own: the service's checks
    are of the ``addresses`` kind (for DNS answers: each address must work by itself)."""
    return service.health.kind is Kind.ADDRESSES and bool(target.addresses)


def groups(config: Config) -> dict[Key, tuple[Key, ...]]:
    """Targets whose addresses are checked one by one: target key → address keys."""
    return {(s.name, t.id): tuple((s.name, address_id(t.id, a)) for a in t.addresses)
            for s in config.services for t in s.targets
            if t.health_url and t.enabled and per_address(s, t)}


def unprobed(config: Config) -> list[Key]:
    """Targets with no health URL: they are always up."""
    return [(s.name, t.id) for s in config.services for t in s.targets if not t.health_url]
