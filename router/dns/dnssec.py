"""DNSSEC: one combined signing key (CSK) per zone, and online signatures. Pure, bar the
key file's reading.

A key file is the PEM private key with a few metadata lines before it::

    ; mirror-router DNSSEC key: a combined signing key (CSK), keep it secret
    ; zone: go.example.com.
    ; algorithm: ecdsap256sha256
    ; created: 2026-11-25T20:10:00Z
    -----BEGIN PRIVATE KEY-----
    ...

``Signer.sign()`` makes the RRSIG of one RRset (RFC 4034 §3, canonical form §6) with
``cryptography``: deterministic ECDSA (RFC 6979) or Ed25519, so the same RRset in the same
validity window gives the same bytes on every worker and every node. Windows are
aligned to fixed boundaries (``WINDOW``), as PowerDNS does: a signature is valid from one
window before the current one began to two after, and signatures are cached per (key,
owner, type, TTL, RDATA, window), so a warm cache signs nothing per query.

Denial is compact (RFC 9824): one NSEC at the query name, its next name the name's
immediate successor (``\\000.name``), its bitmap the types that exist there, or NXNAME
for a name that does not: nothing to walk.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import math
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from router.core import reading, values
from router.core.config import Cds, Config, ConfigError, Problem, Zone
from router.core.dnsparams import Class, Type
from router.core.memo import Memo
from router.core.runtime import Signing, SigningKey
from router.dns.records import Name, Record, to_name, wire_name
from router.errors import RouterError

ALGORITHMS = {"ecdsap256sha256": 13, "ed25519": 15}
DS, RRSIG, NSEC, DNSKEY = Type.DS, Type.RRSIG, Type.NSEC, Type.DNSKEY
CDS, CDNSKEY, NXNAME = Type.CDS, Type.CDNSKEY, Type.NXNAME
CSK_FLAGS = 257  # zone key + secure entry point
WINDOW = 7 * 86400  # signatures: valid from a window before this one to two after it
SIGNATURES = 65536  # kept

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class DnssecError(RouterError):
    """A key file that cannot be used: says which file and why."""


@dataclass(frozen=True, slots=True)
class Timing:
    """When a key enters the DNSKEY RRset (``publish``), starts signing (``activate``),
    stops signing (``retire``) and leaves the DNSKEY RRset (``remove``), as Unix times;
    None: since ever (publish, activate) or never (retire, remove). A retired key stays
    published until removed, so the signatures it made still validate (RFC 7583)."""

    publish: float | None = None
    activate: float | None = None
    retire: float | None = None
    remove: float | None = None

    def published(self, now: float) -> bool:
        return _since(self.publish, now) and not _since(self.remove, now, False)

    def signing(self, now: float) -> bool:
        return _since(self.activate, now) and not _since(self.retire, now, False)

    def events(self) -> dict[str, float]:
        return {e: t for e in EVENTS if (t := getattr(self, e)) is not None}

    def problem(self) -> str | None:
        """Why this timing cannot be, or None."""
        for first, then in (("publish", "remove"), ("activate", "retire")):
            a, b = getattr(self, first), getattr(self, then)
            if a is not None and b is not None and b < a:
                return f"{then} ({values.stamp(b)}) is before {first} ({values.stamp(a)})"
        return None

    def lines(self) -> str:
        """The key file's timing lines."""
        return "".join(f"; {e}: {values.stamp(t)}\n" for e, t in self.events().items())


EVENTS = ("publish", "activate", "retire", "remove")


def _since(when: float | None, now: float, unset: bool = True) -> bool:
    return unset if when is None else when <= now


@dataclass(frozen=True, slots=True)
class Key:
    zone: Name
    algorithm: int
    private: PrivateKey
    dnskey: bytes  # the DNSKEY RDATA
    tag: int
    path: Path
    created: float
    timing: Timing = Timing()

    @property
    def name(self) -> str:
        return next(n for n, a in ALGORITHMS.items() if a == self.algorithm)

    @property
    def summary(self) -> str:
        """How ``check``, ``explain`` and ``dnssec`` name it: algorithm, tag, file."""
        return f"{self.name}, key tag {self.tag}, {self.path}"


