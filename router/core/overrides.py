"""Operator overrides: drain a target, take it down, or force it up, without a restart. Pure.

Overrides live in a small TOML state file, after gdnsd's ``admin_state``::

    [targets]
    tyo = "drain"              # target "tyo" in every service
    "downloads/fra" = "down"   # target "fra" in service "downloads" only

A ``service/id`` entry wins over a plain ``id`` entry. ``auto`` (or no entry) lets the
health checks decide. ``mirror-router admin`` edits the file; ``serve --state FILE``
watches it (``router.watch.statefile``). This module only turns text into overrides and back.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from enum import StrEnum

from router.core import values as v
from router.core.config import Config, ConfigError, Problem

TABLE = "targets"


class Override(StrEnum):
    """What the operator says about a target."""

    AUTO = "auto"  # the health checks decide
    DRAIN = "drain"  # no new choices, but still listed, probed and shown
    DOWN = "down"  # out, as if its check failed, and not even served when all are down
    UP = "up"  # forced up: served whatever its health check says


Overrides = Mapping[str, Override]  # selector ("id" or "service/id") → state, never AUTO

def parse(text: str, source: str) -> dict[str, Override]:
    """The state file's text → overrides; raise ``ConfigError`` naming file, key, reason."""
    problems: list[Problem] = []
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([Problem(source, "", f"not valid TOML: {e}")]) from None
    table = data.get(TABLE)
    if not isinstance(table, dict):
        # An empty or truncated file must never clear every override by accident.
        problems.append(Problem(source, TABLE, "is required (a [targets] table, maybe empty)"))
        table = {}
    problems += [Problem(source, k, "unknown key") for k in data if k != TABLE]
    found: dict[str, Override] = {}
    for key, value in table.items():
        try:
            state = v.choice(Override)(value)
            found[v.selector(key)] = state
        except v.Invalid as e:
            problems.append(Problem(source, f"{TABLE}.{key}", e.reason))
    if problems:
        raise ConfigError(problems)
    return {k: s for k, s in found.items() if s is not Override.AUTO}


def render(overrides: Overrides) -> str:
    """Overrides → the state file's text (what ``parse`` reads back)."""
    lines = ["# mirror-router operator overrides: drain | down | up (auto = no entry).",
             "# Edit with: mirror-router admin --state FILE set ID|SERVICE/ID STATE", "",
             f"[{TABLE}]"]
    lines += [f'"{k}" = "{s}"' for k, s in sorted(overrides.items()) if s is not Override.AUTO]
    return "\n".join(lines) + "\n"


def changed(overrides: Overrides, key: str, state: Override) -> dict[str, Override]:
    """A copy with ``key`` set to ``state`` (``auto`` removes the entry)."""
    out = {k: s for k, s in overrides.items() if k != key}
    if state is not Override.AUTO:
        out[key] = state
    return out


def lookup(overrides: Overrides, service: str, target: str) -> Override:
    """The override for one target: ``service/id`` first, then ``id``, else AUTO."""
    if not overrides:
        return Override.AUTO
    return overrides.get(f"{service}/{target}") or overrides.get(target) or Override.AUTO


def unknown(overrides: Iterable[str], config: Config) -> list[str]:
    """Selectors that name no target of ``config`` (kept, but worth a warning)."""
    known = {t.id for s in config.services for t in s.targets}
    known |= {f"{s.name}/{t.id}" for s in config.services for t in s.targets}
    return sorted(k for k in overrides if k not in known)
