"""Zone files (TOML) → one frozen, validated ``Config``; a server settings file →
``ServerConfig``.

A folder holds one file per zone. The whole folder is checked in one pass, and every
problem names the file, the key path and the reason, so a single run of
``mirror-router check`` lists everything that is wrong. Nothing here does I/O beyond
reading the files it is given.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from router.core import reading, regions
from router.core import values as v
from router.core.capacity import Capacity
from router.core.catalog import CatalogFormat, CatalogSpec, FileChecks
from router.core.config import (
    DEFAULT_ANYCAST_KM,
    DEFAULT_KM_PER_MS,
    DEFAULT_NEGATIVE_TTL,
    DEFAULT_ZONE_TTL,
    Cds,
    Config,
    ConfigError,
    FleetConfig,
    HealthCheck,
    KeyFile,
    Kind,
    OnAllDown,
    Problem,
    Record,
    Route,
    RrlConfig,
    ServerConfig,
    Service,
    Target,
    Verify,
    Zone,
    default_node,
)
from router.core.earth import Point
from router.core.ip import IPNetwork
from router.core.keylines import line_of
from router.core.rdata import rdata, record_type
from router.core.retries import RetryPolicy
from router.core.urls import join

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
        raise ConfigError([Problem(str(root.absolute()), "", "no such file or folder (the "
                                   "zones: --zones DIR, by default ./zones)")])
    zones = [z for f in files if (z := _load_file(f, problems)) is not None]
    _check_across_files(zones, problems)
    if problems:
        raise ConfigError(problems)
    return Config(tuple(zones))


def _read_toml(path: Path, problems: list[Problem]) -> tuple[dict[str, Any], str] | None:
    """The document and its text (``_with_lines`` finds keys in it)."""
    try:
        text = reading.read_text(path, "zone file")
        return tomllib.loads(text), text
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), "", f"cannot read: {e}"))
    except tomllib.TOMLDecodeError as e:
        problems.append(Problem(str(path), "", f"not valid TOML: {e}"))
    return None


def _load_file(path: Path, problems: list[Problem]) -> Zone | None:
    read = _read_toml(path, problems)
    if read is None:
        return None
    before = len(problems)
    doc = _Table(read[0], "", str(path), problems)
    zone = _build_zone(doc, path)
    doc.finish()
    _with_lines(problems, before, str(path), read[1])
    return zone if len(problems) == before else None


def _with_lines(problems: list[Problem], since: int, file: str, text: str) -> None:
    """The problems found in ``file`` since ``since``, each with the line its key is
    written on (or its table's, for a key that is missing)."""
    for i in range(since, len(problems)):
        p = problems[i]
        if p.file == file and p.key and p.line is None:
            problems[i] = replace(p, line=line_of(text, p.key))


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


def load_server(path: str | Path) -> ServerConfig:
    """Read a server settings file; raise ``ConfigError`` naming file, key and reason."""
    problems: list[Problem] = []
    read = _read_toml(Path(path), problems)
    if read is None:
        raise ConfigError(problems)
    data = read[0]
    doc = _Table(data, "", str(path), problems)
    server = doc.table("server", required="fleet" not in data)
    fleet = _fleet(doc.table("fleet"), Path(path).parent)
    settings = ServerConfig(fleet=fleet)
    if server is not None:
        settings = ServerConfig(
            trusted_proxies=server.get("trusted_proxies", v.list_of(v.network), ()),
            access_log=server.get("access_log", v.boolean, False),
            beacon=server.get("beacon", v.boolean, False),
            tls_ca=server.get("tls_ca", _readable_file(Path(path).parent), None),
            tls_cert=server.get("tls_cert", _readable_file(Path(path).parent), None),
            tls_key=server.get("tls_key", _readable_file(Path(path).parent), None),
            nsid=server.get("nsid", _nsid, None),
            cookie_secret=server.get("cookie_secret", _secret, None),
            cookie_secret_previous=server.get("cookie_secret_previous", _secret, None),
            rrl=_rrl(server.table("rrl")),
            fleet=fleet,
            asn_db=server.get("asn_db", _readable_file(Path(path).parent), None),
            dnstap=server.get("dnstap", v.string, None),
            dnstap_sample=server.get("dnstap_sample", v.number(0.0, 1.0), 1.0),
        )
        server.finish()
    doc.finish()
    _with_lines(problems, 0, str(path), read[1])
    if problems:
        raise ConfigError(problems)
    return settings


def _nsid(value: Any) -> str:
    """A node's name for NSID (RFC 5001) and id.server: printable ASCII, 1 to 64 bytes."""
    text = v.string(value)
    if not 1 <= len(text) <= 64 or not text.isascii() or not text.isprintable():
        raise v.Invalid("must be 1 to 64 printable ASCII characters")
    return text


def _rrl(t: _Table | None) -> RrlConfig | None:
    """``[server.rrl]``: present means on; every key has a default."""
    if t is None:
        return None
    d = RrlConfig()
    rrl = RrlConfig(
        responses_per_second=t.get("responses_per_second", v.number(0.1, 1e6),
                                   d.responses_per_second),
        per_source_per_second=t.get("per_source_per_second", v.number(1, 1e7),
                                    d.per_source_per_second),
        slip=t.get("slip", v.integer(0, 10), d.slip),
        ipv4_prefix=t.get("ipv4_prefix", v.integer(8, 32), d.ipv4_prefix),
        ipv6_prefix=t.get("ipv6_prefix", v.integer(16, 128), d.ipv6_prefix),
    )
    t.finish()
    return rrl


def _fleet(t: _Table | None, base: Path) -> FleetConfig | None:
    """``[fleet]``: present means on; ``store`` is required; the store's password in
    ``store`` or, kept out of the file, ``password_file`` (a systemd credential)."""
    if t is None:
        return None
    store = t.get("store", v.store_url) or "redis://"
    password_file = t.get("password_file", _readable_file(base), None)
    password = None
    if password_file is not None:
        if urlsplit(store).password is not None or "password=" in store:
            t.report(t.key("password_file"), "the store URL has a password already: give "
                     "it in one place")
        try:
            password = reading.read_text(password_file, "store password").strip()
        except (OSError, UnicodeDecodeError) as e:
            t.report(t.key("password_file"), f"{password_file}: cannot read: {e}")
    fleet = FleetConfig(
        store=store, password_file=password_file, password=password,
        name=t.get("name", v.identifier, "mirror-router"),
        node=t.get("node", v.identifier, None) or default_node(),
        observers=t.get("observers", v.integer(1, 64), 3),
        quorum=t.get("quorum", v.integer(1, 64), None),
        region=t.get("region", regions.region, regions.EVERYWHERE),
        observers_per_region=t.get("observers_per_region", v.integer(1, 64), 2),
    )
    if fleet.quorum is not None and fleet.quorum > fleet.observers:
        t.report(t.key("quorum"), f"{fleet.quorum} is more than observers ({fleet.observers}): "
                  "a target could never go down")
    t.finish()
    return fleet


def _one_or_many_ids(value: Any) -> tuple[str, ...]:
    """A target id, or a list of them."""
    return (v.string(value),) if isinstance(value, str) else v.list_of(v.string)(value)


def _missing_status(value: Any) -> int:
    """What a path every usable target lacks gets: 404 or 410 (the go command moves to
    its next GOPROXY entry on either)."""
    status = v.integer(100, 599)(value)
    if status not in (404, 410):
        raise v.Invalid(f"must be 404 or 410, not {status}")
    return status


def _secret(value: Any) -> bytes:
    """A DNS cookie secret: 32 hexadecimal digits (16 bytes, SipHash's key)."""
    text = v.string(value)
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != 16:
        raise v.Invalid("must be 32 hexadecimal digits (16 bytes: openssl rand -hex 16)")
    return secret


_CREDENTIALS = re.compile(r"\$(?:\{CREDENTIALS_DIRECTORY\}|CREDENTIALS_DIRECTORY)(?=/|$)")


def _at(base: Path, text: str) -> Path:
    """A path the config names: ``$CREDENTIALS_DIRECTORY/...`` (or ``${...}``) in the
    folder systemd copies a unit's ``LoadCredential=`` files to, readable by its service
    user whoever owns the originals; ``~`` expanded; relative paths from ``base``."""
    found = _CREDENTIALS.match(text)
    if found is None:
        return base / Path(text).expanduser()
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise v.Invalid(f"{text!r} names $CREDENTIALS_DIRECTORY, which is not set here: "
                        "systemd sets it for a unit with LoadCredential= (check --unit FILE "
                        "reads the unit's)")
    return Path(folder + text[found.end():])


def _readable_file(base: Path) -> Callable[[Any], Path]:
    """A path to a file that exists (``_at``)."""
    def convert(value: Any) -> Path:
        path = _at(base, v.string(value))
        if not path.is_file():
            raise v.Invalid(f"{str(value)!r}: no such file"
                            + (f" ({os.path.realpath(path)})" if str(path) != str(value) else ""))
        if _CREDENTIALS.match(str(value)) and path.stat().st_size < 4 \
                and not path.read_bytes().strip():
            raise v.Invalid(f"{str(value)!r} is empty: the unit's LoadCredential= source is "
                            "missing (its SetCredential= default stands in)")
        return path
    return convert


# ---------------------------------------------------------------- the reader

_REQUIRED: Any = object()


class _Table:
    """One TOML table, its key path, and the problems found while reading it."""

    def __init__(self, data: dict[str, Any], path: str, file: str, problems: list[Problem],
                 read: list[Path] | None = None) -> None:
        self.data, self.path, self.file, self.problems = data, path, file, problems
        self.used: set[str] = set()
        self.read = [] if read is None else read  # other files the document named (shared)

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
        except v.Invalid as e:
            self.report(self.key(name), e.reason)
            # Go on with the default so that later checks still run and report.
            return None if default is _REQUIRED else default

    def table(self, name: str, required: bool = False) -> _Table | None:
        value = self.get(name, v.table_value, _REQUIRED if required else None)
        if value is None:
            return None
        return _Table(value, self.key(name), self.file, self.problems, self.read)

    def tables(self, name: str) -> list[tuple[str, _Table]]:
        """An array of tables; each comes with its key path."""
        items = self.get(name, v.list_of_tables, [])
        out = []
        for i, item in enumerate(items or []):
            label = item.get("id") if isinstance(item.get("id"), str) else f"#{i + 1}"
            key = f"{self.key(name)}[{label}]"
            out.append((key, _Table(item, key, self.file, self.problems, self.read)))
        return out

    def subtables(self) -> Iterator[tuple[str, _Table]]:
        """Every key of this table, each a table itself (``[services.NAME]``)."""
        for name in list(self.data):
            sub = self.table(name)
            if sub is not None:
                yield name, sub

    def finish(self) -> None:
        """Every key no reader asked for is unknown; the nearest one asked for (every key
        this table may have was asked for, present or not) is suggested."""
        for name in self.data:
            if name not in self.used:
                near = difflib.get_close_matches(name, sorted(self.used), n=1, cutoff=0.75)
                self.report(self.key(name), "unknown key" + (
                    f" (did you mean {near[0]}?)" if near else ""))


# ---------------------------------------------------------------- locations


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
    lat = table.get("lat", v.number(-90, 90))
    lon = table.get("lon", v.number(-180, 180))
    table.finish()
    return Point(lat, lon) if lat is not None and lon is not None else None


# ---------------------------------------------------------------- DNS names

# ---------------------------------------------------------------- record data


# ---------------------------------------------------------------- building


def _build_zone(doc: _Table, path: Path) -> Zone | None:
    before = len(doc.problems)
    doc.used.add("services")  # read below once the origin is known
    z = doc.table("zone", required=True)
    origin = z.get("origin", v.absolute_name) if z is not None else None
    if z is None or origin is None:
        if z is not None:
            z.used.update(_ZONE_KEYS)  # unchecked without an origin, but not unknown
            z.finish()
        return None
    ttl = z.get("ttl", v.integer(0, 604800), DEFAULT_ZONE_TTL)
    zone = Zone(
        origin=origin,
        nameservers=z.get("nameservers", v.nonempty(v.list_of(v.absolute_name))),
        hostmaster=z.get("hostmaster", v.mailbox),
        ttl=ttl,
        negative_ttl=z.get("negative_ttl", v.integer(0, 86400), DEFAULT_NEGATIVE_TTL),
        serial=z.get("serial", v.integer(0, 2**32 - 1), _file_serial(path)),
        refresh=z.get("refresh", v.integer(1, 2**31 - 1), 14400),  # what Zonemaster
        retry=z.get("retry", v.integer(1, 2**31 - 1), 3600),  # and RFC 1912 accept
        expire=z.get("expire", v.integer(1, 2**31 - 1), 604800),
        records=tuple(_build_records(z, origin, ttl or 0)),
        services=tuple(_build_services(doc, origin, str(path))),
        source=str(path),
        **_signing(z, path.parent),
        lists=tuple(doc.read),  # after the services: the prefix files they read
    )
    z.finish()
    _check_zone(zone, doc)
    return zone if len(doc.problems) == before else None


def _signing(z: _Table, base: Path) -> dict[str, Any]:
    """The zone's DNSSEC keys: ``dnssec_key = FILE``, or ``dnssec_keys`` (a list of files,
    or a folder whose ``*.key`` files are read), each file's text read here
    (``router.dns.dnssec`` parses it); and ``dnssec_cds``."""
    one = z.get("dnssec_key", _readable_file(base), None)
    many = z.get("dnssec_keys", _key_files(base), None)
    cds = z.get("dnssec_cds", v.choice(Cds), Cds.KEYS)
    if one is not None and many is not None:
        z.report(z.key("dnssec_keys"), "give dnssec_key or dnssec_keys, not both")
    folder, files = many if many is not None else (None, (one,) if one is not None else ())
    name = "dnssec_keys" if many is not None else "dnssec_key"
    keys = []
    for path in files:
        try:
            keys.append(KeyFile(path, reading.read_text(path, "DNSSEC key")))
        except (OSError, UnicodeDecodeError) as e:
            z.report(z.key(name), f"{path}: cannot read: {e}")
    return {"dnssec_keys": tuple(keys), "dnssec_folder": folder, "dnssec_cds": cds}


def _key_files(base: Path) -> Callable[[Any], tuple[Path | None, tuple[Path, ...]]]:
    """``dnssec_keys``: a folder (its ``*.key`` files) or a list of files, relative paths
    from ``base``: (the folder or None, the files)."""
    def convert(value: Any) -> tuple[Path | None, tuple[Path, ...]]:
        if isinstance(value, str):
            folder = _at(base, value)
            if not folder.is_dir():
                raise v.Invalid(f"{value!r}: no such folder (a list of key files, or a "
                                "folder of *.key files)")
            files = tuple(sorted(folder.glob("*.key")))
            if not files:
                raise v.Invalid(f"{value!r}: no *.key file in this folder")
            return folder, files
        files = v.nonempty(v.list_of(_readable_file(base)))(value)
        return None, files
    return convert


_ZONE_KEYS = ("nameservers", "hostmaster", "ttl", "negative_ttl", "serial", "refresh", "retry",
              "expire", "records", "dnssec_key", "dnssec_keys", "dnssec_cds")


def _file_serial(path: Path) -> int:
    """The default SOA serial, from the file's content (the first 32 bits of its SHA-256,
    never 0): every node deployed from a copy of the same file answers with the same
    serial, and any edit changes it. It does not only grow (RFC 1982): nothing here serves
    zone transfers, and an operator who feeds secondaries sets ``serial`` explicitly."""
    try:
        digest = hashlib.sha256(reading.read_bytes(path, "zone file")).digest()
    except OSError:
        return 1
    return int.from_bytes(digest[:4], "big") or 1


def _build_records(z: _Table, origin: str, default_ttl: int) -> Iterator[Record]:
    for key, r in z.tables("records"):
        name = r.get("name", v.relative_name(origin))
        rtype = r.get("type", record_type)
        ttl = r.get("ttl", v.integer(0, 604800), default_ttl)
        values = r.get("data", v.one_or_many(rdata(rtype)) if rtype else v.anything) or ()
        r.finish()
        if name is None or rtype is None:
            continue
        if rtype == "NS" and name == origin:
            r.report(f"{key}.type",
                     "NS at the apex comes from zone.nameservers; remove this record")
            continue
        for value in values:
            yield Record(name, rtype, value, ttl)


def _build_services(doc: _Table, origin: str, source: str) -> Iterator[Service]:
    services = doc.table("services")
    if services is None:
        return
    for name, s in services.subtables():
        try:
            v.identifier(name)
        except v.Invalid as e:
            s.report(s.path, e.reason)
        service = _build_service(name, s, origin, source)
        s.finish()
        if service is not None:
            yield service


def _build_service(name: str, s: _Table, origin: str, source: str) -> Service | None:
    before = len(s.problems)
    health = _build_health(s.table("health"))
    folder = Path(source).parent
    targets = tuple(_build_targets(s, health, folder))
    fallback = s.get("fallback", v.list_of(v.string), ())
    service = Service(
        name=name,
        origin=origin,
        targets=targets,
        dns_names=s.get("dns_names", v.list_of(v.relative_name(origin)), ()),
        answers=s.get("answers", v.integer(1, 16), 1),
        ttl=s.get("ttl", v.integer(0, 86400), 30),
        spread=s.get("spread", v.number(1.0, 100.0), 1.0),
        spread_km=s.get("spread_km", v.number(0, 40000), 0.0),
        cross_border_km=s.get("cross_border_km", v.number(0, 40000), 0.0),
        anycast_km=s.get("anycast_km", v.number(0, 40000), DEFAULT_ANYCAST_KM),
        km_per_ms=s.get("km_per_ms", v.number(0, 40000), DEFAULT_KM_PER_MS),
        throughput_size=s.get("throughput_size", v.size(1, 2**50), None),
        default_location=_read_point(s, "default_location"),
        # Default: the fallback targets when the service names any, else fail open.
        on_all_down=s.get("on_all_down", v.choice(OnAllDown),
                          OnAllDown.FALLBACK if fallback else OnAllDown.ALL),
        fallback=fallback or (),
        health=health or HealthCheck(),
        routes=tuple(_build_routes(s, folder)),
        source=source,
        **_http_keys(s),
    )
    _check_service(service, s)
    return service if len(s.problems) == before else None


def _http_keys(s: _Table) -> dict[str, Any]:
    """The keys only the HTTP redirector reads."""
    return {
        "http_prefix": s.get("http_prefix", v.http_prefix, None),
        "link_alternates": s.get("link_alternates", v.integer(0, 16), 4),
        "pass_query": s.get("pass_query", v.boolean, False),
        "catalog": _build_catalog(s.table("catalog")),
        "immutable": s.get("immutable", v.list_of(v.path_pattern), ()),
        "mutable": s.get("mutable", v.list_of(v.path_pattern), ()),
        "mutable_ttl": s.get("mutable_ttl", v.duration(0.1, 86400), 60.0),
        "origin_targets": s.get("origin", _one_or_many_ids, ()),
        "missing_status": s.get("missing_status", _missing_status, 404),
        "allow_downgrade": s.get("allow_downgrade", v.boolean, False),
        "verify": _build_verify(s.table("verify")),
        "corrupt_after": s.get("corrupt_after", v.integer(1, 1000), 2),
        "checks": _build_file_checks(s),
        "retries": _build_retries(s),
    }


def _build_retries(s: _Table) -> RetryPolicy | None:
    """``retry_window``, ``retry_threshold``, ``avoid_for``: any of them turns it on."""
    if not any(k in s.data for k in ("retry_window", "retry_threshold", "avoid_for")):
        return None
    d = RetryPolicy()
    return RetryPolicy(window=s.get("retry_window", v.duration(1, 3600), d.window),
                       threshold=s.get("retry_threshold", v.integer(1, 100), d.threshold),
                       avoid_for=s.get("avoid_for", v.duration(1, 7 * 86400), d.avoid_for))


def _build_health(h: _Table | None) -> HealthCheck | None:
    if h is None:
        return None
    d = HealthCheck()
    check = HealthCheck(
        kind=h.get("kind", v.choice(Kind), d.kind),
        path=h.get("path", v.url_path, d.path),
        url=h.get("url", _health_url, None),
        interval=h.get("interval", v.duration(0.05, 86400), d.interval),
        timeout=h.get("timeout", v.duration(0.01, 3600), d.timeout),
        rise=h.get("rise", v.integer(1, 100), d.rise),
        fall=h.get("fall", v.integer(1, 100), d.fall),
        expect_status=h.get("expect_status", v.status_ranges, d.expect_status),
        expect_body=h.get("expect_body", v.nonempty_string(1024), d.expect_body),
        suspect_interval=h.get("suspect_interval", v.duration(0.05, 86400), None),
        slow_start=h.get("slow_start", v.duration(0, 86400), 0.0),
    )
    if "url" in h.data and "path" in h.data:
        h.report(h.key("url"), "give path (joined to each target's url) or url (from the "
                 "host's root, or a whole URL), not both")
    h.finish()
    return check


def _health_url(value: Any) -> str:
    """``health.url``: ``/x`` (from each target's host root) or an absolute http(s) URL."""
    text = v.string(value)
    return v.url_path(text) if text.startswith("/") else v.url(text)


def health_url(url: str | None, check: HealthCheck) -> str | None:
    """A target's health URL from its ``url`` and the service's check: ``path`` joined to
    the url (``https://m/golang/`` + ``/health`` is ``https://m/golang/health``), or
    ``url``: ``/health`` from the host's root (``https://m/health``), or a whole URL."""
    if check.url is not None and not check.url.startswith("/"):
        return check.url
    if url is None:
        return None
    if check.url is not None:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}{check.url}"
    return join(url, check.path)


