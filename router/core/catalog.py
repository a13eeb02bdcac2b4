"""The catalog: what the origin publishes, read from its release list. Pure.

Format ``go`` is the Go release list (``https://go.dev/dl/?mode=json&include=all``): an
array of releases, newest first, each with ``version``, ``stable`` and ``files[]``
(``filename``, ``os``, ``arch``, ``version``, ``sha256``, ``size``, ``kind``).

``parse_go()`` turns those bytes into a frozen ``Catalog``: every file by name with its
size and sha-256, the newest stable release (what the freshness probe checks), the files
that are that new or newer (what a stale mirror is never used for), and the listing
re-encoded once, so that serving ``?mode=json`` is a copy of bytes. A list that does not
parse raises ``CatalogError`` with the place and the reason; nothing here does I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from router.errors import RouterError


class CatalogFormat(StrEnum):
    GO = "go"  # the Go release list (go.dev/dl/?mode=json&include=all)


@dataclass(frozen=True, slots=True)
class CatalogSpec:
    """Where a service's catalog comes from (the ``catalog`` key of a service)."""

    url: str
    format: CatalogFormat = CatalogFormat.GO
    refresh: float = 3600.0  # fetch again this often
    timeout: float = 30.0  # one fetch may take this long


@dataclass(frozen=True, slots=True)
class FileChecks:
    """How per-file availability is learned (the ``availability_*`` keys of a service)."""

    wait: float = 0.3  # a request waits this long at most for checks in flight
    ttl: float = 3600.0  # a "present" result is checked again after this long
    negative_ttl: float = 300.0  # a "missing", "wrong size" or failed check: after this
    per_mirror: int = 4  # HEAD requests in flight at once per mirror


# The kinds of a subject whose answer changes (``router.core.mutable``): checked for
# freshness against the other mirrors', for ``mutable_ttl``.
VERSIONS = "versions"  # a module's version list: its newest version is what counts
TREE = "tree"  # a checksum database's signed tree head: its size is what counts
MUTABLE_KINDS = frozenset({VERSIONS, TREE})


class CatalogError(RouterError):
    """The release list is not what its format says (the last good copy stays)."""


@dataclass(frozen=True, slots=True)
class CatalogFile:
    name: str
    version: str
    size: int | None = None  # bytes; None: the list does not say
    sha256: str | None = None  # lower-case hex; None: the list does not say
    os: str = ""
    arch: str = ""
    kind: str = ""

    @property
    def digest(self) -> str | None:
        """The RFC 3230 ``Digest`` value: ``sha-256=<base64>``."""
        if self.sha256 is None:
            return None
        return "sha-256=" + base64.b64encode(bytes.fromhex(self.sha256)).decode("ascii")


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    stable: bool
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Catalog:
    files: Mapping[str, CatalogFile]
    releases: tuple[Release, ...]  # newest first
    newest_stable: Release | None
    new_files: frozenset[str]  # files of the newest stable release, or of newer ones
    fingerprint: str  # sha-256 of what was fetched: a new one means the list changed
    listing_all: bytes = b"[]"  # ?mode=json&include=all
    listing_current: bytes = b"[]"  # ?mode=json: the newest stable of the two newest lines

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Picklable (``files`` is a read-only mapping): for ``--workers``' channel."""
        return _catalog, (dict(self.files), self.releases, self.newest_stable, self.new_files,
                          self.fingerprint, self.listing_all, self.listing_current)

    def lookup(self, name: str) -> CatalogFile | None:
        return self.files.get(name)

    def listing(self, include_all: bool) -> bytes:
        return self.listing_all if include_all else self.listing_current

    def probe_files(self) -> tuple[CatalogFile, ...]:
        """The files the freshness probe HEADs on every mirror: the newest stable release."""
        if self.newest_stable is None:
            return ()
        return tuple(self.files[n] for n in self.newest_stable.files)


def _catalog(files: dict[str, CatalogFile], *rest: Any) -> Catalog:
    return Catalog(MappingProxyType(files), *rest)


# ---------------------------------------------------------------- Go versions

_GO_VERSION = re.compile(r"go(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(beta|rc)(\d+))?")
_PRE = {"beta": 0, "rc": 1, None: 2}

VersionKey = tuple[int, int, int, int, int]


