"""Zone files (TOML) → one frozen, validated ``Config``.

A folder holds one file per zone. The whole folder is checked in one pass, and
every problem names the file, the key path and the reason, so a single run of
``mirror-router check`` lists everything that is wrong. Nothing here does I/O
beyond reading the files it is given.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from router.earth import Point
from router.errors import RouterError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_ZONE_TTL = 300
DEFAULT_NEGATIVE_TTL = 60
DEFAULT_ANYCAST_KM = 1000.0


class OnAllDown(StrEnum):
    """What a service answers when every candidate target is down."""

    FALLBACK = "fallback"  # the service's fallback targets, whatever their health
    ALL = "all"  # every target (fail open)
    EMPTY = "empty"  # nothing: NODATA over DNS, 503 over HTTP


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/"
    interval: float = 10.0
    timeout: float = 3.0
    rise: int = 2
    fall: int = 3


@dataclass(frozen=True, slots=True)
class Target:
    id: str
    location: Point | None  # None: anycast, reachable near everyone
    country: str | None = None
    addresses: tuple[Address, ...] = ()
    url: str | None = None
    health_url: str | None = None  # resolved: explicit health_url, else url + health.path
    weight: int = 100
    only_countries: frozenset[str] = frozenset()
    exclude_countries: frozenset[str] = frozenset()
    enabled: bool = True

    @property
    def anycast(self) -> bool:
        return self.location is None

    def addresses_of(self, version: int) -> tuple[Address, ...]:
        return tuple(a for a in self.addresses if a.version == version)


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    origin: str
    targets: tuple[Target, ...]
    dns_names: tuple[str, ...] = ()
    answers: int = 1
    ttl: int = 30
    spread: float = 1.0
    cross_border_km: float = 0.0
    anycast_km: float = DEFAULT_ANYCAST_KM
    default_location: Point | None = None
    on_all_down: OnAllDown = OnAllDown.ALL
    fallback: tuple[str, ...] = ()
    health: HealthCheck = HealthCheck()
    source: str = ""

    def target(self, target_id: str) -> Target | None:
        return next((t for t in self.targets if t.id == target_id), None)


class Mx(NamedTuple):
    preference: int
    exchange: str


class Srv(NamedTuple):
    priority: int
    weight: int
    port: int
    target: str


class Caa(NamedTuple):
    flags: int
    tag: str
    value: str


class Txt(NamedTuple):
    strings: tuple[bytes, ...]


RData = Address | str | Mx | Srv | Caa | Txt


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # absolute, lower case, with the trailing dot
    type: str
    data: RData
    ttl: int


@dataclass(frozen=True, slots=True)
class Zone:
    origin: str  # absolute, lower case, with the trailing dot
    nameservers: tuple[str, ...]
    hostmaster: str  # SOA RNAME form: hostmaster.example.com.
    ttl: int = DEFAULT_ZONE_TTL
    negative_ttl: int = DEFAULT_NEGATIVE_TTL
    serial: int = 1
    refresh: int = 3600
    retry: int = 600
    expire: int = 604800
    records: tuple[Record, ...] = ()
    services: tuple[Service, ...] = ()
    source: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    zones: tuple[Zone, ...] = ()

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(s for z in self.zones for s in z.services)

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def service_for_name(self, name: str) -> Service | None:
        """The service that steers a DNS name (any case, trailing dot optional)."""
        wanted = _fqdn(name)
        return next((s for s in self.services if wanted in s.dns_names), None)


# ---------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.reason}"


class ConfigError(RouterError):
    """The configuration is invalid; ``problems`` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# ---------------------------------------------------------------- loading


def load(path: str | Path) -> Config:
    """Load a folder of ``*.toml`` zone files (or one file); raise ``ConfigError``."""
    root = Path(path)
    problems: list[Problem] = []
    if root.is_dir():
        files = sorted(root.glob("*.toml"))
        if not files:
            problems.append(Problem(str(root), "", "no *.toml zone files in this folder"))
    elif root.is_file():
        files = [root]
    else:
        raise ConfigError([Problem(str(root), "", "no such file or folder")])
    zones = [z for f in files if (z := _load_file(f, problems)) is not None]
    _check_across_files(zones, problems)
    if problems:
        raise ConfigError(problems)
    return Config(tuple(zones))