def _build_verify(t: _Table | None) -> Verify | None:
    """``verify = { bytes_per_day = "2GiB", every = "10m" }``: present means on."""
    if t is None:
        return None
    spec = Verify(bytes_per_day=t.get("bytes_per_day", v.size(1024, 2**50)) or 1024,
                  every=t.get("every", v.duration(0.05, 7 * 86400), 600.0))
    t.finish()
    return spec


def _build_catalog(c: _Table | None) -> CatalogSpec | None:
    if c is None:
        return None
    d = CatalogSpec("")
    spec = CatalogSpec(
        url=c.get("url", v.fetch_url),
        format=c.get("format", v.choice(CatalogFormat), d.format),
        refresh=c.get("refresh", v.duration(0.1, 7 * 86400), d.refresh),
        timeout=c.get("timeout", v.duration(0.01, 3600), d.timeout),
    )
    c.finish()
    return spec


_FILE_CHECK_KEYS = ("availability_wait", "availability_ttl", "availability_negative_ttl",
                    "availability_checks")


def _build_file_checks(s: _Table) -> FileChecks:
    d = FileChecks()
    return FileChecks(
        wait=s.get("availability_wait", v.duration(0.001, 60), d.wait),
        ttl=s.get("availability_ttl", v.duration(0.1, 30 * 86400), d.ttl),
        negative_ttl=s.get("availability_negative_ttl", v.duration(0.1, 30 * 86400),
                           d.negative_ttl),
        per_mirror=s.get("availability_checks", v.integer(1, 64), d.per_mirror),
    )


