"""The configuration model: a frozen ``Config`` of zones, services and targets, the
server's own settings (``ServerConfig``), and ``ConfigError``, which lists every
``Problem`` found (file, key path, reason). Pure.

Zone files are read and checked into this model by ``router.core.zonefile``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path

from router.core import values as v
from router.core.capacity import Capacity
from router.core.catalog import CatalogFile, CatalogSpec, FileChecks, subject
from router.core.earth import Point
from router.core.ip import IPAddress, IPNetwork
from router.core.rdata import RData
from router.core.regions import EVERYWHERE, Region
from router.core.retries import RetryPolicy
from router.core.urls import mirror_url
from router.errors import RouterError

DEFAULT_ZONE_TTL = 300
DEFAULT_NEGATIVE_TTL = 60
DEFAULT_ANYCAST_KM = 1000.0
# Light in fibre covers ~200 km per ms one way, so ~100 km of distance per ms of round trip:
# a mirror that answers 1 ms later costs as much as one 100 km further away.
DEFAULT_KM_PER_MS = 100.0
SUSPECT_INTERVAL = 1.0  # seconds between the checks of a suspect target, by default
PASSING = ((200, 399),)  # the statuses a health check accepts by default: 2xx and 3xx


class OnAllDown(StrEnum):
    """What a service answers when every candidate target is down."""

    FALLBACK = "fallback"  # the service's fallback targets, whatever their health
    ALL = "all"  # every target (fail open)
    EMPTY = "empty"  # nothing: NODATA over DNS, 503 over HTTP


class Kind(StrEnum):
    """Which kind of health check a service's targets get (``health.kind``; a
    ``Checker`` each, ``router.watch.kinds``)."""

    HTTP = "http"  # GET the health URL: a status in expect_status (and expect_body)
    # the same GET, at each of the target's addresses on its own (Host, TLS SNI and the
    # certificate's name the URL's): an address that fails leaves the DNS answers
    ADDRESSES = "addresses"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    kind: Kind = Kind.HTTP
    path: str = "/"  # joined to each target's url
    # instead of path: "/x" from each target's host root, or a whole URL for every target
    url: str | None = None
    interval: float = 10.0
    timeout: float = 3.0
    rise: int = 2
    fall: int = 3
    expect_status: tuple[tuple[int, int], ...] = PASSING  # inclusive ranges
    expect_body: str | None = None  # must occur in the first 64 KiB of the body
    # After a failed check, the next ones come this soon (until `fall` or a pass), so a
    # dead mirror is out in about fall x suspect_interval; None: min(1 s, interval).
    suspect_interval: float | None = None
    # A target back from down (or from a drain) takes a share of its clients that grows
    # from 0 to all over this long (router.core.capacity); 0: at once.
    slow_start: float = 0.0

    def passes(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.expect_status)

    @property
    def fast(self) -> float:
        """The interval between checks of a suspect target."""
        if self.suspect_interval is not None:
            return min(self.suspect_interval, self.interval)
        return min(SUSPECT_INTERVAL, self.interval)


@dataclass(frozen=True, slots=True)
class Verify:
    """``verify``: mirrors' copies fetched whole and hashed, within a budget (per target)."""

    bytes_per_day: int  # fetched per target per day at most (the budget refills evenly)
    every: float = 600.0  # seconds between verifications of a target


