"""The strict reader (``wire.read``) against dnspython's parser: for valid queries they
agree field by field; for mutated ones it raises only ``QueryError`` (the bench script
``bench/mutate`` runs a million)."""

from __future__ import annotations

import contextlib
import ipaddress
import random

import dns.edns
import dns.flags
import dns.message
import dns.name
import pytest

from router.dns import wire
from router.dns.wire import QueryError

TYPES = ["A", "AAAA", "NS", "SOA", "TXT", "MX", "CNAME", "ANY", "SRV", "CAA", "HTTPS"]


def _query(rnd: random.Random) -> dns.message.Message:
    labels = [rnd.choice(["go", "Dl", "www", "x" * rnd.randint(1, 40), "MiXeD", "a-b"])
              for _ in range(rnd.randint(0, 5))]
    name = ".".join([*labels, "example", "com"]) + "."
    options: list[dns.edns.Option] = []
    if rnd.random() < 0.5:
        v4 = rnd.random() < 0.7
        source = rnd.randint(0, 32 if v4 else 128)
        address = ipaddress.ip_address(rnd.getrandbits(32) if v4 else rnd.getrandbits(128))
        network = ipaddress.ip_network((address, source), strict=False)
        options.append(dns.edns.ECSOption(str(network.network_address), source))
    if rnd.random() < 0.3:
        options.append(dns.edns.GenericOption(10, rnd.randbytes(8)))
    edns = -1 if rnd.random() < 0.2 and not options else 0
    q = dns.message.make_query(name, rnd.choice(TYPES), use_edns=edns, options=options,
                               payload=rnd.choice([512, 1232, 4096]),
                               want_dnssec=edns == 0 and rnd.random() < 0.5)
    q.id = rnd.getrandbits(16)
    if rnd.random() < 0.5:
        q.flags &= ~dns.flags.RD
    if rnd.random() < 0.3:
        q.flags |= dns.flags.CD
    return q


@pytest.mark.parametrize("seed", range(4))
def test_the_reader_agrees_with_dnspython_field_by_field(seed):
    rnd = random.Random(seed)
    for _ in range(500):
        data = _query(rnd).to_wire()
        ours, theirs = wire.read(data), dns.message.from_wire(data)
        question = theirs.question[0]
        assert ours.id == theirs.id
        assert ours.flags == theirs.flags
        assert ours.opcode == theirs.opcode()
        assert ours.labels == question.name.labels[:-1]  # as spelled, without the root
        assert (ours.qtype, ours.qclass) == (question.rdtype, question.rdclass)
        if theirs.edns < 0:
            assert ours.edns is None
            continue
        assert ours.edns is not None
        assert (ours.edns.version, ours.edns.payload) == (theirs.edns, theirs.payload)
        assert ours.edns.do == bool(theirs.ednsflags & dns.flags.DO)
        ecs = next((o for o in theirs.options if isinstance(o, dns.edns.ECSOption)), None)
        if ecs is None:
            assert ours.edns.subnet is None
            continue
        assert ours.edns.subnet is not None
        assert (ours.edns.subnet.source, str(ours.edns.subnet.address)) == \
            (ecs.srclen, ecs.address)


def test_mutated_queries_raise_only_query_errors():
    rnd = random.Random(99)
    for _ in range(20_000):
        data = bytearray(_query(rnd).to_wire())
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.getrandbits(8)
        if rnd.random() < 0.2:
            del data[rnd.randrange(len(data)):]
        with contextlib.suppress(QueryError):  # anything else fails the test
            wire.read(bytes(data))
