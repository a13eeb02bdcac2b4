"""The authoritative DNS server, black-box: a real router process, dnspython as the client."""

from __future__ import annotations

import socket
import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.update
import pytest

from tests.harness import RouterProcess, wait_until

ZONE = "test.example.com."


def ask(router: RouterProcess, name: str, rdtype: str = "A", *, ecs: tuple[str, int] | None = None,
        tcp: bool = False, payload: int | None = None, edns: int | None = None,
        want_dnssec: bool = False, timeout: float = 3) -> dns.message.Message:
    options = [dns.edns.ECSOption(*ecs)] if ecs else []
    use_edns = edns if edns is not None else (0 if options or payload or want_dnssec else -1)
    q = dns.message.make_query(name, rdtype, use_edns=use_edns, options=options,
                               payload=payload or 1232, want_dnssec=want_dnssec)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(q, "127.0.0.1", port=router.dns_port, timeout=timeout)


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in msg.answer for rd in rrset
                  if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA))


def ecs_of(msg: dns.message.Message) -> dns.edns.ECSOption | None:
    return next((o for o in msg.options if isinstance(o, dns.edns.ECSOption)), None)


# Client subnet → the great-circle-nearest of the five cities, and GeoLite2's network.
NEAREST = [
    (("1.0.16.0", 24), "192.0.2.2", 20),        # Tokyo, JP
    (("5.9.0.0", 16), "192.0.2.3", 18),         # Germany: GeoLite2 says /18: scope > source
    (("202.106.0.0", 24), "192.0.2.1", 18),     # Beijing, CN
    (("8.8.8.0", 24), "192.0.2.4", 19),         # US (centre of the country)
    (("200.160.0.0", 24), "192.0.2.5", 20),     # Rio, BR
    (("41.0.0.0", 24), "192.0.2.5", 21),        # Pretoria: Sao Paulo is nearer than Frankfurt
    (("2001:200::", 48), "192.0.2.2", 41),      # Japan, over IPv6 ECS
]


@pytest.mark.parametrize(("subnet", "expected", "scope"), NEAREST, ids=[s[0][0] for s in NEAREST])
def test_ecs_query_gets_nearest_target(five_cities, subnet, expected, scope):
    msg = ask(five_cities, ZONE, "A", ecs=subnet)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA
    assert addresses(msg) == [expected]
    assert msg.answer[0].ttl == 30
    echoed = ecs_of(msg)
    assert echoed is not None
    assert (echoed.address, echoed.srclen) == subnet
    assert echoed.scopelen == scope  # the network that decided, longer than the source or not


def test_a_short_source_prefix_gets_the_true_scope(five_cities):
    """RFC 7871 7.2.1: a /16 query is answered for the GeoIP network of its address,
    which is longer; echoing /16 would make a resolver serve the answer to every /24 in
    the /16, though some of them are elsewhere."""
    from router.core.geo import Locator

    decided = Locator().locate("1.0.0.0").network.prefixlen
    assert decided > 16
    msg = ask(five_cities, ZONE, "A", ecs=("1.0.0.0", 16))
    for _ in range(2):  # the strict path, then the cache
        assert ecs_of(msg).scopelen == decided and ecs_of(msg).srclen == 16
        msg = ask(five_cities, ZONE, "A", ecs=("1.0.0.0", 16))


def test_aaaa_is_steered_too(five_cities):
    msg = ask(five_cities, "www." + ZONE, "AAAA", ecs=("1.0.16.0", 24))
    assert addresses(msg) == ["2001:db8::2"]


def test_no_ecs_in_query_means_none_in_answer(five_cities):
    plain = ask(five_cities, ZONE, "A")
    assert plain.edns == -1 and not plain.options
    with_edns = ask(five_cities, ZONE, "A", edns=0)
    assert with_edns.edns == 0
    assert ecs_of(with_edns) is None


def test_unlocated_client_uses_default_location(five_cities):
    # The query comes from 127.0.0.1, which GeoIP cannot place: default_location is Ashburn.
    assert addresses(ask(five_cities, ZONE, "A")) == ["192.0.2.4"]