@dataclass(frozen=True, slots=True)
class Target:
    id: str
    location: Point | None  # None: anycast, reachable near everyone
    country: str | None = None
    addresses: tuple[IPAddress, ...] = ()
    url: str | None = None
    health_url: str | None = None  # resolved: explicit health_url, else url + health.path
    weight: int = 100
    only_countries: frozenset[str] = frozenset()
    exclude_countries: frozenset[str] = frozenset()
    only_continents: frozenset[str] = frozenset()
    exclude_continents: frozenset[str] = frozenset()
    # who it serves by network (router.core.audience): only these (a private mirror) ...
    only_networks: tuple[IPNetwork, ...] = ()
    only_asns: frozenset[int] = frozenset()
    # ... or these first, whatever the distance (a university's, an ISP's own)
    networks: tuple[IPNetwork, ...] = ()
    asns: frozenset[int] = frozenset()
    enabled: bool = True
    capacity: Capacity | None = None  # what it can take (router.core.capacity); None: no limit
    load_url: str | None = None  # where its own load figure is read (watch/loads)
    load_metric: str | None = None  # ... the Prometheus metric in it (None: a plain number)

    @property
    def anycast(self) -> bool:
        return self.location is None

    @property
    def scoped(self) -> bool:
        """Whether it has network or AS rules (``router.core.audience``)."""
        return bool(self.only_networks or self.only_asns or self.networks or self.asns)

    @property
    def secure(self) -> bool:
        """Whether its ``url`` is https:// (an HTTPS client may be sent there)."""
        return self.url is not None and self.url.startswith("https://")

    def addresses_of(self, version: int) -> tuple[IPAddress, ...]:
        return tuple(a for a in self.addresses if a.version == version)

    def url_for(self, path: str, query: str = "") -> str:
        """The URL of a decoded path on this target (which must have a ``url``)."""
        assert self.url is not None, f"target {self.id} has no url"
        return mirror_url(self.url, path, query)


@dataclass(frozen=True, slots=True)
class Route:
    """``[[services.X.routes]]``: clients in these networks, ASes or countries go to these
    targets first, in order (the first usable wins; none usable: steering as usual)."""

    name: str
    targets: tuple[str, ...]
    networks: tuple[IPNetwork, ...] = ()
    asns: frozenset[int] = frozenset()
    countries: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    origin: str
    targets: tuple[Target, ...]
    dns_names: tuple[str, ...] = ()
    answers: int = 1
    ttl: int = 30
    spread: float = 1.0
    spread_km: float = 0.0
    cross_border_km: float = 0.0
    anycast_km: float = DEFAULT_ANYCAST_KM
    km_per_ms: float = DEFAULT_KM_PER_MS  # the price of a millisecond of server wait, in km
    # a download whose time at the speed clients report (the beacon) is charged like the
    # wait (router.core.speeds); None: reported speeds are shown, never charged
    throughput_size: int | None = None
    default_location: Point | None = None
    on_all_down: OnAllDown = OnAllDown.ALL
    fallback: tuple[str, ...] = ()
    health: HealthCheck = HealthCheck()
    http_prefix: str | None = None  # "/dl/": GET /dl/<path> redirects to <target url><path>
    link_alternates: int = 4  # RFC 6249 Link: rel=duplicate headers on a redirect
    pass_query: bool = False  # pass the query string on to the mirror
    catalog: CatalogSpec | None = None  # what the origin publishes (HTTP only)
    # Paths (after the prefix) that never change once published, checked on mirrors like
    # catalog files, without a size to compare: "*/@v/*.zip" for a Go module proxy.
    immutable: tuple[str, ...] = ()
    # Paths whose answers change ("*/@v/list", "*/@latest", "sumdb/*"): sent only to a
    # mirror whose answer is at least as new as the freshest (router.core.mutable),
    # checked again after mutable_ttl seconds.
    mutable: tuple[str, ...] = ()
    mutable_ttl: float = 60.0
    # Targets that have everything (never checked for a file): they take what no mirror
    # has (the zone file's ``origin``). The fallback targets are origins too.
    origin_targets: tuple[str, ...] = ()
    missing_status: int = 404  # an immutable path every usable target lacks: 404 or 410
    # An HTTPS client may be sent to an http:// mirror (else such mirrors are excluded for
    # it: a redirect must not undo the client's TLS).
    allow_downgrade: bool = False
    verify: Verify | None = None  # mirrors' copies hashed (router.watch.verifier)
    routes: tuple[Route, ...] = ()  # rules per client network (router.core.audience)
    corrupt_after: int = 2  # corrupt files that make the whole target corrupt for the service
    checks: FileChecks = field(default_factory=FileChecks)  # how availability is learned
    # clients that come back for the same file avoid that mirror (router.core.retries);
    # None: off (retry_window, retry_threshold or avoid_for turns it on)
    retries: RetryPolicy | None = None
    source: str = ""

    def checked(self, path: str) -> CatalogFile | None:
        """What to check on mirrors for ``path``: the file itself when it is declared
        immutable; for a mutable one, the subject its freshness is read from."""
        if any(fnmatchcase(path, pattern) for pattern in self.immutable):
            return CatalogFile(path, "")
        if any(fnmatchcase(path, pattern) for pattern in self.mutable):
            return subject(path)
        return None

    @property
    def guards_scheme(self) -> bool:
        """Whether an HTTPS client must be kept from some of its mirrors (http:// ones)."""
        return not self.allow_downgrade and any(
            t.url is not None and not t.secure for t in self.targets)

    @property
    def origins(self) -> frozenset[str]:
        """The targets that have every file: ``origin`` and ``fallback``."""
        return frozenset(self.origin_targets) | frozenset(self.fallback)

    def target(self, target_id: str) -> Target | None:
        return next((t for t in self.targets if t.id == target_id), None)


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # absolute, lower case, with the trailing dot
    type: str
    data: RData
    ttl: int