# ---------------------------------------------------------------- key files


def generate(zone: str, algorithm: str, now: float | None = None,
             timing: Timing = Timing()) -> str:
    """A new key file's text for ``zone``."""
    private: PrivateKey = ec.generate_private_key(ec.SECP256R1()) \
        if algorithm == "ecdsap256sha256" else ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return ("; mirror-router DNSSEC key: a combined signing key (CSK), keep it secret\n"
            f"; zone: {zone.lower().rstrip('.')}.\n; algorithm: {algorithm}\n"
            f"; created: {created}\n{timing.lines()}{pem}")


def retimed(text: str, timing: Timing) -> str:
    """A key file's ``text`` with its timing lines replaced by ``timing``'s."""
    kept = "".join(line for line in text.splitlines(keepends=True)
                   if not _TIMING.match(line))
    head, pem = kept.split("-----BEGIN", 1)
    return f"{head}{timing.lines()}-----BEGIN{pem}"


_META = re.compile(r"^;\s*(zone|algorithm|created):\s*(\S+)\s*$", re.MULTILINE)
_TIMING = re.compile(r"^;\s*(publish|activate|retire|remove):\s*(\S+)\s*$", re.MULTILINE)


def _timing(text: str, path: Path) -> Timing:
    found: dict[str, float] = {}
    for event, when in _TIMING.findall(text):
        if when == "now" or when.startswith("+"):
            raise DnssecError(f"{path}: {event}: {when!r}: write a time such as "
                              "2026-12-08T02:00:00Z in a key file (keygen does)")
        try:
            found[event] = values.moment(when, 0.0)
        except values.Invalid as e:
            raise DnssecError(f"{path}: {event}: {e.reason}") from None
    timing = Timing(**found)
    if (problem := timing.problem()) is not None:
        raise DnssecError(f"{path}: {problem}")
    return timing


def load(path: Path, origin: str, text: str | None = None) -> Key:
    """The key in ``path`` (its ``text``, when already read) for the zone ``origin``;
    ``DnssecError`` naming the file."""
    if text is None:
        try:
            text = reading.read_text(path, "DNSSEC key")
        except (OSError, UnicodeDecodeError) as e:
            raise DnssecError(f"{path}: cannot read the DNSSEC key: {e}") from None
    meta = dict(_META.findall(text))
    zone, algorithm = meta.get("zone", "").lower(), meta.get("algorithm", "")
    if zone.rstrip(".") != origin.lower().rstrip("."):
        raise DnssecError(f"{path}: the key is for zone {zone or '(none named)'!r}, "
                          f"not {origin!r}")
    if algorithm not in ALGORITHMS:
        raise DnssecError(f"{path}: algorithm {algorithm!r} is not one of "
                          f"{', '.join(ALGORITHMS)}")
    try:
        private = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise DnssecError(f"{path}: not a PEM private key: {e}") from None
    expected = ec.EllipticCurvePrivateKey if algorithm == "ecdsap256sha256" \
        else ed25519.Ed25519PrivateKey
    if not isinstance(private, expected) or (
            isinstance(private, ec.EllipticCurvePrivateKey)
            and not isinstance(private.curve, ec.SECP256R1)):
        raise DnssecError(f"{path}: the private key is not an {algorithm} key")
    number = ALGORITHMS[algorithm]
    dnskey = struct.pack("!HBB", CSK_FLAGS, 3, number) + _public(private)
    return Key(to_name(origin), number, private, dnskey, key_tag(dnskey), path,
               _created(meta.get("created"), path), _timing(text, path))