def test_ecs_source_prefix_zero_uses_the_sender_and_scope_zero(five_cities):
    msg = ask(five_cities, ZONE, "A", ecs=("0.0.0.0", 0))
    assert addresses(msg) == ["192.0.2.4"]
    assert ecs_of(msg).scopelen == 0


def test_static_answers_have_scope_zero(five_cities):
    msg = ask(five_cities, ZONE, "TXT", ecs=("1.0.16.0", 24))
    assert [rd.strings for rrset in msg.answer for rd in rrset] == [(b"hello",)]
    assert ecs_of(msg).scopelen == 0


def test_soa_and_ns_at_apex_with_glue(five_cities):
    soa = ask(five_cities, ZONE, "SOA")
    assert soa.flags & dns.flags.AA and not soa.flags & dns.flags.RA
    (rd,) = soa.answer[0]
    assert (str(rd.mname), str(rd.rname), rd.serial) == (
        "ns1.test.example.com.", "hostmaster.example.com.", 2024010101)
    assert (rd.refresh, rd.retry, rd.expire) == (14400, 3600, 604800)  # what Zonemaster accepts
    ns = ask(five_cities, ZONE, "NS")
    assert sorted(str(rd.target) for rd in ns.answer[0]) == [
        "ns1.test.example.com.", "ns2.elsewhere.example.net."]
    glue = {(str(r.name), rd.address) for r in ns.additional for rd in r}
    assert glue == {("ns1.test.example.com.", "198.51.100.53")}


def test_nxdomain_carries_soa_with_negative_ttl(five_cities):
    msg = ask(five_cities, "nope." + ZONE, "A")
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.flags & dns.flags.AA
    assert msg.answer == []
    (soa,) = msg.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 60


@pytest.mark.parametrize(("name", "rdtype"), [
    ("ns1." + ZONE, "AAAA"),        # a name with only an A record
    (ZONE, "CNAME"),                # the apex, steered, asked for a type it lacks
    ("deep." + ZONE, "A"),          # an empty non-terminal (_sip._tcp.deep exists below)
    ("_tcp.deep." + ZONE, "TXT"),
])
def test_nodata_is_noerror_with_soa(five_cities, name, rdtype):
    msg = ask(five_cities, name, rdtype)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.answer == []
    assert [r.rdtype for r in msg.authority] == [dns.rdatatype.SOA]
    assert msg.flags & dns.flags.AA


def test_outside_our_zones_is_refused(five_cities):
    msg = ask(five_cities, "www.example.org.", "A")
    assert msg.rcode() == dns.rcode.REFUSED
    assert not msg.flags & dns.flags.AA and not msg.flags & dns.flags.RA


def test_static_records_mx_srv(five_cities):
    mx = ask(five_cities, ZONE, "MX")
    assert [(rd.preference, str(rd.exchange)) for rd in mx.answer[0]] == [
        (10, "mail.example.net.")]
    srv = ask(five_cities, "_sip._tcp.deep." + ZONE, "SRV")
    (rd,) = srv.answer[0]
    assert (rd.priority, rd.weight, rd.port, str(rd.target)) == (10, 5, 5060, "sip.example.net.")


def test_cname_is_followed_inside_the_zone(five_cities):
    msg = ask(five_cities, "alias." + ZONE, "A", ecs=("5.9.0.0", 16))
    kinds = [(str(r.name), r.rdtype) for r in msg.answer]
    assert kinds == [("alias." + ZONE, dns.rdatatype.CNAME), (ZONE, dns.rdatatype.A)]
    assert addresses(msg) == ["192.0.2.3"]


def test_delegation_gets_a_referral(five_cities):
    msg = ask(five_cities, "host.sub." + ZONE, "A")
    assert msg.rcode() == dns.rcode.NOERROR
    assert not msg.flags & dns.flags.AA
    assert msg.answer == []
    assert [(str(r.name), r.rdtype) for r in msg.authority] == [("sub." + ZONE, dns.rdatatype.NS)]
    assert [rd.address for r in msg.additional for rd in r] == ["198.51.100.99"]


