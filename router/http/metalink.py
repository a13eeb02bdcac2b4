"""RFC 5854 Metalink documents: every good mirror for one client, with size and hash. Pure.

A download tool (aria2c, for one) fed ``<file>.meta4`` fetches from several mirrors at
once and checks the sha-256 the catalog lists. The mirrors are the decision's ranking for
this client, in that order (``priority`` 1 is the best), each with its country as
``location``; the origin comes last only if it ranks last.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from router import __version__
from router.core.catalog import CatalogFile
from router.core.steering import Decision
from router.http.routes import Route

NS = "urn:ietf:params:xml:ns:metalink"
MEDIA_TYPE = "application/metalink4+xml"
SUFFIX = ".meta4"
MAX_PRIORITY = 999999  # RFC 5854 4.2.16: priority is 1 to 999999

ET.register_namespace("", NS)


def file_name(route: Route) -> str:
    """The ``name`` of the file in the document: the last segment of its path."""
    return route.rest.rsplit("/", 1)[-1]


def document(route: Route, decision: Decision, file: CatalogFile | None) -> bytes:
    """The Metalink for ``route``'s file: the ranked mirrors, and size and hash if known."""
    root = ET.Element(f"{{{NS}}}metalink")
    ET.SubElement(root, f"{{{NS}}}generator").text = f"mirror-router/{__version__}"
    entry = ET.SubElement(root, f"{{{NS}}}file", name=file_name(route))
    if file is not None and file.size is not None:
        ET.SubElement(entry, f"{{{NS}}}size").text = str(file.size)
    if file is not None and file.sha256 is not None:
        ET.SubElement(entry, f"{{{NS}}}hash", type="sha-256").text = file.sha256
    for priority, cand in enumerate(decision.ranked, 1):
        attrs = {"priority": str(min(priority, MAX_PRIORITY))}
        if cand.target.country:
            attrs["location"] = cand.target.country.lower()
        ET.SubElement(entry, f"{{{NS}}}url", attrs).text = cand.target.url_for(route.rest)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"
