"""TOML values → typed, checked Python values: the converters that zone files are read with.

Each converter takes the raw TOML value and returns the typed value, or raises ``Invalid``
with a reason written for the operator ("must be between -90 and 90, not 95"). The reader
in ``router.core.config`` adds the file and the key path. Pure: stdlib only.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

from router.core.ip import IPAddress, IPNetwork
from router.errors import RouterError

T = TypeVar("T")


class Invalid(RouterError):
    """A value that does not convert; the reader adds the file and the key path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def table_value(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise Invalid(f"must be a table, not {_kind(v)}")
    return v


def list_of_tables(v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list) or not all(isinstance(i, dict) for i in v):
        raise Invalid(f"must be an array of tables ([[...]]), not {_kind(v)}")
    return v


def _kind(v: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(v), type(v).__name__)


def string(v: Any) -> str:
    if not isinstance(v, str):
        raise Invalid(f"must be a string, not {_kind(v)}")
    return v


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid(f"must be true or false, not {_kind(v)}")
    return v


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid(f"must be an integer, not {_kind(v)}")
        if not lo <= v <= hi:
            raise Invalid(f"must be between {lo} and {hi}, not {v}")
        return v
    return convert


def number(lo: float, hi: float) -> Callable[[Any], float]:
    def convert(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise Invalid(f"must be a number, not {_kind(v)}")
        if not lo <= v <= hi:
            raise Invalid(f"must be between {lo:g} and {hi:g}, not {v:g}")
        return float(v)
    return convert


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
         None: 1.0}


def parse_duration(v: Any) -> float:
    """``"10s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a number of seconds → seconds."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise Invalid(f'must be a duration such as "10s" or "500ms", not {_kind(v)}')
    if isinstance(v, str):
        m = _DURATION.match(v)
        if not m:
            raise Invalid(f'{v!r} is not a duration such as "10s", "500ms", "2m" or "1h"')
        v = float(m.group(1)) * _UNIT[m.group(2)]
    if v <= 0:
        raise Invalid("must be longer than zero")
    return float(v)


_MOMENT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?)(?:Z|\+00:?00)$")


def moment(text: str, now: float) -> float:
    """A point in time as a Unix time: ISO 8601 in UTC (``2026-12-08T02:00:00Z``, the
    seconds optional), ``now``, or relative to ``now`` (``+30d``, ``+2h``, ``+90s``)."""
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("+"):
        return now + parse_duration(text[1:])
    m = _MOMENT.match(text)
    if m is None:
        raise Invalid(f"{text!r} is not a time such as 2026-12-08T02:00:00Z (UTC), "
                      "now or +30d")
    stamp = m.group(1) + ("" if m.group(1).count(":") == 2 else ":00")
    try:
        return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        raise Invalid(f"{text!r} is not a date and time") from None


def stamp(when: float) -> str:
    """``moment``'s form of a Unix time: ``2026-12-08T02:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10,
          "mib": 2**20, "gib": 2**30, "tib": 2**40, None: 1}


def size(lo: int, hi: int) -> Callable[[Any], int]:
    """``"2GiB"``, ``"500MB"``, ``"1024"`` or a number of bytes → bytes."""
    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise Invalid(f'must be a size such as "2GiB" or "500MB", not {_kind(v)}')
        m = _SIZE.match(v) if isinstance(v, str) else None
        if isinstance(v, str) and m is None:
            raise Invalid(f'{v!r} is not a size such as "2GiB", "500MB" or "1024"')
        n = int(float(m.group(1)) * _BYTES[(m.group(2) or "b").lower()]) if m else int(v)
        if not lo <= n <= hi:
            raise Invalid(f"must be between {lo} and {hi} bytes, not {n}")
        return n
    return convert


def duration(lo: float, hi: float) -> Callable[[Any], float]:
    def convert(v: Any) -> float:
        seconds = parse_duration(v)
        if not lo <= seconds <= hi:
            raise Invalid(f"must be between {lo:g}s and {hi:g}s, not {seconds:g}s")
        return seconds
    return convert