class Cds(StrEnum):
    """What a signed zone's CDS and CDNSKEY records ask of the parent (RFC 8078)."""

    KEYS = "keys"  # the DS of the keys that sign (a rollover's new one once it is ready)
    DELETE = "delete"  # remove every DS: the zone is going unsigned (CDS 0 0 0 00)
    NONE = "none"  # no CDS or CDNSKEY at all


@dataclass(frozen=True, slots=True)
class KeyFile:
    """A DNSSEC key file and its text (a secret: never shown)."""

    path: Path
    text: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Zone:
    origin: str  # absolute, lower case, with the trailing dot
    nameservers: tuple[str, ...]
    hostmaster: str  # SOA RNAME form: hostmaster.example.com.
    ttl: int = DEFAULT_ZONE_TTL
    negative_ttl: int = DEFAULT_NEGATIVE_TTL
    serial: int = 1
    refresh: int = 14400  # Zonemaster: at least 14400
    retry: int = 3600  # ... at least 3600
    expire: int = 604800
    records: tuple[Record, ...] = ()
    services: tuple[Service, ...] = ()
    source: str = ""
    # signing keys (router.dns.dnssec), read with the zone: a key replaced in place is a
    # changed zone. Signed when there is one; each carries its own timing (rollovers).
    dnssec_keys: tuple[KeyFile, ...] = ()
    dnssec_folder: Path | None = None  # ``dnssec_keys = "DIR"``: its *.key files, watched
    dnssec_cds: Cds = Cds.KEYS  # what CDS/CDNSKEY publish (RFC 8078)
    lists: tuple[Path, ...] = ()  # prefix files its services read (networks_file): watched

    @property
    def signed(self) -> bool:
        return bool(self.dnssec_keys)

    @property
    def max_ttl(self) -> int:
        """The longest TTL any answer of the zone carries: how long a signature made now
        may be kept in caches."""
        return max([self.ttl, self.negative_ttl, *(r.ttl for r in self.records),
                    *(s.ttl for s in self.services)])

    @property
    def watched(self) -> tuple[Path, ...]:
        """The files besides the zone file that it was read from: its prefix lists, its
        key files and key folder (a new key dropped in is a reload)."""
        folder = (self.dnssec_folder,) if self.dnssec_folder is not None else ()
        return (*self.lists, *(k.path for k in self.dnssec_keys), *folder)


@dataclass(frozen=True, slots=True)
class Config:
    zones: tuple[Zone, ...] = ()

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(s for z in self.zones for s in z.services)

    @property
    def lists(self) -> tuple[Path, ...]:
        """Every file besides the zone files that the config was read from (prefix lists,
        DNSSEC keys and key folders), watched by ``serve``: a change reloads as SIGHUP
        does."""
        return tuple(dict.fromkeys(p for z in self.zones for p in z.watched))

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def named(self, name: str) -> tuple[Zone, Service] | None:
        """The service a steered DNS name or a service's name means, and its zone."""
        service = self.service_for_name(name) or self.service(name)
        if service is None:
            return None
        return next(z for z in self.zones if service in z.services), service

    def service_for_name(self, name: str) -> Service | None:
        """The service that steers a DNS name (any case, trailing dot optional)."""
        wanted = v.fqdn(name)
        return next((s for s in self.services if wanted in s.dns_names), None)


