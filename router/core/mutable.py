"""Answers that change: how fresh each mirror's is, judged against the others'. Pure.

A Go module proxy's ``@v/list`` and ``@latest`` grow as a module is released, and a
checksum database's tree grows with every module; a proxy that caches them can be
behind the origin (proxy.golang.org's own lists flapped between instances: golang/go
#42449). A path a service declares ``mutable`` is sent only to a proxy whose answer is
known to be at least as new as the freshest known one:

- the *subject* of a path (``catalog.subject()``) is what its freshness is read from: for
  ``M/@v/list`` and ``M/@latest``, the module's version list ``M/@v/list`` (kind
  ``versions``); for ``sumdb/DB/...``, the database's signed tree head
  ``sumdb/DB/latest`` (kind ``tree``);
- each proxy's answer for the subject is read (``reading()``: the newest version in
  the list, by semantic version; the tree's size);
- ``judge()`` compares them with the origin's (a service's ``origin`` targets), or,
  without an origin's answer, with the freshest: at least as new is PRESENT, older is
  BEHIND, a 404 or 410 is MISSING (the proxy does not know the module), no answer
  teaches nothing.

The inventory (``router.watch.inventory``) fetches the subject from every target at
once and records each verdict in the ``Ledger`` like a file check, for ``mutable_ttl``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from router.core.availability import Availability, Outcome
from router.core.catalog import TREE, VERSIONS

BODY_LIMIT = 1024 * 1024  # bytes of a subject's answer read

_SEMVER = re.compile(r"v(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")


def semver(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]] | None:
    """A sort key of a module version (Semantic Versioning 2.0: a release sorts after its
    pre-releases, numeric identifiers before alphanumeric ones); None: not a version."""
    m = _SEMVER.fullmatch(version.strip())
    if m is None:
        return None
    pre = m.group(4)
    ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")) if pre else ()
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids


Reading = tuple[tuple[object, ...], str]  # (comparable: larger is newer, as shown)


def reading(kind: str, body: bytes) -> Reading | None:
    """What an answer for a subject says, comparable with other answers of its kind,
    and as shown; None when it is not such an answer."""
    text = body.decode("utf-8", "replace")
    if kind == VERSIONS:
        found = [(k, line.strip()) for line in text.splitlines() if (k := semver(line))]
        if not found and text.strip():
            return None  # lines, but none a version: not a version list
        if not found:
            return (), "no versions"
        key, version = max(found)
        return (key,), version
    if kind == TREE:  # note: origin line, tree size, root hash, blank, signatures
        lines = text.splitlines()
        if len(lines) > 1 and lines[1].isdigit():
            return (int(lines[1]),), f"tree size {lines[1]}"
    return None


@dataclass(frozen=True, slots=True)
class Answer:
    """One target's answer for a subject: its HTTP status and body (None: no answer)."""

    status: int | None
    body: bytes = b""
    error: str = ""


def judge(kind: str, answers: Mapping[str, Answer], origins: Collection[str]
          ) -> dict[str, Outcome]:
    """Each target's freshness for the subject, from every target's answer: at least as
    new as the reference (the origin's, or the freshest answer's) is PRESENT."""
    readings: dict[str, Reading] = {}
    out: dict[str, Outcome] = {}
    for target, a in answers.items():
        found = reading(kind, a.body) if a.status == 200 else None
        if found is not None:
            readings[target] = found
        elif a.status in (404, 410):
            out[target] = Outcome(Availability.MISSING, f"HTTP {a.status}")
        else:
            said = a.error or (f"HTTP {a.status}" if a.status else "no answer")
            out[target] = Outcome(None, said if a.status != 200 else "not a " + kind)
    theirs = [r for t, r in readings.items() if t in origins]
    reference = max(theirs or readings.values(), default=None)
    for target, found in readings.items():
        if reference is None or found[0] >= reference[0]:
            out[target] = Outcome(Availability.PRESENT, f"as new as the freshest: {found[1]}")
        else:
            out[target] = Outcome(Availability.BEHIND,
                                  f"behind: {found[1]}, the freshest {reference[1]}")
    return out
