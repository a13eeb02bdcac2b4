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

from router.core import reading
from router.core.config import Config, ConfigError, Problem, Zone
from router.core.dnsparams import Class, Type
from router.core.memo import Memo
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
class Key:
    zone: Name
    algorithm: int
    private: PrivateKey
    dnskey: bytes  # the DNSKEY RDATA
    tag: int
    path: Path
    created: float

    @property
    def name(self) -> str:
        return next(n for n, a in ALGORITHMS.items() if a == self.algorithm)

    @property
    def summary(self) -> str:
        """How ``check``, ``explain`` and ``dnssec`` name it: algorithm, tag, file."""
        return f"{self.name}, key tag {self.tag}, {self.path}"


# ---------------------------------------------------------------- key files


def generate(zone: str, algorithm: str, now: float | None = None) -> str:
    """A new key file's text for ``zone``."""
    private: PrivateKey = ec.generate_private_key(ec.SECP256R1()) \
        if algorithm == "ecdsap256sha256" else ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return ("; mirror-router DNSSEC key: a combined signing key (CSK), keep it secret\n"
            f"; zone: {zone.lower().rstrip('.')}.\n; algorithm: {algorithm}\n"
            f"; created: {created}\n{pem}")


_META = re.compile(r"^;\s*(zone|algorithm|created):\s*(\S+)\s*$", re.MULTILINE)


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
               _created(meta.get("created"), path))


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


def key_records(key: Key, ttl: int) -> dict[int, list[Record]]:
    """What the apex publishes: DNSKEY, and CDS and CDNSKEY for RFC 8078 automation."""
    return {DNSKEY: [Record(key.zone, DNSKEY, Class.IN, ttl, (key.dnskey,))],
            CDS: [Record(key.zone, CDS, Class.IN, ttl, (ds_rdata(key),))],
            CDNSKEY: [Record(key.zone, CDNSKEY, Class.IN, ttl, (key.dnskey,))]}


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
    """RRSIGs for one zone's key, cached; counts what it made and what it found."""

    def __init__(self, key: Key, size: int = SIGNATURES) -> None:
        self.key = key
        self.cache: Memo[tuple[object, ...], Record] = Memo(size)
        self.made = 0

    def sign(self, rrset: list[Record], now: float) -> Record:
        first = rrset[0]
        rdatas = tuple(sorted(canonical(r) for r in rrset))
        inception, expiration = window(now)
        key = (first.owner, first.rtype, first.rclass, first.ttl, rdatas, inception)
        found = self.cache.get(key)
        if found is None:
            found = self.cache.put(key, self._make(first, rdatas, inception, expiration))
        return found

    def _make(self, first: Record, rdatas: tuple[bytes, ...], inception: int,
              expiration: int) -> Record:
        self.made += 1
        k = self.key
        head = struct.pack("!HBBIIIH", first.rtype, k.algorithm, len(first.owner), first.ttl,
                           expiration, inception, k.tag) + wire_name(k.zone)
        owner = wire_name(first.owner) + struct.pack("!HHI", first.rtype, first.rclass,
                                                      first.ttl)
        signed = head + b"".join(owner + struct.pack("!H", len(r)) + r for r in rdatas)
        return Record(first.owner, RRSIG, first.rclass, first.ttl, (head + self._sign(signed),))

    def _sign(self, data: bytes) -> bytes:
        private = self.key.private
        if isinstance(private, ed25519.Ed25519PrivateKey):
            return private.sign(data)
        der = private.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def signed(records: Iterable[Record], signer: Signer, now: float) -> list[Record]:
    """``records`` with an RRSIG after each RRset (records of one owner, type and class
    in a row), in their order."""
    out: list[Record] = []
    rrset: list[Record] = []
    for r in [*records, None]:
        if rrset and (r is None or (r.owner, r.rtype, r.rclass) != (
                rrset[0].owner, rrset[0].rtype, rrset[0].rclass)):
            out += [*rrset, signer.sign(rrset, now)]
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


def zone_key(zone: Zone) -> Key:
    """A signed zone's key, from the text read with the zone (no file read here: the
    serving side parses what the loader read off the event loop)."""
    assert zone.dnssec_key is not None
    return load(zone.dnssec_key, zone.origin, zone.dnssec_key_text)


def check(config: Config) -> None:
    """Every signed zone's key loads; else ``ConfigError`` naming the zone file, the key
    and the reason (start-up, reload and ``mirror-router check`` call this)."""
    problems = []
    for zone in config.zones:
        if zone.dnssec_key is not None:
            try:
                zone_key(zone)
            except DnssecError as e:
                problems.append(Problem(zone.source, "zone.dnssec_key", str(e)))
    if problems:
        raise ConfigError(problems)