def test_query_case_is_preserved(five_cities):
    msg = ask(five_cities, "TeSt.ExAmPlE.cOm.", "A")
    assert str(msg.question[0].name) == "TeSt.ExAmPlE.cOm."
    assert str(msg.answer[0].name) == "TeSt.ExAmPlE.cOm."


def test_any_gets_a_minimal_answer(five_cities):
    msg = ask(five_cities, ZONE, "ANY")
    assert msg.rcode() == dns.rcode.NOERROR
    assert len(msg.answer) == 1  # one RRset (RFC 8482), not everything at the name


def test_tcp_gives_the_same_answer(five_cities):
    udp = ask(five_cities, ZONE, "A", ecs=("202.106.0.0", 24))
    tcp = ask(five_cities, ZONE, "A", ecs=("202.106.0.0", 24), tcp=True)
    assert addresses(tcp) == addresses(udp) == ["192.0.2.1"]
    assert ecs_of(tcp).scopelen == ecs_of(udp).scopelen


def test_tcp_pipelined_queries_are_answered_in_order(five_cities):
    names = ["a." + ZONE, ZONE, "ns1." + ZONE, "nope." + ZONE]
    queries = [dns.message.make_query(n, "A", id=1000 + i) for i, n in enumerate(names)]
    with socket.create_connection(("127.0.0.1", five_cities.dns_port), timeout=3) as s:
        s.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries)))
        replies = [dns.message.from_wire(_read_frame(s)) for _ in queries]
    assert [r.id for r in replies] == [1000, 1001, 1002, 1003]
    assert [r.rcode() for r in replies] == [dns.rcode.NXDOMAIN, dns.rcode.NOERROR,
                                           dns.rcode.NOERROR, dns.rcode.NXDOMAIN]


def _read_frame(s: socket.socket) -> bytes:
    size = struct.unpack("!H", _read_exactly(s, 2))[0]
    return _read_exactly(s, size)


def _read_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_truncation_without_edns_at_512(five_cities):
    msg = ask(five_cities, "medium." + ZONE, "TXT")  # ~650 bytes: too big without EDNS
    assert msg.flags & dns.flags.TC
    assert msg.answer == []


def test_edns_buffer_is_honoured(five_cities):
    msg = ask(five_cities, "medium." + ZONE, "TXT", payload=1232)
    assert not msg.flags & dns.flags.TC
    assert len(msg.answer[0]) == 3
    assert msg.payload == 1232


