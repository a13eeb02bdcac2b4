"""HTML pages, self-contained (no external assets): the mirror list."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } th, td { padding: .3em .7em; text-align: left; }
th { border-bottom: 2px solid #888; } tr:nth-child(even) { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #17752d; } .down { color: #b00020; } .unknown { color: #8a6d00; }
.excluded { color: #888; } code { background: #eee; padding: 0 .3em; }
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _km(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:,.0f}"


def _file_cells(row: dict[str, Any]) -> str:
    checked = row.get("file_checked")
    title = f" title='{escape(checked)}'" if checked else ""
    file = escape(row["file"]) if row.get("file") else "&ndash;"
    return (f"<td{title}>{file}</td>"
            f"<td>{escape(row['freshness'])}</td>")


def _file_facts(file: dict[str, Any] | None) -> str:
    """A catalog file's version, size and SHA-256 (what a download is checked against)."""
    if file is None:
        return ""
    size = f"{file['size']:,} bytes" if file.get("size") is not None else "size not listed"
    digest = (f"SHA-256 <code>{escape(file['sha256'])}</code>" if file.get("sha256")
              else "no SHA-256 listed")
    version = f" ({escape(file['version'])})" if file.get("version") else ""
    return f"<p>File <code>{escape(file['name'])}</code>{version}: {size}, {digest}</p>"


def mirrorlist(data: dict[str, Any]) -> str:
    """The ranked candidates for one client and one path."""
    c = data["client"]
    where = ", ".join(escape(str(x)) for x in (c["city"], c["country"], c["continent"]) if x)
    rows = []
    files = any("freshness" in row for row in data["candidates"])
    for row in data["candidates"]:
        link = (f"<a href='{escape(row['file_url'])}'>{escape(row['file_url'])}</a>"
                if row["file_url"] else "&ndash;")
        cls = "excluded" if row["excluded"] else ""
        rank = f"{row['rank'] or '&ndash;'}{'*' if row['chosen'] else ''}"
        rows.append(
            f"<tr class='{cls}'><td class=num>{rank}</td>"
            f"<td>{escape(row['id'])}</td><td>{link}</td>"
            f"<td>{escape(row['country'] or '-')}</td>"
            f"<td class=num>{_km(row['distance_km'])}</td>"
            f"<td class='{escape(row['state'])}'>{escape(row['state'])}</td>"
            f"<td>{escape(row['admin'])}</td><td class=num>{_km(row['latency_ms'])}</td>"
            f"<td class=num>{_km(row['latency_km'])}</td>"
            f"<td class=num>{_km(row['cost'])}</td>"
            + (_file_cells(row) if files else "") + f"<td>{escape(row['reason'])}</td></tr>")
    location = data["location"]
    defaulted = (" GeoIP does not place this network: ranked from the service's "
                 "<code>default_location</code>." if data.get("default_location_used") else "")
    head = (f"<h1>Mirrors for <code>{escape(data['path'])}</code></h1>"
            f"<p>Client {escape(str(data.get('client_address') or '?'))} in network "
            f"<code>{escape(c['network'])}</code>{': ' + where if where else ''}.{defaulted} "
            f"Service <code>{escape(data['service'])}</code>"
            f"{' &mdash; <b>degraded: every mirror is down</b>' if data['degraded'] else ''}.</p>"
            f"<p>Redirect: {escape(location) if location else 'none (503)'}</p>"
            + _file_facts(data.get("file")))
    table = ("<table><tr><th>rank</th><th>mirror</th><th>url</th><th>country</th><th>km</th>"
             "<th>state</th><th>override</th><th>wait ms</th><th>latency km</th><th>cost</th>"
             + ("<th>file</th><th>freshness</th>" if files else "")
             + "<th>reason</th></tr>" + "".join(rows) + "</table>")
    return _page(f"Mirrors for {data['path']}", head + table)
