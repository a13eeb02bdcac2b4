"""Who a DNS query is for, and where: the Client Subnet when the query has one (RFC 7871),
else the sender, located by GeoIP once and remembered (bounded).

The answer cache (``dns.cache``) and the authority (``dns.authority``) share one
``Clients``: the cache finds a steered answer's key with it, and on a miss hands the
``Located`` on, so the authority steers with the very location the key was made of and
GeoIP is asked once per query at most.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.core.audience import Placer
from router.core.geo import Location, Locator
from router.core.ip import IPAddress
from router.core.memo import Sweep
from router.dns.wire import Query

DEFAULT_SIZE = 50_000
_SCOPE = [bytes((n,)) for n in range(256)]

Located = tuple[Location, int]  # where the client is, and the ECS scope that says so


def echo(value: bytes, scope: int) -> bytes:
    """The OPT RDATA of a reply to a query with the ECS option ``value``, at ``scope``.

    (Our OPT carries no other option, so its RDLENGTH is this option's size.)
    """
    return ((len(value) + 4).to_bytes(2, "big") + b"\x00\x08" + len(value).to_bytes(2, "big")
            + value[:3] + _SCOPE[scope] + value[4:])


@dataclass(frozen=True, slots=True)
class Subnet:
    """What a query's ECS option makes of a steered answer."""

    located: Located | None  # by the subnet; None: by the sender (a source prefix of 0)
    echo: bytes  # the OPT RDATA of a steered answer: the query's option, the network's scope
    echo_zero: bytes  # ... of any other answer: the option with scope 0


BY_SENDER = Subnet(None, b"", b"")  # a query without ECS


class Clients:
    """ECS option values and senders, located; ``size`` of each kept (``Sweep``: a
    resolver cycling through ``size`` subnets finds them all)."""

    def __init__(self, locator: Locator | Placer, size: int = DEFAULT_SIZE) -> None:
        self.locator = locator  # GeoIP, with the config's network and AS rules (a Placer)
        self.subnets: Sweep[bytes, Subnet] = Sweep(max(1, size))  # checked option values
        self.senders: Sweep[IPAddress, Location] = Sweep(max(1, size))

    def subnet(self, query: Query) -> Subnet:
        """What ``query``'s ECS option (checked by the reader) says of its client."""
        if query.ecs < 0 or query.edns is None:
            return BY_SENDER
        value = query.ecs_value
        subnets = self.subnets
        found = subnets.fresh.get(value)
        if found is None:
            subnets.misses += 1
            subnet = query.edns.subnet
            assert subnet is not None
            zero = echo(value, 0)
            found = Subnet(None, zero, zero)  # source 0: by the sender
            if subnet.source > 0:
                client = self.locator.locate(subnet.address)
                found = Subnet((client, client.prefixlen), echo(value, client.prefixlen), zero)
            subnets.put(value, found)
        return found

    def sender(self, peer: IPAddress) -> Location:
        """Where the sender is (a query without a usable ECS option: scope 0)."""
        senders = self.senders
        found = senders.fresh.get(peer)
        if found is None:
            senders.misses += 1
            found = senders.put(peer, self.locator.locate(peer))
        return found

    def locate(self, query: Query, peer: IPAddress) -> Located:
        """Where the client of ``query`` is, and the ECS scope that says so: by the
        Client Subnet when the query has one, else by the sender (scope 0)."""
        located = self.subnet(query).located
        return located if located is not None else (self.sender(peer), 0)

    def caches(self) -> dict[str, dict[str, int]]:
        return {"dns_subnets": self.subnets.counters(), "dns_senders": self.senders.counters()}
