"""The record data a zone file may hold: one grammar per type, in ``GRAMMAR``. Pure.

Each function takes the ``data`` value of a ``[[zone.records]]`` entry (presentation
format, RFC 1035 §5 and each type's RFC) and returns a typed value, or raises
``Invalid`` with a reason written for the operator. ``router.dns.records`` compiles each
type's value to wire form (its ``COMPILERS``, one function per type).

This lives in the core, beside the type registry (``router.core.dnsparams``), because
the zone files are read and checked here; the DNS face, which compiles and serves the
records, may import the core but not the other way round.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from router.core.dnsparams import Type
from router.core.ip import IPAddress
from router.core.values import Invalid, absolute_name, string


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


class Svcb(NamedTuple):
    """SVCB and HTTPS (RFC 9460): priority 0 is AliasMode, any other ServiceMode."""

    priority: int
    target: str  # absolute, or "." (the owner itself, in ServiceMode)
    params: tuple[tuple[int, bytes], ...]  # (SvcParamKey, its value in wire form), by key


RData = IPAddress | str | Mx | Srv | Caa | Txt | Svcb


def _a(v: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(string(v))
    except ValueError:
        raise Invalid(f"{v!r} is not an IPv4 address") from None


def _aaaa(v: Any) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(string(v))
    except ValueError:
        raise Invalid(f"{v!r} is not an IPv6 address") from None


def _fields(v: Any, count: int, shape: str) -> list[str]:
    parts = string(v).split(None, count - 1)
    if len(parts) != count:
        raise Invalid(f"{v!r} is not of the form {shape!r}")
    return parts


def _u16(text: str, what: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise Invalid(f"{what} {text!r} is not a number from 0 to 65535")
    return int(text)


def _mx(v: Any) -> Mx:
    pref, host = _fields(v, 2, "preference exchange")
    if host == "." and pref != "0":  # a null MX: no mail at all (RFC 7505)
        raise Invalid('a null MX ("0 .", RFC 7505) has preference 0')
    return Mx(_u16(pref, "preference"), "." if host == "." else absolute_name(host))


def _srv(v: Any) -> Srv:
    prio, weight, port, host = _fields(v, 4, "priority weight port target")
    target = "." if host == "." else absolute_name(host)
    return Srv(_u16(prio, "priority"), _u16(weight, "weight"), _u16(port, "port"), target)


def _caa(v: Any) -> Caa:
    flags, tag, value = _fields(v, 3, 'flags tag "value"')
    if not flags.isdigit() or int(flags) > 255:
        raise Invalid(f"flags {flags!r} is not a number from 0 to 255")
    if not re.fullmatch(r"[A-Za-z0-9]{1,15}", tag):
        raise Invalid(f"tag {tag!r} must be 1-15 letters or digits (issue, issuewild, iodef)")
    return Caa(int(flags), tag.lower(), value.strip().removeprefix('"').removesuffix('"'))


def _txt(v: Any) -> Txt:
    data = string(v).encode("utf-8")
    return Txt(tuple(data[i:i + 255] for i in range(0, len(data), 255)) or (b"",))


# ---------------------------------------------------------------- SVCB and HTTPS (RFC 9460)

# SvcParamKeys by name (§14.3.2); any other is written keyNNNNN
SVC_KEYS = {"mandatory": 0, "alpn": 1, "no-default-alpn": 2, "port": 3, "ipv4hint": 4,
            "ech": 5, "ipv6hint": 6}
_PARAM = re.compile(r'([a-z0-9-]+)(?:=("(?:[^"\\]|\\.)*"|\S*))?')


def _svcb(v: Any) -> Svcb:
    """``SvcPriority TargetName [key=value ...]`` (§2.1), checked as §2.4 and §8 say."""
    text = string(v).strip()
    head = text.split(None, 2)
    if len(head) < 2:
        raise Invalid(f"{text!r} is not of the form 'priority target [key=value ...]'")
    priority = _u16(head[0], "priority")
    target = "." if head[1] == "." else absolute_name(head[1])
    params: dict[int, bytes] = {}
    for key, value in _params(head[2] if len(head) > 2 else ""):
        if key in params:
            raise Invalid(f"SvcParamKey {_key_name(key)} is given twice")
        params[key] = _param_value(key, value)
    if priority == 0 and params:
        raise Invalid("AliasMode (priority 0) takes no SvcParams (RFC 9460 2.4.2)")
    _check_params(params)
    return Svcb(priority, target, tuple(sorted(params.items())))


def _params(text: str) -> list[tuple[int, str | None]]:
    out: list[tuple[int, str | None]] = []
    at = 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        m = _PARAM.match(text, at)
        if m is None or (m.end() < len(text) and not text[m.end()].isspace()):
            raise Invalid(f"{text[at:]!r} is not a SvcParam such as alpn=h2 or port=443")
        out.append((_key(m.group(1)), _unquote(m.group(2)) if m.group(2) is not None
                    else None))
        at = m.end()
    return out


def _key(name: str) -> int:
    if name in SVC_KEYS:
        return SVC_KEYS[name]
    m = re.fullmatch(r"key(\d{1,5})", name)
    if m is None or int(m.group(1)) > 65535:
        raise Invalid(f"{name!r} is not a SvcParamKey ({', '.join(SVC_KEYS)} or keyNNNNN)")
    if int(m.group(1)) == 65535:
        raise Invalid("key65535 is reserved")
    return int(m.group(1))


def _key_name(key: int) -> str:
    return next((n for n, k in SVC_KEYS.items() if k == key), f"key{key}")


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _unescape(value: str) -> bytes:
    """A value's character-string escapes (RFC 1035 5.1: \\X and \\DDD) undone."""
    out = bytearray()
    raw = value.encode("utf-8")
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 1 < len(raw):
            digits = raw[i + 1:i + 4]
            if len(digits) == 3 and digits.isdigit() and int(digits) <= 255:
                out.append(int(digits))
                i += 4
                continue
            out.append(raw[i + 1])
            i += 2
            continue
        out.append(raw[i])
        i += 1
    return bytes(out)


