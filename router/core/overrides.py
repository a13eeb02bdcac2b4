"""Operator overrides: drain a target, take it down, or force it up, without a restart. Pure.

Overrides live in a small TOML state file, after gdnsd's ``admin_state``::

    [targets]
    tyo = "drain"              # target "tyo" in every service
    "downloads/fra" = "down"   # target "fra" in service "downloads" only

A ``service/id`` entry wins over a plain ``id`` entry. ``auto`` (or no entry) lets the
health checks decide. A ``[[windows]]`` entry (``target``, ``state``, ``from``, ``until``,
UTC) holds only inside its window, as a scheduled maintenance's drain does, and wins over
the plain entry while it holds (``in_force``). ``mirror-router admin`` edits the file;
``serve --state FILE`` watches it (``router.watch.statefile``). This module only turns
text into overrides and back.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from router.core import values as v
from router.core.config import Config, ConfigError, Problem

TABLE = "targets"
WINDOWS = "windows"


class Override(StrEnum):
    """What the operator says about a target."""

    AUTO = "auto"  # the health checks decide
    DRAIN = "drain"  # no new choices, but still listed, probed and shown
    DOWN = "down"  # out, as if its check failed, and not even served when all are down
    UP = "up"  # forced up: served whatever its health check says


Overrides = Mapping[str, Override]  # selector ("id" or "service/id") → state, never AUTO


@dataclass(frozen=True, slots=True)
class Window:
    """A scheduled override: ``state`` for ``selector`` from ``start`` until ``end``
    (epoch seconds), e.g. a drain for a maintenance. It wins over the plain entry."""

    selector: str
    state: Override
    start: float
    end: float

    def holds(self, now: float) -> bool:
        return self.start <= now < self.end


Windows = tuple[Window, ...]


def parse(text: str, source: str) -> dict[str, Override]:
    """The state file's text → overrides; raise ``ConfigError`` naming file, key, reason."""
    return parse_state(text, source)[0]


def parse_state(text: str, source: str) -> tuple[dict[str, Override], Windows]:
    """The state file's text → its overrides and its windows (``[[windows]]``)."""
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
    problems += [Problem(source, k, "unknown key") for k in data if k not in (TABLE, WINDOWS)]
    found: dict[str, Override] = {}
    for key, value in table.items():
        try:
            state = v.choice(Override)(value)
            found[v.selector(key)] = state
        except v.Invalid as e:
            problems.append(Problem(source, f"{TABLE}.{key}", e.reason))
    windows = _windows(data.get(WINDOWS, []), source, problems)
    if problems:
        raise ConfigError(problems)
    return {k: s for k, s in found.items() if s is not Override.AUTO}, windows


def _windows(value: object, source: str, problems: list[Problem]) -> Windows:
    try:
        items = v.list_of_tables(value)
    except v.Invalid as e:
        problems.append(Problem(source, WINDOWS, e.reason))
        return ()
    found = []
    for i, item in enumerate(items):
        key = f"{WINDOWS}[#{i + 1}]"
        try:
            if set(item) != {"target", "state", "from", "until"}:
                raise v.Invalid("needs target, state, from and until, and nothing else")
            state = v.choice(Override)(item["state"])
            start, end = (_utc(item[k]) for k in ("from", "until"))
            if state is Override.AUTO or end <= start:
                raise v.Invalid("state must be drain, down or up, and until after from")
            found.append(Window(v.selector(item["target"]), state, start, end))
        except v.Invalid as e:
            problems.append(Problem(source, key, e.reason))
    return tuple(found)


def _utc(value: object) -> float:
    """A time written in the file: UTC, absolute (``2026-12-08T02:00:00Z``)."""
    text = v.string(value)
    if text.startswith(("+", "now")):
        raise v.Invalid(f"{text!r}: give a UTC time (2026-12-08T02:00:00Z) in the file")
    return v.moment(text, 0.0)


def render(overrides: Overrides, windows: Windows = ()) -> str:
    """Overrides and windows → the state file's text (what ``parse_state`` reads back)."""
    lines = ["# mirror-router operator overrides: drain | down | up (auto = no entry).",
             "# Edit with: mirror-router admin --state FILE set ID|SERVICE/ID STATE "
             "[--from TIME --until TIME]", "", f"[{TABLE}]"]
    lines += [f'"{k}" = "{s}"' for k, s in sorted(overrides.items()) if s is not Override.AUTO]
    for w in sorted(windows, key=lambda w: (w.start, w.selector)):
        lines += ["", f"[[{WINDOWS}]]", f'target = "{w.selector}"', f'state = "{w.state}"',
                  f'from = "{v.stamp(w.start)}"', f'until = "{v.stamp(w.end)}"']
    return "\n".join(lines) + "\n"


def in_force(overrides: Overrides, windows: Windows, now: float) -> dict[str, Override]:
    """The overrides at ``now``: the plain entries, then every window that holds."""
    out = dict(overrides)
    for w in sorted(windows, key=lambda w: w.start):
        if w.holds(now):
            out[w.selector] = w.state
    return out


def moves(windows: Windows, before: Overrides, after: Overrides, now: float
          ) -> list[tuple[str, Window]]:
    """The windows that began or ended between two views of the overrides in force
    (``before`` and ``after``, at ``now``): ``("started" | "ended", window)``, for the log."""
    out = []
    for w in windows:
        if w.holds(now) and before.get(w.selector) != w.state:
            out.append(("started", w))
        elif now >= w.end and after.get(w.selector) != w.state \
                and before.get(w.selector) == w.state:
            out.append(("ended", w))
    return out


def listed(windows: Windows, now: float) -> list[dict[str, Any]]:
    """The windows not over at ``now``, soonest first, as /status and ``fleet status``
    show them."""
    return [{"target": w.selector, "state": w.state.value, "from": v.stamp(w.start),
             "until": v.stamp(w.end), "now": w.holds(now)}
            for w in sorted(windows, key=lambda w: w.start) if w.end > now]


def next_change(windows: Windows, now: float) -> float | None:
    """When a window next starts or ends after ``now`` (None: none will)."""
    coming = [t for w in windows for t in (w.start, w.end) if t > now]
    return min(coming) if coming else None


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