def test_answers_over_the_server_cap_are_truncated_and_complete_over_tcp(five_cities):
    udp = ask(five_cities, "big." + ZONE, "TXT", payload=4096)  # ~2.5 kB: over our 1232 cap
    assert udp.flags & dns.flags.TC and udp.answer == []
    tcp = ask(five_cities, "big." + ZONE, "TXT", payload=4096, tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 12


def test_unknown_edns_version_gets_badvers(five_cities):
    msg = ask(five_cities, ZONE, "A", edns=1)
    assert msg.rcode() == dns.rcode.BADVERS
    assert msg.edns == 0
    assert msg.answer == []


def test_do_bit_is_copied(five_cities):
    msg = ask(five_cities, ZONE, "A", want_dnssec=True)
    assert msg.ednsflags & dns.flags.DO


def _raw_udp(router: RouterProcess, data: bytes, wait: float = 0.3) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(data, ("127.0.0.1", router.dns_port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def _valid_query() -> bytes:
    return dns.message.make_query(ZONE, "A", id=0x4242).to_wire()


def _with_ecs_option(option: bytes) -> bytes:
    """A query whose OPT record carries ``option`` (code 8) verbatim."""
    header = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 1)
    question = b"\x04test\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
    rdata = struct.pack("!HH", 8, len(option)) + option
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(rdata)) + rdata
    return header + question + opt


FORMERR, NOTIMP = dns.rcode.FORMERR, dns.rcode.NOTIMP
MALFORMED = {  # packet → the rcode it must get, or None for silence (no header to answer)
    "empty": (b"", None),
    "short header": (b"\x12\x34\x01", None),
    "header only, one question": (struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0), FORMERR),
    "truncated question": (_valid_query()[:-3], FORMERR),
    "two questions": (struct.pack("!HHHHHH", 0x4242, 0x0100, 2, 0, 0, 0)
                      + _valid_query()[12:] * 2, FORMERR),
    "label too long": (struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
                       + b"\x50" + b"a" * 80, FORMERR),
    "pointer in question": (struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c",
                            FORMERR),
    "trailing junk": (_valid_query() + b"junk", FORMERR),
    "ecs bits beyond prefix": (_with_ecs_option(struct.pack("!HBB", 1, 12, 0) + b"\x01\x0f"),
                               FORMERR),
    "ecs wrong family": (_with_ecs_option(struct.pack("!HBB", 7, 8, 0) + b"\x01"), FORMERR),
    "ecs address too long": (_with_ecs_option(struct.pack("!HBB", 1, 8, 0) + b"\x01\x02"),
                             FORMERR),
    "ecs prefix too long": (_with_ecs_option(struct.pack("!HBB", 1, 33, 0) + b"\x01" * 5),
                            FORMERR),
    "random bytes (opcode 1)": (bytes(range(7, 200)), NOTIMP),
}


