"""A table of IP networks: which hold an address (all of them, longest first), and how
long a client's network must be to hold none it is not in. Pure; built once per config.

``match()`` masks the address at each prefix length the table has and looks it up (a dict
per length: at most 33 lookups for IPv4, 129 for IPv6, fewer as the lengths in use are
few), so a lookup costs the same whatever the number of networks. ``split()`` finds the
nearest networks on either side of the address that do not hold it (two bisections): a
client's network narrowed past them holds no network of another rule, so an answer
cached for it (a resolver's ECS cache, a decision memo) never reaches a client the rule
would treat otherwise.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Generic, TypeVar

from router.core.ip import IPNetwork

V = TypeVar("V")
WIDTH = {4: 32, 6: 128}


class PrefixTable(Generic[V]):
    def __init__(self, entries: Iterable[tuple[IPNetwork, V]]) -> None:
        # version -> prefix length -> first address -> the values of that network
        self._nets: dict[int, dict[int, dict[int, list[V]]]] = {4: {}, 6: {}}
        spans: dict[int, set[tuple[int, int]]] = {4: set(), 6: set()}
        for network, value in entries:
            first = int(network.network_address)
            self._nets[network.version].setdefault(network.prefixlen, {}).setdefault(
                first, []).append(value)
            spans[network.version].add((first, int(network.broadcast_address)))
        self._lengths = {ver: sorted(by, reverse=True) for ver, by in self._nets.items()}
        # for split(): every network's last address, and its first, each sorted
        self._lasts = {ver: sorted(last for _f, last in s) for ver, s in spans.items()}
        self._firsts = {ver: sorted(first for first, _l in s) for ver, s in spans.items()}

    def __bool__(self) -> bool:
        return any(self._lengths.values())

    def match(self, value: int, version: int) -> list[tuple[int, list[V]]]:
        """Every network that holds the address ``value``: (its length, its values),
        the longest first."""
        width, nets = WIDTH[version], self._nets[version]
        found = []
        for length in self._lengths[version]:
            first = value >> (width - length) << (width - length)
            values = nets[length].get(first)
            if values is not None:
                found.append((length, values))
        return found

    def split(self, value: int, version: int, prefixlen: int) -> int:
        """The shortest length, at least ``prefixlen``, of a network that holds ``value``
        and no network of the table that does not hold it."""
        width = WIDTH[version]
        lasts, firsts = self._lasts[version], self._firsts[version]
        mask = (1 << (width - prefixlen)) - 1
        low, high = value & ~mask, value | mask  # the client's network, as it is
        length = prefixlen
        i = bisect.bisect_left(lasts, value) - 1  # the nearest network ending before it
        if i >= 0 and lasts[i] >= low:
            length = max(length, width - (value ^ lasts[i]).bit_length() + 1)
        j = bisect.bisect_right(firsts, value)  # the nearest network starting after it
        if j < len(firsts) and firsts[j] <= high:
            length = max(length, width - (value ^ firsts[j]).bit_length() + 1)
        return min(length, width)