def _created(stamp: str | None, path: Path) -> float:
    """When the key was made: its ``created`` line, else the file's modification time."""
    try:
        return calendar.timegm(time.strptime(stamp or "", "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return path.stat().st_mtime


def _public(private: PrivateKey) -> bytes:
    public = private.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return public.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)[1:]
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_tag(dnskey: bytes) -> int:
    """RFC 4034 Appendix B."""
    total = sum(b << 8 if i % 2 == 0 else b for i, b in enumerate(dnskey))
    return (total + (total >> 16)) & 0xFFFF


def ds_rdata(key: Key) -> bytes:
    """DS RDATA with a SHA-256 digest (RFC 4509)."""
    digest = hashlib.sha256(wire_name(key.zone) + key.dnskey).digest()
    return struct.pack("!HBB", key.tag, key.algorithm, 2) + digest


def ds_text(key: Key) -> str:
    """The DS record to give the parent, in presentation form."""
    rdata = ds_rdata(key)
    owner = b".".join(key.zone).decode() + "."
    return f"{owner} IN DS {key.tag} {key.algorithm} 2 {rdata[4:].hex().upper()}"


# ---------------------------------------------------------------- a zone's keys over time


@dataclass(frozen=True, slots=True)
class Phase:
    """What a zone's keys do between two events (a key published, ready, activated,
    retired or removed): the same until ``until``."""

    published: tuple[Key, ...]  # in the DNSKEY RRset (and CDNSKEY/CDS when ready)
    signing: tuple[Key, ...]  # sign every RRset
    apex: tuple[Key, ...]  # sign DNSKEY, CDS and CDNSKEY: every published or signing key
    cds: tuple[Key, ...]  # what CDS and CDNSKEY ask the parent's DS to be
    since: float
    until: float  # the next event, or infinity
    lapsed: bool = False  # no key was due to sign: the published ones do (a warning)


KEY_TYPES = frozenset({DNSKEY, CDS, CDNSKEY})  # signed by every published key


def ready(key: Key, now: float, ttl: int) -> bool:
    """Published for at least the DNSKEY TTL: every cache that has the DNSKEY RRset has
    this key in it, so the parent may point its DS at it."""
    return key.timing.published(now) and (key.timing.publish is None
                                          or key.timing.publish + ttl <= now)


def phase(keys: tuple[Key, ...], now: float, ttl: int) -> Phase:
    """What ``keys`` do at ``now``. A key signs the DNSKEY RRset from its publication (and
    while it signs), so a validator holding either DS of a rollover validates it; the
    rest is signed by the active keys only. CDS and CDNSKEY name the ready, signing keys
    that are not on their way out (no remove time), else the ready, signing ones."""
    published = tuple(k for k in keys if k.timing.published(now))
    signing = tuple(k for k in keys if k.timing.signing(now))
    lapsed = not signing or not published
    if not published:  # every key removed: the last one stays rather than a bogus zone
        published = (max(keys, key=lambda k: k.timing.remove or math.inf),)
    if not signing:
        signing = published
    ready_signing = [k for k in signing if ready(k, now, ttl) and k in published]
    cds = tuple(k for k in ready_signing if k.timing.remove is None) or tuple(ready_signing)
    return Phase(published, signing, tuple(dict.fromkeys((*published, *signing))), cds,
                 now, next_event(keys, now, ttl)[0], lapsed)


def key_events(key: Key, ttl: int) -> dict[str, float]:
    """A key's events by name, with ``ready`` (published + the DNSKEY TTL)."""
    found = key.timing.events()
    if key.timing.publish is not None:
        found["ready"] = key.timing.publish + ttl
    return found


def next_event(keys: Iterable[Key], now: float, ttl: int) -> tuple[float, str, Key | None]:
    """The first event after ``now`` of any of ``keys``: (time, event, key), or
    (infinity, "", None)."""
    found = [(t, e, k) for k in keys for e, t in key_events(k, ttl).items() if t > now]
    return min(found, key=lambda f: f[0]) if found else (math.inf, "", None)


def state(key: Key, now: float, ttl: int) -> str:
    """One word for what ``key`` does at ``now``."""
    published, signing = key.timing.published(now), key.timing.signing(now)
    if published and signing:
        return "active"
    if signing:
        return "signing-unpublished"  # an algorithm rollover's new key before publication
    if published:
        started = key.timing.activate is None or key.timing.activate <= now
        return "retired" if started else ("ready" if ready(key, now, ttl) else "published")
    if key.timing.remove is not None and key.timing.remove <= now:
        return "removed"
    return "planned"


def key_records(origin: Name, p: Phase, ttl: int, cds: Cds) -> dict[int, list[Record]]:
    """What the apex publishes: DNSKEY, and CDS and CDNSKEY for RFC 8078 automation (the
    delete form with ``dnssec_cds = "delete"``, nothing with ``"none"``)."""
    found: dict[int, list[Record]] = {
        DNSKEY: [Record(origin, DNSKEY, Class.IN, ttl, (k.dnskey,)) for k in p.published]}
    if cds is Cds.DELETE:
        return {**found, CDS: [Record(origin, CDS, Class.IN, ttl, (CDS_DELETE,))],
                CDNSKEY: [Record(origin, CDNSKEY, Class.IN, ttl, (CDNSKEY_DELETE,))]}
    if cds is Cds.KEYS and p.cds:
        return {**found, CDS: [Record(origin, CDS, Class.IN, ttl, (ds_rdata(k),)) for k in p.cds],
                CDNSKEY: [Record(origin, CDNSKEY, Class.IN, ttl, (k.dnskey,)) for k in p.cds]}
    return found


CDS_DELETE = struct.pack("!HBB", 0, 0, 0) + b"\0"  # CDS 0 0 0 00 (RFC 8078 §4)
CDNSKEY_DELETE = struct.pack("!HBB", 0, 3, 0) + b"\0"  # CDNSKEY 0 3 0 AA==


def presentation(key: Key) -> str:
    """The DNSKEY in presentation form (a trust anchor for a resolver)."""
    owner = b".".join(key.zone).decode() + "."
    flags, protocol, algorithm = struct.unpack_from("!HBB", key.dnskey)
    public = base64.b64encode(key.dnskey[4:]).decode()
    return f"{owner} IN DNSKEY {flags} {protocol} {algorithm} {public}"


# ---------------------------------------------------------------- signing


def window(now: float) -> tuple[int, int]:
    """(inception, expiration) for a signature made at ``now``: fixed boundaries, so
    every signer agrees."""
    start = int(now // WINDOW) * WINDOW
    return start - WINDOW, start + 2 * WINDOW


def canonical(record: Record) -> bytes:
    """A record's RDATA in canonical form: names uncompressed, in lower case."""
    return b"".join(p if isinstance(p, bytes) else wire_name(p) for p in record.rdata)


class Signer:
    """RRSIGs for one zone, by the keys due to sign at the time, cached; counts what it
    made and what it found. ``at(now)`` moves it to the phase of ``now``."""

    def __init__(self, keys: tuple[Key, ...], ttl: int, now: float,
                 size: int = SIGNATURES) -> None:
        self.keys = keys
        self.ttl = ttl  # the DNSKEY TTL (a key is ready one TTL after publication)
        self.cache: Memo[tuple[object, ...], Record] = Memo(size)
        self.made = 0
        self.phase = phase(keys, now, ttl)

    def at(self, now: float) -> Phase | None:
        """Move to the phase of ``now``: the new phase if it changed, else None."""
        if self.phase.since <= now < self.phase.until:
            return None
        self.phase = phase(self.keys, now, self.ttl)
        return self.phase

    def sign(self, rrset: list[Record], now: float) -> list[Record]:
        first = rrset[0]
        rdatas = tuple(sorted(canonical(r) for r in rrset))
        inception, expiration = window(now)
        keys = self.phase.apex if first.rtype in KEY_TYPES else self.phase.signing
        out = []
        for k in keys:
            key = (k.tag, k.algorithm, first.owner, first.rtype, first.rclass, first.ttl,
                   rdatas, inception)
            found = self.cache.get(key)
            if found is None:
                found = self.cache.put(key, self._make(k, first, rdatas, inception,
                                                       expiration))
            out.append(found)
        return out

    def _make(self, k: Key, first: Record, rdatas: tuple[bytes, ...], inception: int,
              expiration: int) -> Record:
        self.made += 1
        head = struct.pack("!HBBIIIH", first.rtype, k.algorithm, len(first.owner), first.ttl,
                           expiration, inception, k.tag) + wire_name(k.zone)
        owner = wire_name(first.owner) + struct.pack("!HHI", first.rtype, first.rclass,
                                                      first.ttl)
        signed = head + b"".join(owner + struct.pack("!H", len(r)) + r for r in rdatas)
        return Record(first.owner, RRSIG, first.rclass, first.ttl,
                      (head + _signature(k.private, signed),))


def _signature(private: PrivateKey, data: bytes) -> bytes:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(data)
    der = private.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def signed(records: Iterable[Record], signer: Signer, now: float) -> list[Record]:
    """``records`` with their RRSIGs after each RRset (records of one owner, type and
    class in a row), in their order."""
    out: list[Record] = []
    rrset: list[Record] = []
    for r in [*records, None]:
        if rrset and (r is None or (r.owner, r.rtype, r.rclass) != (
                rrset[0].owner, rrset[0].rtype, rrset[0].rclass)):
            out += [*rrset, *signer.sign(rrset, now)]
            rrset = []
        if r is not None:
            rrset.append(r)
    return out


def nsec(owner: Name, types: Iterable[int], ttl: int) -> Record:
    """The compact denial NSEC at ``owner`` (RFC 9824): its next name is the immediate
    successor, ``\\000.owner``, and its bitmap ``types`` (with RRSIG and NSEC)."""
    following = wire_name((b"\0", *owner))
    return Record(owner, NSEC, Class.IN, ttl, (following + bitmap({*types, RRSIG, NSEC}),))


def bitmap(types: Iterable[int]) -> bytes:
    """The NSEC type bitmap (RFC 4034 §4.1.2): window blocks of up to 32 octets."""
    windows: dict[int, bytearray] = {}
    for t in sorted(set(types)):
        block = windows.setdefault(t >> 8, bytearray(32))
        block[(t & 0xFF) >> 3] |= 0x80 >> (t & 7)
    out = b""
    for number, block in sorted(windows.items()):
        used = bytes(block).rstrip(b"\0")
        out += bytes((number, len(used))) + used
    return out


# ---------------------------------------------------------------- planning a rollover


@dataclass(frozen=True, slots=True)
class Step:
    at: int
    what: str  # what happens, and what the operator does at the parent


@dataclass(frozen=True, slots=True)
class Plan:
    """A rollover from ``old`` to a new key: the new key's timing, the old one's, and
    each step in order."""

    new: Timing
    old: Timing
    steps: tuple[Step, ...]


def plan(old: Key, new_algorithm: int, now: float, *, ttl: int, max_ttl: int,
         parent_ttl: float, parent_delay: float, margin: float) -> Plan:
    """Safe times for replacing ``old`` (RFC 7583 §3.3.3; RFC 6781 §4.1.4 when the
    algorithm changes). ``ttl``: the DNSKEY TTL; ``max_ttl``: the longest in the zone;
    ``parent_ttl``: the parent's DS TTL; ``parent_delay``: how long the parent may take to
    put the new DS in place once asked; ``margin``: time for every node to read a new
    key file, and for secondaries and clocks to agree, added at each wait."""
    start = math.ceil(now + margin)  # whole seconds: as key files write them
    if new_algorithm == old.algorithm:  # pre-publish, swap the signer, then the DS
        swap = math.ceil(start + ttl + margin)
        gone = math.ceil(swap + max(max_ttl, parent_delay + parent_ttl) + margin)
        return Plan(Timing(publish=start, activate=swap), Timing(retire=swap, remove=gone), (
            Step(start, "the new key enters the DNSKEY RRset (and signs it)"),
            Step(swap, "the new key signs the zone, the old one retires; CDS and CDNSKEY "
                       "now name the new key: replace the DS at the parent with the new "
                       f"one, in place by {values.stamp(swap + parent_delay)}"),
            Step(gone, "the old key leaves the DNSKEY RRset: the rollover is done")))
    shown = math.ceil(start + max_ttl + margin)  # both algorithms sign before publication
    swap = math.ceil(shown + ttl + margin)
    gone = math.ceil(swap + parent_delay + parent_ttl + margin)
    unsigned = math.ceil(gone + ttl + margin)
    return Plan(Timing(publish=shown, activate=start), Timing(retire=unsigned, remove=gone), (
        Step(start, "the new key signs every RRset (its DNSKEY not yet published)"),
        Step(shown, "the new key enters the DNSKEY RRset"),
        Step(swap, "CDS and CDNSKEY now name the new key: replace the DS at the parent "
                   f"with the new one, in place by {values.stamp(swap + parent_delay)}"),
        Step(gone, "the old key leaves the DNSKEY RRset"),
        Step(unsigned, "the old key stops signing: the rollover is done")))


def under_way(keys: Iterable[Key], now: float) -> bool:
    """Whether a rollover is planned or running: a key not yet published or active, or
    one with a retire or remove time still to come."""
    return any(t > now for k in keys for t in k.timing.events().values())


def signing(origin: str, signer: Signer, now: float) -> Signing:
    """What /status and /metrics show of a signed zone at ``now``."""
    signs = phase(signer.keys, now, signer.ttl).signing
    keys = tuple(SigningKey(str(k.path), k.name, k.tag, k.created, state(k, now, signer.ttl),
                            key_events(k, signer.ttl), k in signs) for k in signer.keys)
    when, event, key = next_event(signer.keys, now, signer.ttl)
    return Signing(origin, keys, None if key is None else (when, event, key.tag),
                   signer.cache.misses, signer.cache.hits)


def zone_keys(zone: Zone) -> tuple[Key, ...]:
    """A signed zone's keys, from the text read with the zone (no file read here: the
    serving side parses what the loader read off the event loop); ``DnssecError`` for a
    bad one, or two files of the same key."""
    keys = tuple(load(f.path, zone.origin, f.text) for f in zone.dnssec_keys)
    seen: dict[bytes, Path] = {}
    for k in keys:
        if k.dnskey in seen:
            raise DnssecError(f"{k.path}: the same key as {seen[k.dnskey]}")
        seen[k.dnskey] = k.path
    return keys


def check(config: Config, now: float | None = None) -> None:
    """Every signed zone's keys load, and one of them signs now; else ``ConfigError``
    naming the zone file, the key and the reason (start-up, reload and ``mirror-router
    check`` call this)."""
    problems = []
    when = time.time() if now is None else now
    for zone in config.zones:
        if not zone.signed:
            continue
        name = "zone.dnssec_keys" if zone.dnssec_folder is not None or len(
            zone.dnssec_keys) > 1 else "zone.dnssec_key"
        try:
            keys = zone_keys(zone)
        except DnssecError as e:
            problems.append(Problem(zone.source, name, str(e)))
            continue
        if phase(keys, when, zone.ttl).lapsed:
            problems.append(Problem(zone.source, name, "no key is both published and "
                                    "active now: the zone would not validate"))
    if problems:
        raise ConfigError(problems)