def go_version_key(version: str) -> VersionKey | None:
    """``go1.22.5`` → (1, 22, 5, 2, 0); ``go1.23rc1`` → (1, 23, 0, 1, 1); else None."""
    m = _GO_VERSION.fullmatch(version)
    if m is None:
        return None
    major, minor, patch, pre, n = m.groups()
    return (int(major), int(minor or 0), int(patch or 0), _PRE[pre], int(n or 0))


# ---------------------------------------------------------------- parsing


def parse_go(data: bytes) -> Catalog:
    """The Go release list → ``Catalog``; raise ``CatalogError`` saying where and why."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CatalogError(f"not JSON: {e}") from None
    if not isinstance(raw, list):
        raise CatalogError("must be a JSON array of releases")
    files: dict[str, CatalogFile] = {}
    releases = [_release(item, f"[{i}]", files) for i, item in enumerate(raw)]
    source = {id(r): item for r, item in zip(releases, raw, strict=True)}
    ordered = _newest_first(releases)
    newest = next((r for r in ordered if r.stable), None)
    new = ordered[: ordered.index(newest) + 1] if newest else []
    return Catalog(
        files=MappingProxyType(files),
        releases=tuple(ordered),
        newest_stable=newest,
        new_files=frozenset(n for r in new for n in r.files),
        fingerprint=hashlib.sha256(data).hexdigest(),
        listing_all=_encode(raw),
        listing_current=_encode([source[id(r)] for r in _current(ordered)]),
    )


def _release(item: Any, where: str, files: dict[str, CatalogFile]) -> Release:
    if not isinstance(item, dict):
        raise CatalogError(f"{where}: a release must be an object")
    version = _field(item, "version", str, where)
    stable = _field(item, "stable", bool, where)
    entries = _field(item, "files", list, where)
    names = []
    for j, entry in enumerate(entries):
        f = _file(entry, f"{where} ({version}).files[{j}]", version)
        files.setdefault(f.name, f)  # a name listed twice: the first (newest) wins
        names.append(f.name)
    return Release(version, stable, tuple(names))


def _file(entry: Any, where: str, version: str) -> CatalogFile:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: a file must be an object")
    name = _field(entry, "filename", str, where)
    if not name or "/" in name or "\\" in name or name in (".", "..") or not name.isprintable():
        raise CatalogError(f"{where}.filename: {name!r} is not a plain file name")
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise CatalogError(f"{where}.size: must be a whole number of bytes, not {size!r}")
    digest = entry.get("sha256") or None
    if digest is not None and not (isinstance(digest, str)
                                   and re.fullmatch(r"[0-9a-fA-F]{64}", digest)):
        raise CatalogError(f"{where}.sha256: {digest!r} is not 64 hex digits")
    return CatalogFile(name, version, size, digest.lower() if digest else None,
                       _text(entry, "os"), _text(entry, "arch"), _text(entry, "kind"))


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise CatalogError(f"{where}.{key}: must be {kind.__name__}, not {value!r}"[:300])
    return value


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key, "")
    return value if isinstance(value, str) else ""


def _newest_first(releases: list[Release]) -> list[Release]:
    """By Go version when every version parses; else as listed (the origin lists newest first)."""
    keyed = [(k, r) for r in releases if (k := go_version_key(r.version)) is not None]
    if len(keyed) < len(releases):
        return list(releases)
    return [r for _k, r in sorted(keyed, key=lambda p: p[0], reverse=True)]


def _current(ordered: list[Release]) -> list[Release]:
    """What ``?mode=json`` lists: the newest stable release of the two newest minor lines."""
    lines: dict[tuple[int, int] | str, Release] = {}
    for r in ordered:
        key = go_version_key(r.version)
        line = key[:2] if key else r.version
        if r.stable and line not in lines and len(lines) < 2:
            lines[line] = r
    return list(lines.values())


def _encode(releases: list[Any]) -> bytes:
    return json.dumps(releases, indent=1).encode("utf-8") + b"\n"


def subject(path: str) -> CatalogFile | None:
    """What the freshness of ``path`` is read from (None: nothing known to compare)."""
    if path.endswith("/@v/list") or path.endswith("/@latest"):
        module = path.rpartition("/@")[0]
        return CatalogFile(f"{module}/@v/list", "", kind=VERSIONS) if module else None
    if path.startswith("sumdb/"):
        name = path.split("/")[1]
        return CatalogFile(f"sumdb/{name}/latest", "", kind=TREE) if name else None
    return None
