"""The names of IP address types, in one place. Pure."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HostPort = tuple[str, int]  # a listen address: (IP address as text, port)


def parse(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``, with a plain dotted quad read in one pass: the
    module's octet-by-octet parser was a third of the cost of a new HTTP client. Anything
    else (IPv6, leading zeros, out-of-range octets) goes to ``ipaddress`` and its
    ``ValueError``."""
    parts = text.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3
                               and (p[0] != "0" or p == "0") for p in parts):
        a, b, c, d = (int(p) for p in parts)
        if a <= 255 and b <= 255 and c <= 255 and d <= 255:
            return ipaddress.IPv4Address(a << 24 | b << 16 | c << 8 | d)
    return ipaddress.ip_address(text)