@pytest.mark.parametrize(("packet", "rcode"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_packets_get_formerr_or_silence(five_cities, packet, rcode):
    reply = _raw_udp(five_cities, packet)
    if rcode is None:
        assert reply is None
    else:
        assert reply is not None
        msg = dns.message.from_wire(reply, question_only=True)
        assert msg.rcode() == rcode
        assert msg.flags & dns.flags.QR
    # ... and the server goes on answering.
    assert addresses(ask(five_cities, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.2"]


def test_formerr_echoes_the_id(five_cities):
    reply = _raw_udp(five_cities, MALFORMED["trailing junk"][0])
    assert reply is not None
    msg = dns.message.from_wire(reply, question_only=True)
    assert msg.id == 0x4242 and msg.rcode() == dns.rcode.FORMERR


def test_responses_and_unknown_opcodes(five_cities):
    response = bytearray(_valid_query())
    response[2] |= 0x80  # QR: a response must never be answered (no reflection loops)
    assert _raw_udp(five_cities, bytes(response)) is None
    notify = bytearray(_valid_query())
    notify[2] = (notify[2] & 0x87) | (4 << 3)  # opcode NOTIFY
    reply = _raw_udp(five_cities, bytes(notify))
    assert reply is not None
    assert dns.message.from_wire(reply, question_only=True).rcode() == dns.rcode.NOTIMP


def test_a_flood_of_garbage_does_not_stop_the_server(five_cities):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(2000):
            s.sendto(bytes((i * 7 + j) % 256 for j in range(i % 90)),
                     ("127.0.0.1", five_cities.dns_port))

    def answered() -> list[str] | None:
        # The flood can overflow the kernel's socket buffer and drop a query; like any
        # resolver, retry (with a bound) rather than call one lost datagram a failure.
        try:
            return addresses(ask(five_cities, ZONE, "A", ecs=("8.8.8.0", 24), timeout=0.5))
        except dns.exception.Timeout:
            return None

    assert wait_until(answered, 10, what="an answer after the flood") == ["192.0.2.4"]
    assert five_cities.proc.poll() is None
    assert not five_cities.find("dns_answer_failed")


def test_edns_tcp_keepalive_is_answered_over_tcp_only(five_cities):
    """RFC 7828: a client that sends an empty edns-tcp-keepalive over TCP learns the idle
    timeout (100 ms units; --tcp-idle is 10 s); over UDP the option is never sent."""
    keepalive = dns.edns.GenericOption(11, b"")
    q = dns.message.make_query(ZONE, "A", use_edns=0,
                               options=[keepalive, dns.edns.ECSOption("1.0.16.0", 24)])
    for _ in range(2):  # the strict path, then the cache
        r = dns.query.tcp(q, "127.0.0.1", port=five_cities.dns_port, timeout=5)
        found = [o for o in r.options if o.otype == 11]
        assert len(found) == 1 and found[0].to_wire() == (100).to_bytes(2, "big")
        assert addresses(r) == ["192.0.2.2"] and ecs_of(r).scopelen > 0
    r = dns.query.udp(q, "127.0.0.1", port=five_cities.dns_port, timeout=5)
    assert not [o for o in r.options if o.otype == 11] and addresses(r) == ["192.0.2.2"]


def _raw(router: RouterProcess, wire: bytes) -> dns.message.Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(wire, ("127.0.0.1", router.dns_port))
        return dns.message.from_wire(s.recv(65535), question_only=False)


def test_error_replies_keep_the_question_and_opt(five_cities):
    """RFC 6891 7: an error to a query with OPT carries OPT (else a resolver concludes
    the server lacks EDNS), and the question when it could be read."""
    good = dns.message.make_query(ZONE, "A", use_edns=0, want_dnssec=True,
                                  options=[dns.edns.ECSOption("1.0.16.0", 24)]).to_wire()
    bad_ecs = good[:-5] + b"\x10" + good[-4:]  # source /16 with a 3-byte address: malformed
    r = _raw(five_cities, bad_ecs)
    assert r.rcode() == dns.rcode.FORMERR and r.edns == 0 and r.ednsflags & dns.flags.DO
    assert [(str(q.name), q.rdtype) for q in r.question] == [(ZONE, dns.rdatatype.A)]
    assert not r.options  # nothing echoed from an option that did not parse
    plain = dns.message.make_query(ZONE, "A").to_wire()
    r = _raw(five_cities, plain[:2] + b"\x7d\x00" + plain[4:])  # an unknown opcode
    assert r.rcode() == dns.rcode.NOTIMP and r.edns == -1 and not r.question  # not ours to echo
    r = _raw(five_cities, plain[:2] + b"\x79\x10" + plain[4:])  # the same, RD and CD set
    assert r.flags & dns.flags.RD and not r.flags & dns.flags.CD  # CD is QUERY's alone


def test_ixfr_is_refused_as_axfr_is(five_cities):
    for rdtype in ("AXFR", "IXFR"):
        q = dns.message.make_query(ZONE, rdtype, use_edns=0)
        if rdtype == "IXFR":  # RFC 1995: the client's SOA in the authority section
            q.authority.append(dns.rrset.from_text(ZONE, 0, "IN", "SOA", "ns1. h. 1 2 3 4 5"))
        r = _raw(five_cities, q.to_wire())
        assert r.rcode() == dns.rcode.REFUSED and r.edns == 0, rdtype
        assert [q.rdtype for q in r.question] == [dns.rdatatype.from_text(rdtype)]


def test_notify_and_update_get_notimp_with_opt(five_cities):
    notify = dns.message.make_query(ZONE, "SOA", use_edns=0)
    notify.set_opcode(dns.opcode.NOTIFY)
    update = dns.update.UpdateMessage(ZONE)
    update.use_edns(0)
    update.add("x", 60, "A", "192.0.2.9")
    for q in (notify, update):
        r = _raw(five_cities, q.to_wire())
        assert r.rcode() == dns.rcode.NOTIMP and r.edns == 0
        assert r.opcode() == q.opcode()


@pytest.fixture(scope="module")
def named(tmp_path_factory, city_mirrors):
    from tests.conftest import write_zone
    from tests.harness import five_city_zone

    zones = write_zone(tmp_path_factory.mktemp("zones"), five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--nsid", "fra-1", "--no-probe")
    yield router
    assert router.stop() == 0


def test_nsid_tells_which_node_answered_when_asked(named, five_cities):
    """RFC 5001: an empty NSID option gets this node's name (the strict path and the
    cache alike); a query without one, or a node without --nsid, gets none."""
    asking = dns.message.make_query(ZONE, "A", use_edns=0,
                                    options=[dns.edns.GenericOption(3, b"")])
    for _ in range(2):
        r = dns.query.udp(asking, "127.0.0.1", port=named.dns_port, timeout=3)
        assert [o.to_wire() for o in r.options if o.otype == 3] == [b"fra-1"]
    r = dns.query.udp(dns.message.make_query(ZONE, "A", use_edns=0), "127.0.0.1",
                      port=named.dns_port, timeout=3)
    assert not [o for o in r.options if o.otype == 3]
    r = dns.query.udp(asking, "127.0.0.1", port=five_cities.dns_port, timeout=3)
    assert not [o for o in r.options if o.otype == 3]


@pytest.mark.parametrize("name", ["id.server.", "hostname.bind.", "ID.Server."])
def test_id_server_in_class_chaos(named, five_cities, name):
    q = dns.message.make_query(name, "TXT", rdclass="CH")
    r = dns.query.udp(q, "127.0.0.1", port=named.dns_port, timeout=3)
    assert r.rcode() == dns.rcode.NOERROR
    assert [b"".join(rd.strings) for rrset in r.answer for rd in rrset] == [b"fra-1"]
    r = dns.query.udp(q, "127.0.0.1", port=five_cities.dns_port, timeout=3)
    assert r.rcode() == dns.rcode.REFUSED and not r.answer  # no --nsid: nothing to tell


def _big_zone() -> str:
    """A zone whose apex and whose delegation each have 8 in-domain name servers with an
    A and an AAAA record: some 850 bytes of glue, more than 512."""
    lines = ['[zone]\norigin = "big.example."\nhostmaster = "h.big.example."\n',
             "nameservers = [" + ", ".join(f'"ns{i}.big.example."' for i in range(8)) + "]\n"]
    for owner in ("", ".sub"):
        for i in range(8):
            lines.append(f'[[zone.records]]\nname = "ns{i}{owner}"\ntype = "A"\n'
                         f'data = "198.51.100.{10 + i}"\n')
            lines.append(f'[[zone.records]]\nname = "ns{i}{owner}"\ntype = "AAAA"\n'
                         f'data = "2001:db8::{10 + i}"\n')
    for i in range(8):
        lines.append(f'[[zone.records]]\nname = "sub"\ntype = "NS"\n'
                     f'data = "ns{i}.sub.big.example."\n')
    return "".join(lines)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    from tests.conftest import write_zone

    zones = write_zone(tmp_path_factory.mktemp("zones"), _big_zone(), "big.example.toml")
    router = RouterProcess(zones, "--no-probe")
    yield router
    assert router.stop() == 0


def test_a_referral_whose_glue_does_not_fit_sets_tc(big):
    """RFC 9471: in-domain glue that does not fit in 512 bytes sets TC (a resolver
    would fail the delegation without it); what fits is still sent, and over EDNS or
    TCP all of it, without TC."""
    small = ask(big, "www.sub.big.example.", "A")
    assert small.flags & dns.flags.TC and not small.flags & dns.flags.AA
    assert len(small.authority[0]) == 8 and 0 < sum(len(r) for r in small.additional) < 16
    assert len(small.to_wire()) <= 512
    for whole in (ask(big, "www.sub.big.example.", "A", payload=1232),
                  ask(big, "www.sub.big.example.", "A", tcp=True)):
        assert not whole.flags & dns.flags.TC
        assert sum(len(r) for r in whole.additional) == 16


def test_apex_ns_at_512_keeps_what_glue_fits_without_tc(big):
    r = ask(big, "big.example.", "NS")
    assert not r.flags & dns.flags.TC and r.flags & dns.flags.AA
    assert len(r.answer[0]) == 8 and 0 < sum(len(x) for x in r.additional) < 16