def unchanged_zones(old: Config, new: Config) -> frozenset[str]:
    """The origins whose answers a reload from ``old`` to ``new`` cannot change, so their
    cached answers may stay: the zone is equal in both, it is neither inside nor above a
    zone that changed (delegations), and none of its records names a changed zone (glue
    and CNAME chains are read from there). Anything else is answered afresh."""
    before = {z.origin: z for z in old.zones}
    after = {z.origin: z for z in new.zones}
    changed = {o for o in before.keys() | after.keys() if before.get(o) != after.get(o)}

    def touches_changed(zone: Zone) -> bool:
        names = [*zone.nameservers, *(n for r in zone.records for n in _names(r.data))]
        return any(v.within(zone.origin, c) or v.within(c, zone.origin)
                   or any(v.within(n, c) for n in names) for c in changed)

    return frozenset(o for o, z in after.items() if o not in changed and not touches_changed(z))


def _names(data: RData) -> list[str]:
    """The domain names in a record's data (CNAME, NS, MX exchange, SRV target ...)."""
    if isinstance(data, str):
        return [v.fqdn(data)]
    if is_dataclass(data):
        return [v.fqdn(x) for f in fields(data) if isinstance(x := getattr(data, f.name), str)]
    return []


# ---------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    key: str
    reason: str
    # where the key is written (or its table), when known; not part of what the problem is
    line: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        file = f"{self.file}:{self.line}" if self.line is not None else self.file
        where = f"{file}: {self.key}" if self.key else file
        return f"{where}: {self.reason}"


class ConfigError(RouterError):
    """The configuration is invalid; ``problems`` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# ---------------------------------------------------------------- the server file


@dataclass(frozen=True, slots=True)
class RrlConfig:
    """``[server.rrl]``: response rate limiting over UDP (``router.dns.rrl``)."""

    responses_per_second: float = 10.0  # per (client prefix, ECS subnet, class, name)
    per_source_per_second: float = 2500.0  # per client prefix, whatever is asked
    slip: int = 2  # every slip-th limited response is sent truncated (0: none)
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """``[fleet]`` (or ``serve --fleet URL --node NAME``): nodes that share health
    observations, overrides and file checks through Redis or Valkey (``router.fleet``)."""

    store: str  # redis://, rediss:// or unix:// URL, maybe with a password
    name: str = "mirror-router"  # the fleet's key prefix: several fleets may share a store
    node: str = field(default_factory=lambda: default_node())  # unique in the fleet
    observers: int = 3  # nodes that probe each target (all of them when fewer are live)
    quorum: int | None = None  # "down" votes that take a target down (None: a majority)
    region: Region = EVERYWHERE  # where this node looks from (core.regions)
    observers_per_region: int = 2  # with live nodes in two regions or more: per region
    password_file: Path | None = None  # the store's password, read at load (a credential)
    password: str | None = field(default=None, repr=False)


def default_node() -> str:
    """This machine's host name, as far as it is a valid node name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", os.uname().nodename)[:63].strip("-.")
    return name or "node"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of the server itself (``serve --config FILE``, table ``[server]``)."""

    trusted_proxies: tuple[IPNetwork, ...] = ()
    access_log: bool = False
    beacon: bool = False  # POST /report (serve --beacon)
    tls_ca: Path | None = None  # extra CA certificates the prober trusts (PEM)
    tls_cert: Path | None = None  # the HTTPS listeners' certificate chain (PEM)
    tls_key: Path | None = None  # ... and its private key (PEM)
    nsid: str | None = None  # this node's name in NSID and id.server (off when None)
    rrl: RrlConfig | None = None  # [server.rrl]: response rate limiting (off when None)
    cookie_secret: bytes | None = None  # 16 bytes, shared by the nodes (None: random)
    cookie_secret_previous: bytes | None = None  # still accepted during a rollover
    fleet: FleetConfig | None = None  # [fleet]: share state with other nodes (None: alone)
    asn_db: Path | None = None  # an ASN database (GeoLite2-ASN, DB-IP ASN Lite)
    dnstap: str | None = None  # where sampled answers go: unix:/path or tcp:HOST:PORT
    dnstap_sample: float = 1.0  # the share of answers sent there
