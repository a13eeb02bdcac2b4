"""Request paths: checked, routed to a service, turned into mirror URLs. Pure.

A redirect's Location is always a configured target URL followed by the checked path,
re-encoded: nothing from the request can change the scheme, host or base of the URL.
``clean()`` rejects what could: ``..`` and ``.`` segments (also percent-encoded), ``//``,
backslashes, control characters (CR, LF, NUL, ...), bytes that are not UTF-8, and paths
over 1024 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from router.core.catalog import CatalogFile
from router.core.config import Config, Service, Target
from router.core.memo import Memo
from router.core.steering import Decision, describe
from router.core.urls import join, quoted
from router.errors import RouterError

MAX_PATH_BYTES = 1024
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


class PathError(RouterError):
    """The request path or query is unsafe or malformed (HTTP 400)."""


def clean(raw: str) -> str:
    """The raw (percent-encoded) request path → the decoded, checked path."""
    if len(raw.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise PathError(f"path longer than {MAX_PATH_BYTES} bytes")
    if not raw.startswith("/"):
        raise PathError("path must start with /")
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise PathError("path is not UTF-8") from None
    if _FORBIDDEN.search(raw) or _FORBIDDEN.search(path):
        raise PathError("control character or backslash in path")
    if "//" in path:
        raise PathError("empty segment (//) in path")
    for segment in path.split("/"):
        if segment.split(";", 1)[0] in (".", ".."):
            raise PathError("'.' or '..' segment in path")
    return path


def check_query(raw: str) -> str:
    """A query string to pass on: it is sent as it came, so it must be plain."""
    if _FORBIDDEN.search(raw) or " " in raw or "#" in raw:
        raise PathError("control character, space or '#' in query")
    return raw


@dataclass(frozen=True, slots=True)
class Route:
    service: Service
    rest: str  # the decoded path after the service's prefix (no leading '/')
    # ``rest`` as a file to check on mirrors when the service declares it immutable
    # (``Service.checked``), found once with the route
    checked: CatalogFile | None = None
    guarded: bool = False  # an HTTPS client is kept from http:// mirrors (found once too)


class Routes:
    """Every service with an ``http_prefix``, longest prefix first, built once per config."""

    def __init__(self, config: Config) -> None:
        entries = []
        for zone in config.zones:
            names = {zone.origin.rstrip(".")}
            for s in zone.services:
                names.update(n.rstrip(".") for n in s.dns_names)
            entries += [(s.http_prefix, names, s) for s in zone.services if s.http_prefix]
        self._entries = sorted(entries, key=lambda e: -len(e[0]))
        self.resolved: Memo[tuple[str, str | None], tuple[Route | None, str]] = Memo(65536)

    def resolve(self, raw_path: str, host: str | None = None) -> Route | None:
        """``clean()`` then ``match()``, remembered per (raw path, host); PathError as ever."""
        key = (raw_path, host)
        known = self.resolved.get(key)
        if known is None:
            try:
                known = (self.match(clean(raw_path), host), "")
            except PathError as e:
                known = (None, str(e))
            self.resolved.put(key, known)
        route, error = known
        if error:
            raise PathError(error)
        return route

    def match(self, path: str, host: str | None = None) -> Route | None:
        """The service for ``path``; between equal prefixes, the zone named by ``host``."""
        found = [(prefix, names, s) for prefix, names, s in self._entries
                 if path.startswith(prefix) or path + "/" == prefix]
        if not found:
            return None
        longest = [f for f in found if len(f[0]) == len(found[0][0])]
        wanted = (host or "").lower().rsplit(":", 1)[0].rstrip(".") if host else ""
        prefix, _names, service = next((f for f in longest if wanted in f[1]), longest[0])
        rest = path[len(prefix):]
        return Route(service, rest, service.checked(rest), service.guards_scheme)

    @property
    def services(self) -> Iterable[Service]:
        return (s for _p, _n, s in self._entries)


def _joined(target: Target, path: str, query: str) -> str:
    assert target.url is not None
    return join(target.url, path, query)


@dataclass(frozen=True, slots=True)
class Redirect:
    target: Target
    location: str
    links: tuple[str, ...]  # RFC 6249 ``Link`` values: the next choices, rel=duplicate
    counted: tuple[str, str]  # (service, target): how ``Stats.http_chosen`` counts it
    # The 302's headers, built once: ``Location``, ``Cache-Control`` (the choice is per
    # client, so no shared cache may keep it) and the ``Link`` alternates.
    headers: tuple[tuple[str, str], ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", (
            ("Location", self.location), ("Cache-Control", "private, no-store"),
            *(("Link", link) for link in self.links)))


def redirect_for(route: Route, decision: Decision, query: str = "") -> Redirect | None:
    """The 302 for a decision: the best target's URL and up to ``link_alternates`` more."""
    if not decision.ranked:
        return None
    first, *others = decision.ranked[: 1 + route.service.link_alternates]
    path = quoted(route.rest)  # once, for every URL
    links = tuple(_link(_joined(c.target, path, query), pri, c.target.country)
                  for pri, c in enumerate(others, 1))
    return Redirect(first.target, _joined(first.target, path, query), links,
                    (route.service.name, first.target.id))


def _link(url: str, pri: int, country: str | None) -> str:
    geo = f"; geo={country.lower()}" if country else ""
    return f"<{url}>; rel=duplicate; pri={pri}{geo}"


def refused(decision: Decision, listed: bool) -> bool:
    """Whether the redirector answers "not found" (``missing_status``) rather than 503:
    no mirror can serve a file the catalog does not list, because those that could lack
    it (``Decision.lacking``). A listed file is the origin's: it is only unavailable."""
    return decision.lacking and not listed


def describe_redirect(path: str, route: Route, decision: Decision,
                      listed: bool = False) -> dict[str, Any]:
    """The decision for one path as plain data: what ``?mirrorlist`` and ``explain`` show,
    with the status the redirector answers (302, ``missing_status`` or 503)."""
    data = describe(decision)
    for row, cand in zip(data["candidates"], (*decision.ranked, *decision.excluded),
                         strict=True):
        row["file_url"] = cand.target.url_for(route.rest) if cand.target.url else None
    found = redirect_for(route, decision)
    data["path"] = path
    data["status"] = 302 if found else (
        route.service.missing_status if refused(decision, listed) else 503)
    data["location"] = found.location if found else None
    data["links"] = list(found.links) if found else []
    return data
