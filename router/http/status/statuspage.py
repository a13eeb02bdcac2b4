"""The ``/status`` page: one table per service, then a world map. Self-contained HTML.

No script, no external asset: the map is inline SVG (``router.http.status.worldmap``), the style is
inline, and the page refreshes itself every ``REFRESH`` seconds.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from router.core.earth import Point
from router.http.status.worldmap import COLOURS, Marker, svg

REFRESH = 10
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 1.5em; color: #222; }
h1 { margin: 0 0 .2em; } h2 { margin: 1em 0 .3em; }
.meta { color: #555; overflow-wrap: anywhere; }
#map { width: 100%; max-width: 960px; display: block; border: 1px solid #bbb; }
.wrap { overflow-x: auto; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .25em .6em; text-align: left; vertical-align: top; }
th { border-bottom: 2px solid #888; white-space: nowrap; }
tr:nth-child(even) { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.dot { display: inline-block; width: .8em; height: .8em; border-radius: 50%; }
.err { color: #b00020; max-width: 28em; } .bad { color: #b00020; font-weight: bold; }
.none { color: #888; } small.url { color: #555; overflow-wrap: anywhere; }
@media (max-width: 640px) {
  body { margin: .5em; font-size: 13px; } th, td { padding: .2em .35em; }
  #map text, #map line { display: none; }
}
"""


def page(data: dict[str, Any]) -> str:
    """The tables first (what an operator looks for), then the map and its legend, the
    signed zones and the fleet."""
    body = (_header(data) + "".join(_service(s) for s in data["services"])
            + "<h2>Map</h2>" + svg(_markers(data)) + _legend(data)
            + _signing(data["dnssec"]) + _fleet(data["fleet"]))
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta http-equiv=refresh content={REFRESH}>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>mirror-router status</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _header(data: dict[str, Any]) -> str:
    state = data["state_file"]
    note = ""
    if state is not None and not state["ok"]:
        note = (f"<p class=bad>State file problem (the last good overrides stay in force): "
                f"{escape(str(state['error']))}</p>")
    config, last = data["config"], data["config"]["last_reload"]
    note += f"<p class=meta>running the config of {_when(config['loaded_at'])}"
    if last is not None and not last["ok"]:
        note += ("; <span class=bad>the last reload failed</span> "
                 f"({_ago(last['at'])}): " + "; ".join(escape(p) for p in last["problems"]))
    geoip = data["geoip"]
    note += (f" &middot; GeoIP {escape(geoip['geoip'])}, {geoip['geoip_age_days']:,} days old"
             + (" <span class=bad>(over 60 days: update it)</span>" if geoip["geoip_stale"]
                else ""))
    asn = data.get("asn_db")
    if asn is not None:
        note += (f" &middot; ASN {escape(asn['asn_db'])}, {asn['asn_db_age_days']:,} days old"
                 + (" <span class=bad>(over 60 days: update it)</span>" if asn["asn_db_stale"]
                    else ""))
    note += "</p>"
    if data.get("windows"):
        note += "<p class=meta>Maintenance windows: " + "; ".join(
            f"{escape(w['target'])} {escape(w['state'])} {escape(w['from'])} until "
            f"{escape(w['until'])}" + (" (fleet)" if w.get("fleet") else "")
            + (" <b>(now)</b>" if w["now"] else "")
            for w in data["windows"]) + "</p>"
    ready = "ready" if data["ready"] else "<span class=bad>starting</span>"
    probing = "" if data["probing"] else " &middot; <b>not probing</b> (--no-probe)"
    return (f"<h1>mirror-router status</h1><p class=meta>version {escape(data['version'])} "
            f"&middot; {ready}{probing} &middot; up {_duration(data['uptime_s'])} &middot; "
            f"health generation {data['generation']}</p>{note}")


def _signing(zones: list[dict[str, Any]]) -> str:
    """Signed zones: each key, its state and age, the next key event, signatures made
    and reused."""
    if not zones:
        return ""
    rows = ""
    for z in zones:
        keys = "; ".join(
            f"{escape(k['algorithm'])} key tag {k['key_tag']} <b>{escape(k['state'])}</b> "
            f"({escape(k['file'])}, {_duration(k['key_age_s'])} old)" for k in z["keys"])
        coming = z["next_event"]
        nxt = "" if coming is None else (
            f"; next: key {coming['key_tag']} {escape(coming['event'])} at "
            f"{escape(coming['at'])} (in {_duration(max(coming['in_s'], 0))})")
        rows += (f"<li>{escape(z['zone'])}: {keys}{nxt}: {z['signatures_made']:,} "
                 f"signatures made, {z['signatures_reused']:,} reused</li>")
    return f"<h2>DNSSEC</h2><ul>{rows}</ul>"


def _fleet(fleet: dict[str, Any] | None) -> str:
    """The fleet as this node sees it: the store, the live nodes, each target's verdict
    and what each observer saw."""
    if fleet is None:
        return ""
    store = ("connected" if fleet["connected"] else
             f"<span class=bad>away since {_when(fleet['since'])}</span>: serving from this "
             f"node's own checks and the last overrides it knew ({escape(fleet['error'] or '')})")
    rows = "".join(
        f"<tr><td>{escape(t['service'])}/{escape(t['target'])}</td>"
        f"<td>{_verdicts(t)}</td>"
        f"<td>{escape(', '.join(t['observers']))}</td><td>{'yes' if t['probing'] else ''}</td>"
        f"<td>{escape('; '.join(_seen(o) for o in t['observations']))}</td></tr>"
        for t in fleet["targets"])
    live = ", ".join(_node(fleet, n) for n in fleet["nodes"])
    return (f"<h2>Fleet {escape(fleet['fleet'])}</h2><p class=meta>node "
            f"<b>{escape(fleet['node'])}</b> &middot; store {escape(fleet['store'])} {store}"
            f" &middot; live nodes: {escape(live or 'none')}</p>"
            "<div class=wrap><table><tr><th>target</th><th>verdict</th><th>observers</th>"
            f"<th>checked here</th><th>observations</th></tr>{rows}</table></div>")