def _build_targets(s: _Table, health: HealthCheck | None, folder: Path) -> Iterator[Target]:
    check = health or HealthCheck()
    for _key, t in s.tables("targets"):
        url = t.get("url", v.base_url, None)
        explicit = t.get("health_url", v.url, None)
        target = Target(
            id=t.get("id", v.identifier),
            location=_read_location(t),
            country=t.get("country", v.country, None),
            addresses=t.get("addresses", v.list_of(v.address), ()),
            url=url,
            health_url=explicit or health_url(url, check),
            weight=t.get("weight", v.integer(1, 1_000_000), 100),
            only_countries=t.get("only_countries", v.countries, frozenset()),
            exclude_countries=t.get("exclude_countries", v.countries, frozenset()),
            only_continents=t.get("only_continents", v.continents, frozenset()),
            exclude_continents=t.get("exclude_continents", v.continents, frozenset()),
            only_networks=_networks(t, "only_networks", folder),
            only_asns=t.get("only_asns", v.asns, frozenset()),
            networks=_networks(t, "networks", folder),
            asns=t.get("asns", v.asns, frozenset()),
            enabled=t.get("enabled", v.boolean, True),
            capacity=_capacity(t.table("capacity")),
            load_url=t.get("load_url", v.fetch_url, None),
            load_metric=t.get("load_metric", _metric, None),
        )
        if target.load_metric is not None and target.load_url is None:
            t.report(t.key("load_metric"), "needs load_url: the page to read it from")
        t.finish()
        yield target