def list_of(convert: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def convert_list(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise Invalid(f"must be an array, not {_kind(v)}")
        out = []
        for i, item in enumerate(v):
            try:
                out.append(convert(item))
            except Invalid as e:
                raise Invalid(f"item {i + 1} ({item!r}): {e.reason}") from None
        return tuple(out)
    return convert_list


def country(v: Any) -> str:
    code = string(v)
    if not re.fullmatch(r"[A-Za-z]{2}", code):
        raise Invalid(f"{code!r} is not a two-letter ISO 3166 country code")
    return code.upper()


def countries(v: Any) -> frozenset[str]:
    return frozenset(list_of(country)(v))


CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")  # GeoIP's continent codes


def continent(v: Any) -> str:
    code = string(v).upper()
    if code not in CONTINENTS:
        raise Invalid(f"{v!r} is not a continent code ({', '.join(CONTINENTS)})")
    return code


def continents(v: Any) -> frozenset[str]:
    return frozenset(list_of(continent)(v))


def asn(v: Any) -> int:
    """An autonomous system number: ``64500`` or ``"AS64500"``."""
    if isinstance(v, str) and v.upper().startswith("AS") and v[2:].isdigit():
        v = int(v[2:])
    return integer(1, 2**32 - 1)(v)


def asns(v: Any) -> frozenset[int]:
    return frozenset(list_of(asn)(v))


def strict_network(v: Any) -> IPNetwork:
    """A CIDR network with no host bits set (``"198.51.100.0/24"``, not ``".7/24"``)."""
    text = string(v)
    try:
        return ipaddress.ip_network(text)
    except ValueError as e:
        raise Invalid(f"{text!r} is not a network such as \"198.51.100.0/24\" or "
                      f"\"2001:db8::/32\" ({e})") from None


def address(v: Any) -> IPAddress:
    try:
        return ipaddress.ip_address(string(v))
    except ValueError:
        raise Invalid(f"{v!r} is not an IPv4 or IPv6 address") from None


def url(v: Any) -> str:
    url = string(v)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise Invalid(f"{url!r} must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise Invalid(f"{url!r} has an invalid port") from None
    return url


def fetch_url(v: Any) -> str:
    """An http(s) URL to fetch, such as a release list: a query is allowed."""
    text = string(v)
    parts = urlsplit(text)
    if parts.fragment or "#" in text:
        raise Invalid(f"{text!r} must not carry a fragment")
    url(parts._replace(query="").geturl())
    return text


STORE_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")


class Sentinels(NamedTuple):
    """A ``redis+sentinel://`` store: the sentinels to ask, the service they watch, the
    database and the password of the redis servers (what redis-py's Sentinel takes)."""

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None


def sentinels(url: str) -> Sentinels | None:
    """``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`` (None for
    any other store URL); raise ``Invalid`` naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "redis+sentinel":
        return None
    auth, _, hostlist = parts.netloc.rpartition("@")
    password = unquote(auth.partition(":")[2]) if auth else None
    hosts = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise Invalid(f"{redact(url)!r}: {item!r} is not HOST:PORT (a sentinel; its "
                          "default port is 26379)")
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise Invalid(f"{redact(url)!r}: the path must be /SERVICE or /SERVICE/DB (the name "
                      "the sentinels monitor)")
    return Sentinels(tuple(hosts), path[0], int(path[1]) if len(path) == 2 else 0,
                     password or None)


def store_url(v: Any) -> str:
    """A Redis or Valkey address: ``redis://[:password@]host[:port][/db]``, ``rediss://``
    (TLS) or ``unix:///path/to/socket``."""
    text = string(v)
    parts = urlsplit(text)
    if parts.scheme not in STORE_SCHEMES:
        raise Invalid(f"{redact(text)!r} is not a redis://, rediss://, unix:// or "
                      "redis+sentinel:// URL")
    if sentinels(text) is not None:
        return text
    if parts.scheme == "unix" and not parts.path:
        raise Invalid(f"{redact(text)!r} names no socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise Invalid(f"{redact(text)!r} names no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise Invalid(f"{redact(text)!r} has an invalid port") from None
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise Invalid(f"{redact(text)!r}: the path must be a database number")
    return text


_SECRET_KEY = re.compile(r"pass|secret|token|auth|user", re.I)  # user: who logs in, too


def redact(url: str) -> str:
    """A URL as it may be shown or logged: its password replaced by ``***``, in the
    userinfo and in the query (``?password=``: the only way for ``unix://``), and any
    query value whose name says it is a secret (``token``, ``auth``...)."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        url = parts._replace(netloc=f"{user}:***@{host}").geturl()
    head, mark, query = url.partition("?")  # by hand: geturl() drops unix:///'s empty host
    if not query:
        return url
    query, hash_, fragment = query.partition("#")
    pairs = [p.partition("=") for p in query.split("&")]
    query = "&".join(f"{k}{eq}{'***' if eq and _SECRET_KEY.search(k) else v}"
                     for k, eq, v in pairs)
    return f"{head}{mark}{query}{hash_}{fragment}"


def base_url(v: Any) -> str:
    """A mirror's base URL always ends with ``/`` so that ``url + path`` is well formed."""
    text = url(v)
    return text if text.endswith("/") else text + "/"


_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def within(name: str, origin: str) -> bool:
    """Whether the absolute ``name`` is ``origin`` or below it (both lower case)."""
    return name == origin or origin == "." or name.endswith("." + origin)


def absolute_name(v: Any) -> str:
    """A fully qualified name; the trailing dot is optional."""
    name = string(v).strip()
    if not name or name == ".":
        raise Invalid("must be a domain name")
    fq = fqdn(name)
    if len(fq) > 254:
        raise Invalid(f"{name!r} is longer than 253 characters")
    for label in fq[:-1].split("."):
        if label == "*":
            raise Invalid(f"{name!r}: wildcard names are not supported")
        if not _LABEL.match(label):
            raise Invalid(f"{name!r}: {label!r} is not a valid DNS label")
    return fq


def relative_name(origin: str) -> Callable[[Any], str]:
    """``@`` is the apex; ``www`` is ``www.<origin>``; ``www.<origin>.`` is absolute."""
    def convert(v: Any) -> str:
        name = string(v).strip()
        if name == "@":
            return origin
        if not name:
            raise Invalid("must not be empty: write '@' for the apex")
        if name.endswith("."):
            fq = absolute_name(name)
            if not within(fq, origin):
                raise Invalid(f"{name!r} is outside the zone {origin}")
            return fq
        if fqdn(name) == origin:
            raise Invalid(f"{name!r} looks absolute but has no trailing dot: "
                           f"write '@' or {fqdn(name)!r}")
        if fqdn(name).endswith("." + origin):
            raise Invalid(f"{name!r} looks absolute but has no trailing dot: "
                           f"write {fqdn(name)[: -len(origin) - 1]!r} or {fqdn(name)!r}")
        return absolute_name(name + "." + origin)
    return convert


def mailbox(v: Any) -> str:
    """``hostmaster@example.com`` or ``hostmaster.example.com`` → SOA RNAME form."""
    text = string(v).strip()
    if "@" in text:
        local, _, domain = text.partition("@")
        if not local or "." in local:
            raise Invalid(f"{text!r}: the mailbox part must be one label (no dots)")
        text = f"{local}.{domain}"
    return absolute_name(text)


def nonempty(convert: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any], tuple[Any, ...]]:
    def check(v: Any) -> tuple[Any, ...]:
        out = convert(v)
        if not out:
            raise Invalid("must not be empty")
        return out
    return check


def anything(v: Any) -> tuple[()]:
    return ()


def one_or_many(convert: Callable[[Any], T]) -> Callable[[Any], tuple[T, ...]]:
    def convert_data(v: Any) -> tuple[T, ...]:
        return nonempty(list_of(convert))(v) if isinstance(v, list) else (convert(v),)
    return convert_data


def choice(enum: type[StrEnum]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        try:
            return enum(string(v))
        except ValueError:
            names = ", ".join(f'"{e.value}"' for e in enum)
            raise Invalid(f"{v!r} is not one of {names}") from None
    return convert


def url_path(v: Any) -> str:
    p = string(v)
    if not p.startswith("/") or any(c in p for c in " \t\r\n#"):
        raise Invalid(f"{p!r} must be a URL path that starts with '/'")
    return p


def http_prefix(v: Any) -> str:
    """A URL path prefix: starts and ends with ``/`` (``"/dl"`` becomes ``"/dl/"``)."""
    prefix = url_path(v)
    if "//" in prefix or "?" in prefix or "%" in prefix or "\\" in prefix:
        raise Invalid(f"{prefix!r} must be a plain path such as \"/\" or \"/dl/\"")
    if any(seg in (".", "..") for seg in prefix.split("/")):
        raise Invalid(f"{prefix!r} must not contain . or .. segments")
    return prefix if prefix.endswith("/") else prefix + "/"


def network(v: Any) -> IPNetwork:
    """A CIDR network (``"10.0.0.0/8"``) or a single address (``"127.0.0.1"``)."""
    try:
        return ipaddress.ip_network(string(v), strict=False)
    except ValueError:
        raise Invalid(f"{v!r} is not an IP network such as \"127.0.0.0/8\"") from None


def path_pattern(v: Any) -> str:
    """A shell-style pattern for request paths after the prefix (``*`` crosses ``/``)."""
    text = string(v)
    if not text or text.startswith("/") or any(c in text for c in "\x00\r\n\\"):
        raise Invalid(f"{text!r}: a pattern such as \"*/@v/*.zip\" (no leading '/')")
    return text


# The one grammar of names an operator gives: service names and target ids, and so the
# ``id`` and ``service/id`` selectors of overrides.
ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
_ID = re.compile(ID)
_SELECTOR = re.compile(rf"(?:{ID}/)?{ID}")


def identifier(v: Any) -> str:
    """A service name or a target id."""
    name = string(v)
    if not _ID.fullmatch(name):
        raise Invalid(f"{name!r}: names and ids use letters, digits, '.', '-' and '_' "
                      "(at most 63, starting with a letter or digit)")
    return name


def selector(v: Any) -> str:
    """A target id, or ``service/id``."""
    text = string(v)
    if not _SELECTOR.fullmatch(text):
        raise Invalid(f"{text!r} is not a target id or service/id")
    return text


_STATUS_RANGE = re.compile(r"^\s*([1-5]\d\d)\s*(?:-\s*([1-5]\d\d)\s*)?$")


def _status_range(v: Any) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        if not 100 <= v <= 599:
            raise Invalid(f"{v} is not an HTTP status (100 to 599)")
        return v, v
    m = _STATUS_RANGE.match(string(v))
    if not m:
        raise Invalid(f"{v!r} is not a status or a range such as \"200-299\"")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if lo > hi:
        raise Invalid(f"{v!r}: the range is backwards")
    return lo, hi


def status_ranges(v: Any) -> tuple[tuple[int, int], ...]:
    """``200``, ``"200-299"``, or a list of either → inclusive (low, high) ranges."""
    return nonempty(list_of(_status_range))(v) if isinstance(v, list) else (_status_range(v),)


def nonempty_string(limit: int) -> Callable[[Any], str]:
    def convert(v: Any) -> str:
        text = string(v)
        if not 0 < len(text) <= limit:
            raise Invalid(f"must be 1 to {limit} characters long")
        return text
    return convert
