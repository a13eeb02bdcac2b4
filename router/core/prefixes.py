"""A table of IP networks: which hold an address (all of them, longest first), and how
long a client's network must be to hold none it is not in. Pure; built once per config.

The networks' first and last addresses cut the address space into spans, in each of
which the same networks hold every address: ``match()`` finds the address's span (one
bisection) and reads what holds it. ``split()`` reads the nearest networks on either side
of the span that do not hold the address: a client's network narrowed past them holds no
network of another rule, so an answer cached for it (a resolver's ECS cache) never
reaches a client the rule would treat otherwise.
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
        nets: dict[int, dict[int, dict[int, list[V]]]] = {4: {}, 6: {}}
        spans: dict[int, set[tuple[int, int]]] = {4: set(), 6: set()}
        for network, value in entries:
            first = int(network.network_address)
            nets[network.version].setdefault(network.prefixlen, {}).setdefault(
                first, []).append(value)
            spans[network.version].add((first, int(network.broadcast_address)))
        self._any = any(nets.values())
        self._index = {ver: _Index(nets[ver], spans[ver], WIDTH[ver]) for ver in (4, 6)}

    def __bool__(self) -> bool:
        return self._any

    def match(self, value: int, version: int) -> list[tuple[int, list[V]]]:
        """Every network that holds the address ``value``: (its length, its values),
        the longest first."""
        index = self._index[version]
        return index.found[bisect.bisect_right(index.starts, value) - 1]

    def split(self, value: int, version: int, prefixlen: int) -> int:
        """The shortest length, at least ``prefixlen``, of a network that holds ``value``
        and no network of the table that does not hold it."""
        width, index = WIDTH[version], self._index[version]
        k = bisect.bisect_right(index.starts, value) - 1
        mask = (1 << (width - prefixlen)) - 1
        length = prefixlen
        before = index.last_before[k]  # the nearest network ending before it
        if before >= value & ~mask:
            length = max(length, width - (value ^ before).bit_length() + 1)
        after = index.first_after[k]  # the nearest network starting after it
        if after <= value | mask:
            length = max(length, width - (value ^ after).bit_length() + 1)
        return min(length, width)


class _Index(Generic[V]):
    """One version's networks cut into spans where the same networks hold every
    address: a span's first address found by one bisection, and what holds it, the
    nearest network ending before it and the nearest starting after it read off lists."""

    def __init__(self, nets: dict[int, dict[int, list[V]]], spans: set[tuple[int, int]],
                 width: int) -> None:
        lengths = sorted(nets, reverse=True)
        self.starts = sorted({0, *(f for f, _l in spans), *(last + 1 for _f, last in spans
                                                          if last + 1 < 1 << width)})
        lasts = sorted(last for _f, last in spans)
        firsts = sorted(f for f, _l in spans)
        self.found: list[list[tuple[int, list[V]]]] = []
        self.last_before: list[int] = []  # -1: none
        self.first_after: list[int] = []  # 2**width: none
        for k, start in enumerate(self.starts):
            holding = []
            for length in lengths:
                values = nets[length].get(start >> (width - length) << (width - length))
                if values is not None:
                    holding.append((length, values))
            self.found.append(holding)
            i = bisect.bisect_right(lasts, start - 1) - 1
            self.last_before.append(lasts[i] if i >= 0 else -1)
            end = self.starts[k + 1] if k + 1 < len(self.starts) else 1 << width
            j = bisect.bisect_left(firsts, end)
            self.first_after.append(firsts[j] if j < len(firsts) else 1 << width)