def _split_list(value: bytes) -> list[bytes]:
    """A comma-separated value list (RFC 9460 A.1): a comma escaped as \\, stays."""
    items, current, i = [], bytearray(), 0
    while i < len(value):
        if value[i] == 0x5C and i + 1 < len(value):
            current.append(value[i + 1])
            i += 2
            continue
        if value[i] == 0x2C:
            items.append(bytes(current))
            current = bytearray()
        else:
            current.append(value[i])
        i += 1
    items.append(bytes(current))
    return items


def _param_value(key: int, value: str | None) -> bytes:
    """A SvcParam's value in wire form (RFC 9460 §7, §14)."""
    if key == 2:  # no-default-alpn: no value
        if value:
            raise Invalid("no-default-alpn takes no value")
        return b""
    if value is None or value == "":
        if key in SVC_KEYS.values():
            raise Invalid(f"{_key_name(key)} needs a value")
        return b""
    return _VALUES.get(key, _unescape)(value)


def _mandatory(value: str) -> bytes:
    keys = sorted(_key(k) for k in value.split(","))
    if 0 in keys or len(set(keys)) != len(keys):
        raise Invalid("mandatory lists each other key once, never itself")
    return b"".join(k.to_bytes(2, "big") for k in keys)


def _alpn(value: str) -> bytes:
    ids = _split_list(_unescape(value))  # character-string escapes, then the list's
    if any(not i or len(i) > 255 for i in ids):
        raise Invalid("alpn lists protocol ids of 1 to 255 octets, such as h2,h3")
    return b"".join(bytes((len(i),)) + i for i in ids)


def _port(value: str) -> bytes:
    return _u16(value, "port").to_bytes(2, "big")


def _hints(version: int) -> Callable[[str], bytes]:
    def convert(value: str) -> bytes:
        try:
            addresses = [ipaddress.ip_address(a) for a in value.split(",")]
        except ValueError:
            raise Invalid(f"{value!r} is not a list of IPv{version} addresses") from None
        if any(a.version != version for a in addresses):
            raise Invalid(f"{value!r} is not a list of IPv{version} addresses")
        return b"".join(a.packed for a in addresses)
    return convert


def _ech(value: str) -> bytes:
    """An ECHConfigList in base64 (RFC 9460 7.3): its length, then whole ECHConfigs."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("ech must be base64") from None
    at = 2
    while at + 4 <= len(raw):
        at += 4 + int.from_bytes(raw[at + 2:at + 4], "big")
    if len(raw) < 2 or int.from_bytes(raw[:2], "big") != len(raw) - 2 or at != len(raw):
        raise Invalid("ech must be an ECHConfigList (its length, then ECHConfigs) in base64")
    return raw


_VALUES: dict[int, Callable[[str], bytes]] = {0: _mandatory, 1: _alpn, 3: _port,
                                               4: _hints(4), 5: _ech, 6: _hints(6)}


def _check_params(params: dict[int, bytes]) -> None:
    if 0 in params:
        missing = [k for i in range(0, len(params[0]), 2)
                   if (k := int.from_bytes(params[0][i:i + 2], "big")) not in params]
        if missing:
            raise Invalid(f"mandatory names {_key_name(missing[0])}, which is not given")
    if 2 in params and 1 not in params:
        raise Invalid("no-default-alpn needs alpn (RFC 9460 7.1.1)")


# ---------------------------------------------------------------- the registry of grammars

GRAMMAR: dict[Type, Callable[[Any], RData]] = {
    Type.A: _a, Type.AAAA: _aaaa, Type.CNAME: absolute_name, Type.NS: absolute_name,
    Type.PTR: absolute_name, Type.MX: _mx, Type.TXT: _txt, Type.SRV: _srv, Type.CAA: _caa,
    Type.SVCB: _svcb, Type.HTTPS: _svcb,
}
RECORD_TYPES = tuple(t.name for t in GRAMMAR)  # what a zone file may hold, by name


def rdata(rtype: str) -> Callable[[Any], RData]:
    """The grammar of a type a zone file may hold (``record_type`` has checked it)."""
    return GRAMMAR[Type[rtype]]


def record_type(v: Any) -> str:
    rtype = string(v).upper()
    if rtype not in RECORD_TYPES:
        raise Invalid(f"{v!r} is not supported (one of {', '.join(RECORD_TYPES)})")
    return rtype
