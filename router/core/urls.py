"""The one place a URL is joined from a base URL and a path. Pure.

Every URL mirror-router builds starts with a configured base (a target's ``url``), so
nothing from a request can change its scheme, host or base: health-check URLs
(``url`` + ``health.path``), redirect Locations, Link alternates, Metalink entries and
the availability HEADs all come from ``join()``.
"""

from __future__ import annotations

from urllib.parse import quote

# Characters left as they are in a mirror URL: RFC 3986 pchar minus '%', plus '/'.
# Go module paths need '!' (escaped capitals) and '@' (@v, @latest).
SAFE = "/!$&'()*+,;=:@~-._"


def join(base: str, path: str, query: str = "") -> str:
    """``https://m/golang/`` + ``x`` or ``/x`` → ``https://m/golang/x`` (never above the
    base), plus ``?query`` when one is given. ``path`` is taken as already encoded."""
    url = base.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{query}" if query else url


def quoted(path: str) -> str:
    """A decoded, checked path (``router.http.routes.clean``) encoded for a URL."""
    return quote(path, safe=SAFE)


def mirror_url(base: str, path: str, query: str = "") -> str:
    """``join()`` of a decoded path: the URL of a file on a mirror."""
    return join(base, quoted(path), query)