def _load_file(path: Path, problems: list[Problem]) -> Zone | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), "", f"cannot read: {e}"))
        return None
    except tomllib.TOMLDecodeError as e:
        problems.append(Problem(str(path), "", f"not valid TOML: {e}"))
        return None
    before = len(problems)
    doc = _Table(data, "", str(path), problems)
    zone = _build_zone(doc, path)
    doc.finish()
    return zone if len(problems) == before else None


def _check_across_files(zones: list[Zone], problems: list[Problem]) -> None:
    seen_origin: dict[str, str] = {}
    seen_service: dict[str, str] = {}
    for z in zones:
        if z.origin in seen_origin:
            problems.append(Problem(z.source, "zone.origin",
                                    f"{z.origin} is also served by {seen_origin[z.origin]}"))
        seen_origin.setdefault(z.origin, z.source)
        for s in z.services:
            if s.name in seen_service:
                problems.append(Problem(z.source, f"services.{s.name}",
                                        f"service name is also used in {seen_service[s.name]}"))
            seen_service.setdefault(s.name, z.source)


# ---------------------------------------------------------------- the reader


class _Invalid(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


_REQUIRED: Any = object()


class _Table:
    """One TOML table, its key path, and the problems found while reading it."""

    def __init__(self, data: dict[str, Any], path: str, file: str, problems: list[Problem]) -> None:
        self.data, self.path, self.file, self.problems = data, path, file, problems
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def report(self, key: str, reason: str) -> None:
        self.problems.append(Problem(self.file, key, reason))

    def get(self, name: str, convert: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                self.report(self.key(name), "is required")
            return None if default is _REQUIRED else default
        try:
            return convert(self.data[name])
        except _Invalid as e:
            self.report(self.key(name), e.reason)
            # Go on with the default so that later checks still run and report.
            return None if default is _REQUIRED else default

    def table(self, name: str, required: bool = False) -> _Table | None:
        value = self.get(name, _table_value, _REQUIRED if required else None)
        if value is None:
            return None
        return _Table(value, self.key(name), self.file, self.problems)

    def tables(self, name: str) -> list[tuple[str, _Table]]:
        """An array of tables; each comes with its key path."""
        items = self.get(name, _list_of_tables, [])
        out = []
        for i, item in enumerate(items or []):
            label = item.get("id") if isinstance(item.get("id"), str) else f"#{i + 1}"
            key = f"{self.key(name)}[{label}]"
            out.append((key, _Table(item, key, self.file, self.problems)))
        return out

    def subtables(self) -> Iterator[tuple[str, _Table]]:
        """Every key of this table, each a table itself (``[services.NAME]``)."""
        for name in list(self.data):
            sub = self.table(name)
            if sub is not None:
                yield name, sub

    def finish(self) -> None:
        for name in self.data:
            if name not in self.used:
                self.report(self.key(name), "unknown key")


# ---------------------------------------------------------------- converters


def _table_value(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Invalid(f"must be a table, not {_kind(v)}")
    return v


def _list_of_tables(v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list) or not all(isinstance(i, dict) for i in v):
        raise _Invalid(f"must be an array of tables ([[...]]), not {_kind(v)}")
    return v


def _kind(v: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(v), type(v).__name__)


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"must be a string, not {_kind(v)}")
    return v


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"must be true or false, not {_kind(v)}")
    return v


def _integer(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Invalid(f"must be an integer, not {_kind(v)}")
        if not lo <= v <= hi:
            raise _Invalid(f"must be between {lo} and {hi}, not {v}")
        return v
    return convert


def _number(lo: float, hi: float) -> Callable[[Any], float]:
    def convert(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Invalid(f"must be a number, not {_kind(v)}")
        if not lo <= v <= hi:
            raise _Invalid(f"must be between {lo:g} and {hi:g}, not {v:g}")
        return float(v)
    return convert


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(v: Any) -> float:
    """``"10s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a number of seconds → seconds."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise _Invalid(f'must be a duration such as "10s" or "500ms", not {_kind(v)}')
    if isinstance(v, str):
        m = _DURATION.match(v)
        if not m:
            raise _Invalid(f'{v!r} is not a duration such as "10s", "500ms", "2m" or "1h"')
        v = float(m.group(1)) * _UNIT[m.group(2)]
    if v <= 0:
        raise _Invalid("must be longer than zero")
    return float(v)


def _duration(lo: float, hi: float) -> Callable[[Any], float]:
    def convert(v: Any) -> float:
        seconds = parse_duration(v)
        if not lo <= seconds <= hi:
            raise _Invalid(f"must be between {lo:g}s and {hi:g}s, not {seconds:g}s")
        return seconds
    return convert


def _list_of(convert: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def convert_list(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise _Invalid(f"must be an array, not {_kind(v)}")
        out = []
        for i, item in enumerate(v):
            try:
                out.append(convert(item))
            except _Invalid as e:
                raise _Invalid(f"item {i + 1} ({item!r}): {e.reason}") from None
        return tuple(out)
    return convert_list


def _country(v: Any) -> str:
    code = _string(v)
    if not re.fullmatch(r"[A-Za-z]{2}", code):
        raise _Invalid(f"{code!r} is not a two-letter ISO 3166 country code")
    return code.upper()


def _countries(v: Any) -> frozenset[str]:
    return frozenset(_list_of(_country)(v))


def _address(v: Any) -> Address:
    try:
        return ipaddress.ip_address(_string(v))
    except ValueError:
        raise _Invalid(f"{v!r} is not an IPv4 or IPv6 address") from None


def _url(v: Any) -> str:
    url = _string(v)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise _Invalid(f"{url!r} must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _Invalid(f"{url!r} has an invalid port") from None
    return url


def _base_url(v: Any) -> str:
    """A mirror's base URL always ends with ``/`` so that ``url + path`` is well formed."""
    url = _url(v)
    return url if url.endswith("/") else url + "/"


def _read_point(parent: _Table, name: str, anycast: bool = False) -> Point | None:
    """``{lat, lon}`` (each key checked on its own path), or ``"anycast"`` where allowed."""
    value = parent.data.get(name)
    if anycast and value == "anycast":
        parent.used.add(name)
        return None
    if isinstance(value, str):
        parent.used.add(name)
        parent.report(parent.key(name), f'must be {{lat, lon}} or "anycast", not {value!r}'
                      if anycast else f"must be {{lat, lon}}, not {value!r}")
        return None
    table = parent.table(name)
    if table is None:
        return None
    lat = table.get("lat", _number(-90, 90))
    lon = table.get("lon", _number(-180, 180))
    table.finish()
    return Point(lat, lon) if lat is not None and lon is not None else None


# ---------------------------------------------------------------- DNS names

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def _absolute_name(v: Any) -> str:
    """A fully qualified name; the trailing dot is optional."""
    name = _string(v).strip()
    if not name or name == ".":
        raise _Invalid("must be a domain name")
    fq = _fqdn(name)
    if len(fq) > 254:
        raise _Invalid(f"{name!r} is longer than 253 characters")
    for label in fq[:-1].split("."):
        if label == "*":
            raise _Invalid(f"{name!r}: wildcard names are not supported")
        if not _LABEL.match(label):
            raise _Invalid(f"{name!r}: {label!r} is not a valid DNS label")
    return fq


def _relative_name(origin: str) -> Callable[[Any], str]:
    """``@`` is the apex; ``www`` is ``www.<origin>``; ``www.<origin>.`` is absolute."""
    def convert(v: Any) -> str:
        name = _string(v).strip()
        if name == "@":
            return origin
        if name.endswith("."):
            fq = _absolute_name(name)
            if fq != origin and not fq.endswith("." + origin):
                raise _Invalid(f"{name!r} is outside the zone {origin}")
            return fq
        if _fqdn(name) == origin:
            raise _Invalid(f"{name!r} looks absolute but has no trailing dot: "
                           f"write '@' or {_fqdn(name)!r}")
        if _fqdn(name).endswith("." + origin):
            raise _Invalid(f"{name!r} looks absolute but has no trailing dot: "
                           f"write {_fqdn(name)[: -len(origin) - 1]!r} or {_fqdn(name)!r}")
        return _absolute_name(name + "." + origin)
    return convert


def _mailbox(v: Any) -> str:
    """``hostmaster@example.com`` or ``hostmaster.example.com`` → SOA RNAME form."""
    text = _string(v).strip()
    if "@" in text:
        local, _, domain = text.partition("@")
        if not local or "." in local:
            raise _Invalid(f"{text!r}: the mailbox part must be one label (no dots)")
        text = f"{local}.{domain}"
    return _absolute_name(text)


# ---------------------------------------------------------------- record data


def _rdata(rtype: str) -> Callable[[Any], RData]:
    return {
        "A": _a, "AAAA": _aaaa, "CNAME": _absolute_name, "NS": _absolute_name,
        "PTR": _absolute_name, "MX": _mx, "TXT": _txt, "SRV": _srv, "CAA": _caa,
    }[rtype]


RECORD_TYPES = ("A", "AAAA", "CNAME", "NS", "PTR", "MX", "TXT", "SRV", "CAA")


def _a(v: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(_string(v))
    except ValueError:
        raise _Invalid(f"{v!r} is not an IPv4 address") from None


def _aaaa(v: Any) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(_string(v))
    except ValueError:
        raise _Invalid(f"{v!r} is not an IPv6 address") from None


def _fields(v: Any, count: int, shape: str) -> list[str]:
    parts = _string(v).split(None, count - 1)
    if len(parts) != count:
        raise _Invalid(f"{v!r} is not of the form {shape!r}")
    return parts


def _u16(text: str, what: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise _Invalid(f"{what} {text!r} is not a number from 0 to 65535")
    return int(text)


def _mx(v: Any) -> Mx:
    pref, host = _fields(v, 2, "preference exchange")
    return Mx(_u16(pref, "preference"), _absolute_name(host))


def _srv(v: Any) -> Srv:
    prio, weight, port, host = _fields(v, 4, "priority weight port target")
    target = "." if host == "." else _absolute_name(host)
    return Srv(_u16(prio, "priority"), _u16(weight, "weight"), _u16(port, "port"), target)


def _caa(v: Any) -> Caa:
    flags, tag, value = _fields(v, 3, 'flags tag "value"')
    if not flags.isdigit() or int(flags) > 255:
        raise _Invalid(f"flags {flags!r} is not a number from 0 to 255")
    if not re.fullmatch(r"[A-Za-z0-9]{1,15}", tag):
        raise _Invalid(f"tag {tag!r} must be 1-15 letters or digits (issue, issuewild, iodef)")
    return Caa(int(flags), tag.lower(), value.strip().removeprefix('"').removesuffix('"'))


def _txt(v: Any) -> Txt:
    data = _string(v).encode("utf-8")
    return Txt(tuple(data[i:i + 255] for i in range(0, len(data), 255)) or (b"",))


# ---------------------------------------------------------------- building


def _build_zone(doc: _Table, path: Path) -> Zone | None:
    before = len(doc.problems)
    doc.used.add("services")  # read below once the origin is known
    z = doc.table("zone", required=True)
    origin = z.get("origin", _absolute_name) if z is not None else None
    if z is None or origin is None:
        if z is not None:
            z.used.update(_ZONE_KEYS)  # unchecked without an origin, but not unknown
            z.finish()
        return None
    ttl = z.get("ttl", _integer(0, 604800), DEFAULT_ZONE_TTL)
    zone = Zone(
        origin=origin,
        nameservers=z.get("nameservers", _nonempty(_list_of(_absolute_name))),
        hostmaster=z.get("hostmaster", _mailbox),
        ttl=ttl,
        negative_ttl=z.get("negative_ttl", _integer(0, 86400), DEFAULT_NEGATIVE_TTL),
        serial=z.get("serial", _integer(0, 2**32 - 1), _file_serial(path)),
        refresh=z.get("refresh", _integer(1, 2**31 - 1), 3600),
        retry=z.get("retry", _integer(1, 2**31 - 1), 600),
        expire=z.get("expire", _integer(1, 2**31 - 1), 604800),
        records=tuple(_build_records(z, origin, ttl or 0)),
        services=tuple(_build_services(doc, origin, str(path))),
        source=str(path),
    )
    z.finish()
    _check_zone(zone, doc)
    return zone if len(doc.problems) == before else None


_ZONE_KEYS = ("nameservers", "hostmaster", "ttl", "negative_ttl", "serial", "refresh", "retry",
              "expire", "records")


def _nonempty(convert: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any], tuple[Any, ...]]:
    def check(v: Any) -> tuple[Any, ...]:
        out = convert(v)
        if not out:
            raise _Invalid("must not be empty")
        return out
    return check


def _file_serial(path: Path) -> int:
    """The default SOA serial: the file's modification time, so edits raise it."""
    try:
        return int(path.stat().st_mtime) & 0xFFFFFFFF
    except OSError:
        return 1


def _record_type(v: Any) -> str:
    rtype = _string(v).upper()
    if rtype not in RECORD_TYPES:
        raise _Invalid(f"{v!r} is not supported (one of {', '.join(RECORD_TYPES)})")
    return rtype


def _build_records(z: _Table, origin: str, default_ttl: int) -> Iterator[Record]:
    for key, r in z.tables("records"):
        name = r.get("name", _relative_name(origin))
        rtype = r.get("type", _record_type)
        ttl = r.get("ttl", _integer(0, 604800), default_ttl)
        values = r.get("data", _one_or_many(_rdata(rtype)) if rtype else _any) or ()
        r.finish()
        if name is None or rtype is None:
            continue
        if rtype == "NS" and name == origin:
            r.report(f"{key}.type",
                     "NS at the apex comes from zone.nameservers; remove this record")
            continue
        for value in values:
            yield Record(name, rtype, value, ttl)


def _any(v: Any) -> tuple[()]:
    return ()


def _one_or_many(convert: Callable[[Any], RData]) -> Callable[[Any], tuple[RData, ...]]:
    def convert_data(v: Any) -> tuple[RData, ...]:
        return _nonempty(_list_of(convert))(v) if isinstance(v, list) else (convert(v),)
    return convert_data


def _build_services(doc: _Table, origin: str, source: str) -> Iterator[Service]:
    services = doc.table("services")
    if services is None:
        return
    for name, s in services.subtables():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            s.report(s.path, "service names use letters, digits, '-' and '_'")
        service = _build_service(name, s, origin, source)
        s.finish()
        if service is not None:
            yield service


def _build_service(name: str, s: _Table, origin: str, source: str) -> Service | None:
    before = len(s.problems)
    health = _build_health(s.table("health"))
    targets = tuple(_build_targets(s, health))
    fallback = s.get("fallback", _list_of(_string), ())
    service = Service(
        name=name,
        origin=origin,
        targets=targets,
        dns_names=s.get("dns_names", _list_of(_relative_name(origin)), ()),
        answers=s.get("answers", _integer(1, 16), 1),
        ttl=s.get("ttl", _integer(0, 86400), 30),
        spread=s.get("spread", _number(1.0, 100.0), 1.0),
        cross_border_km=s.get("cross_border_km", _number(0, 40000), 0.0),
        anycast_km=s.get("anycast_km", _number(0, 40000), DEFAULT_ANYCAST_KM),
        default_location=_read_point(s, "default_location"),
        # Default: the fallback targets when the service names any, else fail open.
        on_all_down=s.get("on_all_down", _choice(OnAllDown),
                          OnAllDown.FALLBACK if fallback else OnAllDown.ALL),
        fallback=fallback or (),
        health=health or HealthCheck(),
        source=source,
    )
    _check_service(service, s)
    return service if len(s.problems) == before else None


def _choice(enum: type[StrEnum]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        try:
            return enum(_string(v))
        except ValueError:
            names = ", ".join(f'"{e.value}"' for e in enum)
            raise _Invalid(f"{v!r} is not one of {names}") from None
    return convert


def _build_health(h: _Table | None) -> HealthCheck | None:
    if h is None:
        return None
    d = HealthCheck()
    check = HealthCheck(
        path=h.get("path", _path, d.path),
        interval=h.get("interval", _duration(0.05, 86400), d.interval),
        timeout=h.get("timeout", _duration(0.01, 3600), d.timeout),
        rise=h.get("rise", _integer(1, 100), d.rise),
        fall=h.get("fall", _integer(1, 100), d.fall),
    )
    h.finish()
    return check


def _path(v: Any) -> str:
    p = _string(v)
    if not p.startswith("/") or any(c in p for c in " \t\r\n#"):
        raise _Invalid(f"{p!r} must be a URL path that starts with '/'")
    return p


def _build_targets(s: _Table, health: HealthCheck | None) -> Iterator[Target]:
    path = (health or HealthCheck()).path
    for _key, t in s.tables("targets"):
        url = t.get("url", _base_url, None)
        explicit = t.get("health_url", _url, None)
        target = Target(
            id=t.get("id", _target_id),
            location=_read_location(t),
            country=t.get("country", _country, None),
            addresses=t.get("addresses", _list_of(_address), ()),
            url=url,
            health_url=explicit or (join_url(url, path) if url else None),
            weight=t.get("weight", _integer(1, 1_000_000), 100),
            only_countries=t.get("only_countries", _countries, frozenset()),
            exclude_countries=t.get("exclude_countries", _countries, frozenset()),
            enabled=t.get("enabled", _boolean, True),
        )
        t.finish()
        yield target


def _read_location(t: _Table) -> Point | None:
    if "location" not in t.data:
        t.get("location", _any)  # reports "is required"
    return _read_point(t, "location", anycast=True)


def join_url(base: str, path: str) -> str:
    """``https://m/golang/`` + ``/x`` → ``https://m/golang/x`` (never climbs above base)."""
    return base.rstrip("/") + "/" + path.lstrip("/")


def _target_id(v: Any) -> str:
    tid = _string(v)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", tid):
        raise _Invalid(f"{tid!r}: ids use letters, digits, '.', '-' and '_' (at most 63)")
    return tid


# ---------------------------------------------------------------- cross checks


def _check_service(service: Service, s: _Table) -> None:
    ids = [t.id for t in service.targets]
    for i, tid in enumerate(ids):
        if tid is not None and tid in ids[:i]:  # a missing id is reported already
            s.report(f"{s.path}.targets[{tid}].id", f"duplicate target id {tid!r}")
    if not service.targets:
        s.report(s.key("targets"), "a service needs at least one target")
    for tid in service.fallback:
        if tid not in ids:
            s.report(s.key("fallback"), f"unknown target id {tid!r}")
    if service.on_all_down is OnAllDown.FALLBACK and not service.fallback:
        s.report(s.key("on_all_down"), '"fallback" needs at least one target id in fallback')
    if service.dns_names and service.targets and not any(t.addresses for t in service.targets):
        s.report(s.key("dns_names"), "no target has addresses, so DNS could never answer")
    for t in service.targets:
        both = t.only_countries & t.exclude_countries
        if both:
            s.report(f"{s.path}.targets[{t.id}].exclude_countries",
                     f"{sorted(both)[0]} is also in only_countries")


def _check_zone(zone: Zone, doc: _Table) -> None:
    """Rules that need the whole zone: CNAME exclusivity, steered names, glue."""
    by_name: dict[str, set[str]] = {}
    for r in zone.records:
        by_name.setdefault(r.name, set()).add(r.type)
    for name, types in by_name.items():
        if "CNAME" in types and (len(types) > 1 or name == zone.origin or
                                 sum(r.name == name for r in zone.records) > 1):
            where = "at the zone apex" if name == zone.origin else "beside other data"
            doc.report(f"zone.records[{name}]", f"a CNAME cannot stand {where}")
    steered: dict[str, str] = {}
    for s in zone.services:
        for name in s.dns_names:
            if name in steered:
                doc.report(f"services.{s.name}.dns_names",
                           f"{name} is already steered by services.{steered[name]}")
            steered[name] = s.name
            clash = by_name.get(name, set()) & {"A", "AAAA", "CNAME"}
            if clash:
                doc.report(f"services.{s.name}.dns_names",
                           f"{name} also has a static {sorted(clash)[0]} record")
    for ns in zone.nameservers or ():
        inside = ns == zone.origin or ns.endswith("." + zone.origin)
        if inside and not by_name.get(ns, set()) & {"A", "AAAA"} and ns not in steered:
            doc.report("zone.nameservers",
                       f"{ns} is inside the zone but has no A or AAAA record (glue)")


__all__ = [
    "Address", "Caa", "Config", "ConfigError", "HealthCheck", "Mx", "OnAllDown", "Problem",
    "RData", "Record", "Service", "Srv", "Target", "Txt", "Zone", "join_url", "load",
    "parse_duration",
]
