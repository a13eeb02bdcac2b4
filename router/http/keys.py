"""What the HTTP apps and requests hold (``web.AppKey``s, ``web.RequestKey``s): one home,
so a page's handlers need not import the redirector to find what it put there."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from router.core.geo import Location
from router.core.ip import IPAddress
from router.core.runtime import Runtime


class Viewers(Protocol):
    """What the pages ask the redirector (``router.http.redirect.Redirector``): who the
    viewer of a page is and where, behind the trusted proxies, as it sees its clients
    (the status page marks it); what it answers a client for a path (``/explain``)."""

    def client(self, request: web.Request) -> tuple[str | None, Location]: ...

    async def explain(self, path: str, host: str | None, address: IPAddress,
                      secure: bool = False) -> dict[str, Any]: ...


RUNTIME = web.AppKey("runtime", Runtime)
VIEWERS = web.AppKey("viewers", Viewers)
# the status pages show the operator's view (file paths, the store, the PID): on the
# admin listener only; on the public one, what a user of the mirrors may see
PRIVATE = web.AppKey("private", bool)
# what a request learned on its way, for the access log (``--access-log``)
CLIENT = web.RequestKey("client", str)  # the client's address, behind trusted proxies
TARGET = web.RequestKey("target", str)  # the target the redirect chose
COUNTRY = web.RequestKey("country", str)  # the client's country ("--": not known)
