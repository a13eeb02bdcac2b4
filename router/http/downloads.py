"""What a catalog adds to the redirector: 404 for unlisted files, the listing, Metalink,
``.sha256`` files, and the ``Digest`` and ``Link: rel=describedby`` headers of a 302.

``asked()`` turns a routed path into what is asked for: the file itself, its Metalink
(``<file>.meta4``, or ``Accept: application/metalink4+xml``), or its ``.sha256`` (served
from the catalog, as the Go origin serves it). Only a file the catalog lists has a
Metalink or a ``.sha256`` of ours: without a catalog, every path is redirected as it is
(a ``.meta4`` on a mirror, or a module version that ends so, is the mirror's to serve).
With a catalog, a file it does not list is ``NotListed`` (404) and no mirror is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

from aiohttp import web

from router.core.catalog import Catalog, CatalogFile
from router.core.steering import Decision
from router.core.urls import quoted
from router.errors import RouterError
from router.http import metalink
from router.http.routes import Route, describe_redirect

SHA256_SUFFIX = ".sha256"


class NotListed(RouterError):
    """The service has a catalog and it does not list this file (HTTP 404)."""


class Form(Enum):
    FILE = "file"  # redirect to the file
    METALINK = "metalink"  # an RFC 5854 document for the file
    SHA256 = "sha256"  # the file's sha-256, as text


@dataclass(frozen=True, slots=True)
class Asked:
    route: Route  # the file's route (without .meta4 / .sha256)
    file: CatalogFile | None  # to check on mirrors: listed, or immutable (None: neither)
    form: Form
    listed: bool = True  # in the catalog (size, hash, Metalink), not only immutable


def asked(route: Route, catalog: Catalog | None, accept: str) -> Asked:
    """What a request for ``route`` asks for; raise ``NotListed`` for unlisted files."""
    if catalog is None:  # an immutable path is checked on mirrors all the same
        return Asked(route, route.checked, Form.FILE, listed=False)
    rest = route.rest
    form = Form.METALINK if metalink.MEDIA_TYPE in accept else Form.FILE
    if catalog.lookup(rest) is None:  # maybe the Metalink or the hash of a listed file
        for suffix, derived in ((metalink.SUFFIX, Form.METALINK), (SHA256_SUFFIX, Form.SHA256)):
            if rest.endswith(suffix) and catalog.lookup(rest[: -len(suffix)]) is not None:
                form, rest = derived, rest[: -len(suffix)]
                break
    file = catalog.lookup(rest)
    if file is None or (form is Form.SHA256 and file.sha256 is None):
        raise NotListed(route.rest)
    listed = Route(route.service, rest, None, route.guarded)
    if form is Form.METALINK and not metalink.file_name(listed):
        raise NotListed(route.rest)
    return Asked(listed, file, form)


def facts(file: CatalogFile) -> dict[str, Any]:
    """What the catalog says of a file, as ``?mirrorlist`` and ``explain`` show it."""
    return {"name": file.name, "version": file.version, "size": file.size,
            "sha256": file.sha256}


def described(path: str, item: Asked, decision: Decision, address: str | None
              ) -> dict[str, Any]:
    """A path's decision as plain data: the one shape of ``?mirrorlist=json``, the admin
    listener's ``/explain`` and ``explain --json`` (the redirector adds what each mirror
    is known to have of the file; offline nothing is known)."""
    data = describe_redirect(path, item.route, decision, item.listed)
    data["client_address"] = address
    if item.file is not None:
        data["file"] = facts(item.file)
    return data


def listing(catalog: Catalog, include_all: bool) -> web.Response:
    """``GET <prefix>?mode=json``: the cached release list, as the origin serves it."""
    return web.Response(body=catalog.listing(include_all), content_type="application/json",
                        headers={"Cache-Control": "public, max-age=60"})


def sha256(file: CatalogFile) -> web.Response:
    assert file.sha256 is not None
    return web.Response(text=file.sha256, headers={"Cache-Control": "public, max-age=3600"})


def metalink_response(item: Asked, decision: Decision) -> web.Response:
    name = metalink.file_name(item.route) + metalink.SUFFIX
    return web.Response(body=metalink.document(item.route, decision, item.file),
                        content_type=metalink.MEDIA_TYPE,
                        headers={"Cache-Control": "private, no-store",
                                 "Content-Disposition": f'inline; filename="{quote(name)}"'})


def file_headers(item: Asked) -> list[tuple[str, str]]:
    """``Digest`` (RFC 3230) and ``Link: rel=describedby`` for a listed file's 302."""
    if item.file is None or not item.listed:
        return []
    prefix = item.route.service.http_prefix or "/"
    meta4 = prefix + quoted(item.route.rest) + metalink.SUFFIX
    headers = [("Link", f'<{meta4}>; rel=describedby; type="{metalink.MEDIA_TYPE}"')]
    if item.file.digest:
        headers.insert(0, ("Digest", item.file.digest))
    return headers