def _capacity(c: _Table | None) -> Capacity | None:
    """``capacity = { mbps = 1000, requests = 300, load = 500, high = "90%", low = "75%" }``."""
    if c is None:
        return None
    d = Capacity()
    found = Capacity(mbps=c.get("mbps", v.number(0.001, 1e9), None),
                     requests=c.get("requests", v.number(0.001, 1e9), None),
                     load=c.get("load", v.number(1e-9, 1e18), None),
                     high=c.get("high", _fraction, d.high), low=c.get("low", _fraction, d.low))
    if found.mbps is None and found.requests is None and found.load is None:
        c.report(c.path, "give mbps, requests or load (the figure load_url reports)")
    if found.low >= found.high:
        c.report(c.key("low"), f"{found.low:g} is not below high ({found.high:g})")
    c.finish()
    return found


def _fraction(value: Any) -> float:
    """``0.9`` or ``"90%"``."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            value = float(value[:-1]) / 100
        except ValueError:
            raise v.Invalid(f"{value!r} is not a percentage") from None
    return v.number(0.01, 1.0)(value)


_METRIC = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^{}]*\})?')


def _metric(value: Any) -> str:
    """A Prometheus metric name, maybe with labels:
    ``node_network_transmit_bytes_total{device="eth0"}``."""
    text = v.string(value)
    if not _METRIC.fullmatch(text):
        raise v.Invalid(f"{text!r} is not a metric name with optional {{labels}}")
    return text




def _networks(t: _Table, key: str, folder: Path) -> tuple[IPNetwork, ...]:
    """``key`` (a list of prefixes) and ``KEY_file`` (a file of them, one a line,
    ``#`` comments; relative to the zone file's folder), together."""
    listed: tuple[IPNetwork, ...] = t.get(key, v.list_of(v.strict_network), ())
    name = t.get(f"{key}_file", v.string, None)
    if name is None:
        return listed
    return (*listed, *_networks_file(t, f"{key}_file", folder / Path(name).expanduser()))


def _networks_file(t: _Table, key: str, path: Path) -> list[IPNetwork]:
    t.read.append(path)
    try:
        lines = reading.read_text(path, "prefix list").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        t.report(t.key(key), f"{path}: cannot read: {e}")
        return []
    except v.Invalid as e:
        t.report(t.key(key), e.reason)
        return []
    found = []
    for n, line in enumerate(lines, 1):
        text = line.partition("#")[0].strip()
        if not text:
            continue
        try:
            found.append(v.strict_network(text))
        except v.Invalid as e:
            t.report(t.key(key), f"{path}:{n}: {e.reason}")
    return found


def _build_routes(s: _Table, folder: Path) -> Iterator[Route]:
    for key, r in s.tables("routes"):
        route = Route(
            name=r.get("name", v.identifier, None) or key.rpartition("[")[2].rstrip("]"),
            targets=r.get("targets", v.nonempty(v.list_of(v.string))) or (),
            networks=_networks(r, "networks", folder),
            asns=r.get("asns", v.asns, frozenset()),
            countries=r.get("countries", v.countries, frozenset()),
        )
        r.finish()
        if not (route.networks or route.asns or route.countries):
            r.report(r.path, "a route needs networks, asns or countries")
        yield route


def _read_location(t: _Table) -> Point | None:
    if "location" not in t.data:
        t.get("location", v.anything)  # reports "is required"
    return _read_point(t, "location", anycast=True)


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
    _check_http(service, s, ids)
    if service.on_all_down is OnAllDown.FALLBACK and not service.fallback:
        s.report(s.key("on_all_down"), '"fallback" needs at least one target id in fallback')
    if service.dns_names and service.targets and not any(t.addresses for t in service.targets):
        s.report(s.key("dns_names"), "no target has addresses, so DNS could never answer")
    if service.http_prefix and service.targets and not any(t.url for t in service.targets):
        s.report(s.key("http_prefix"), "no target has a url, so HTTP could never redirect")
    for t in service.targets:
        both = t.only_countries & t.exclude_countries
        if both:
            s.report(f"{s.path}.targets[{t.id}].exclude_countries",
                     f"{sorted(both)[0]} is also in only_countries")
        both = t.only_continents & t.exclude_continents
        if both:
            s.report(f"{s.path}.targets[{t.id}].exclude_continents",
                     f"{sorted(both)[0]} is also in only_continents")
    _check_routes(service, s, ids)


def _check_http(service: Service, s: _Table, ids: list[str]) -> None:
    """The redirector's keys: each needs http_prefix, and what it names exists."""
    for tid in service.origin_targets:
        if tid not in ids:
            s.report(s.key("origin"), f"unknown target id {tid!r}")
    if "mutable_ttl" in s.data and not service.mutable:
        s.report(s.key("mutable_ttl"), "has no effect without mutable paths")
    if service.verify is not None and service.catalog is None and not service.immutable:
        s.report(s.key("verify"), "needs a catalog (digests) or immutable paths (checked "
                 "against an origin's copy) to verify against")
    for key in ("catalog", "immutable", "mutable", "origin", "missing_status",
                "allow_downgrade", "verify", "corrupt_after", "retry_window",
                "retry_threshold", "avoid_for"):
        if key in s.data and not service.http_prefix:
            s.report(s.key(key), "needs http_prefix: only the HTTP redirector reads it")
    for key in _FILE_CHECK_KEYS:
        if key in s.data and service.catalog is None and not service.immutable \
                and not service.mutable:
            s.report(s.key(key), "has no effect without a catalog, immutable or mutable "
                     "paths: availability is checked only for those")


def _check_routes(service: Service, s: _Table, ids: list[str]) -> None:
    """Route targets exist, and no two routes claim the same network, AS or country
    (the longest prefix wins; equal ones would be a coin toss)."""
    claimed: dict[object, str] = {}
    for r in service.routes:
        where = f"{s.path}.routes[{r.name}]"
        for tid in r.targets:
            if tid not in ids:
                s.report(f"{where}.targets", f"unknown target id {tid!r}")
        for what, label in [*((n, f"network {n}") for n in r.networks),
                            *((("AS", a), f"AS{a}") for a in sorted(r.asns)),
                            *((("country", c), f"country {c}") for c in sorted(r.countries))]:
            if what in claimed and claimed[what] != r.name:
                s.report(where, f"{label} is also in route {claimed[what]}: a tie (routes "
                         "may nest, the longest prefix winning, but not claim the same one)")
            claimed.setdefault(what, r.name)


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
    prefixes: dict[str, str] = {}
    for s in zone.services:
        if s.http_prefix in prefixes:
            doc.report(f"services.{s.name}.http_prefix",
                       f"{s.http_prefix} is already served by services.{prefixes[s.http_prefix]}")
        if s.http_prefix:
            prefixes[s.http_prefix] = s.name
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
        inside = v.within(ns, zone.origin)
        if inside and not by_name.get(ns, set()) & {"A", "AAAA"} and ns not in steered:
            doc.report("zone.nameservers",
                       f"{ns} is inside the zone but has no A or AAAA record (glue)")