def _node(fleet: dict[str, Any], node: str) -> str:
    region = fleet.get("regions", {}).get(node, "all")
    return node if region == "all" else f"{node} ({region})"


def _verdicts(t: dict[str, Any]) -> str:
    """The verdict, or with nodes in several regions, each region's."""
    if not t.get("regions"):
        return escape(_verdict(t["verdict"]))
    return "<br>".join(f"{escape(r['region'])}: {escape(_verdict(r['verdict']))}"
                       for r in t["regions"])


def _verdict(v: dict[str, Any] | None) -> str:
    if v is None:
        return "none (this node's own checks)"
    return f"{v['status']}: {v['down']} of {v['votes']} say down ({v['needed']} needed)"


def _seen(o: dict[str, Any]) -> str:
    return f"{o['node']} {o['status']} {o['age']}s ago" + ("" if o["counted"] else " (stale)")


def _markers(data: dict[str, Any]) -> list[Marker]:
    out = []
    for s in data["services"]:
        for t in s["targets"]:
            if t["location"] is not None:
                out.append(Marker(f"marker-{s['name']}-{t['id']}", t["id"],
                                  Point(t["location"]["lat"], t["location"]["lon"]),
                                  t["colour"], f"{s['name']}/{t['id']}: {_state(t)}"))
    c = data["client"]
    if c is not None and c["lat"] is not None:
        out.append(Marker("marker-client", "you", Point(c["lat"], c["lon"]), "blue",
                          f"you: {c['address']} ({c['network']})"))
    return out


def _legend(data: dict[str, Any]) -> str:
    c = data["client"]
    placed = c is not None and c["lat"] is not None  # the "you" marker is on the map
    items = [("green", "up"), ("amber", "unknown, drained, forced up or failing"),
             ("red", "down"), *([("blue", "you")] if placed else [])]
    anycast = [f"{s['name']}/{t['id']}" for s in data["services"] for t in s["targets"]
               if t["location"] is None]
    text = " ".join(f"{_dot(c)} {escape(label)}" for c, label in items)
    if anycast:
        text += " &middot; anycast (not on the map): " + escape(", ".join(anycast))
    return f"<p class=meta>{text}</p>"


def _service(s: dict[str, Any]) -> str:
    names = escape(", ".join(s["dns_names"])) or "&ndash;"
    head = (f"<h2 id='service-{escape(s['name'])}'>{escape(s['name'])}</h2><p class=meta>zone "
            f"{escape(s['zone'])} &middot; DNS {names} &middot; HTTP "
            f"{escape(s['http_prefix'] or '-')} &middot; {_count(s['answers'], 'answer')} "
            "since start</p>")
    cols = ("", "target", "state", "override", "country", "TTFB ms", "wait ms", "charged ms",
            "share", "load", "answers", "last success", "last error")
    rows = "".join(_row(s["name"], t) for t in s["targets"])
    return head + "<div class=wrap><table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + \
        "</tr>" + rows + "</table></div>"


def _row(service: str, t: dict[str, Any]) -> str:
    cells = [
        _dot(t["colour"]), f"<b>{escape(t['id'])}</b>" + "".join(
            f"<br><small>{escape(rule)}</small>" for rule in t["rules"])
        + (f"<br><small class=url>checks {escape(t['health_url'])}</small>"
           if t.get("health_url") else ""),
        escape(_state(t)), escape(t["admin"]),
        escape(t["country"] or "-"), _num(t["ttfb_ms"]), _num(t["wait_ms"]),
        _num(t["latency_ms"]), f"{t['share'] * 100:.1f}%", escape(_load(t)),
        f"{t['answers']:,}",
        _ago(t["last_ok"]),
    ]
    error = t["last_error"]
    tds = "".join(f"<td class=num>{c}</td>" if c[:1].isdigit() or c == "&ndash;" else
                  f"<td>{c}</td>" for c in cells)
    when = f" ({_ago(t['last_failure'])})" if t["last_failure"] else ""
    tds += (f"<td class=err>{escape(error)}{when}</td>" if error
            else "<td class=none>&ndash;</td>")
    return f"<tr id='target-{escape(service)}-{escape(t['id'])}'>{tds}</tr>"


def _load(t: dict[str, Any]) -> str:
    """Its load against its capacity, and what it sheds or how far it has ramped."""
    if t.get("capacity") is None and t.get("ramping") is None:
        return "-"
    ratio = t.get("load_ratio")
    text = "load unknown" if ratio is None else f"{ratio:.0%} of capacity"
    if t.get("capacity") is None:
        text = ""
    if t.get("pressure"):
        text += ("; " if text else "") + f"{t['pressure']}, keeps {t['keep']:.0%}"
    return text or "-"


OVERRIDDEN = {"drain": "drained", "down": "marked down", "up": "forced up"}


def _state(t: dict[str, Any]) -> str:
    text = t["state"] if t["enabled"] else "disabled"
    admin = OVERRIDDEN.get(t["admin"])
    return f"{text}, {admin} by the operator" if admin else text


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _dot(colour: str) -> str:
    return f"<span class=dot style='background:{COLOURS[colour]}'></span>"


def _num(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:,.1f}"


def _ago(at: float | None) -> str:
    return "&ndash;" if at is None else f"{_duration(time.time() - at)} ago"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _duration(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    return f"{s // 60}m" if s < 7200 else f"{s // 3600}h{s % 3600 // 60:02d}m"
