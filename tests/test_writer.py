"""The reply writer (``wire.render``) against an independent reader, dnspython: every
reply parses, holds exactly the records given (names compressed or not, the question as
the query spelled it), never passes its size limit, and says TC=1 exactly where RFC 1035,
RFC 2181 §9 and RFC 9471 say."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st

from router.dns import wire
from router.dns.records import Record, packed, to_name, txt

ORIGIN = to_name("go.example.com")
NAMES = [ORIGIN, *(to_name(n) for n in ("www.go.example.com", "ns1.go.example.com",
                                         "a.b.go.example.com", "ns2.example.net"))]


def query(name: str = "Go.Example.COM.", qtype: str = "A", payload: int | None = 1232) -> bytes:
    q = dns.message.make_query(name, qtype, use_edns=0 if payload else False,
                               payload=payload or 512)
    q.id = 4660
    return q.to_wire()


def text(name: tuple[bytes, ...]) -> str:
    return (b".".join(name).decode() + ".") if name else "."


names = st.sampled_from(NAMES)
records = st.one_of(
    st.builds(lambda o, n: Record(o, 2, 1, 300, (n,)), names, names),  # NS
    st.builds(lambda o, n: Record(o, 5, 1, 60, (n,)), names, names),  # CNAME
    st.builds(lambda o, p, n: Record(o, 15, 1, 60, (struct.pack("!H", p), n)), names,
              st.integers(0, 65535), names),  # MX
    st.builds(lambda o, a: Record(o, 1, 1, 20, (bytes(a),)), names,
              st.lists(st.integers(0, 255), min_size=4, max_size=4)),  # A
    st.builds(lambda o, s: Record(o, 16, 1, 0, txt(s)), names, st.binary(max_size=300)
              .map(lambda b: b[:255])),  # TXT
    st.builds(lambda o, m, r: Record(o, 6, 1, 300, (m, r, struct.pack("!5I", 1, 2, 3, 4, 5))),
              names, names, names),  # SOA
)


def expected(r: Record) -> str:
    """The record as dnspython writes it, from our parts (names spelled out)."""
    rdata = b"".join(p if isinstance(p, bytes) else dns.name.from_text(text(p)).to_wire()
                     for p in r.rdata)
    rd = dns.rdata.from_wire(dns.rdataclass.IN, r.rtype, rdata, 0, len(rdata))
    return f"{text(r.owner)} {r.ttl} IN {dns.rdatatype.to_text(r.rtype)} {rd}".lower()


def seen(section) -> list[str]:
    return [f"{rrset.name} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rd}".lower()
            for rrset in section for rd in rrset]  # names compare in lower case


@settings(max_examples=300, deadline=None)
@given(st.lists(records, max_size=6), st.lists(records, max_size=6),
       st.lists(records, max_size=8), st.integers(100, 1500), st.booleans())
def test_every_reply_parses_holds_its_records_and_keeps_its_limit(answer, authority,
                                                                   additional, limit, edns):
    data = query(payload=1232 if edns else None)
    q = wire.read(data)
    reply = wire.Reply(answer=answer, authority=authority, additional=additional)
    out, whole = wire.render(q, reply, 1232, max(limit, len(data) + 11))
    assert len(out) <= max(limit, len(data) + 11)
    msg = dns.message.from_wire(out, one_rr_per_rrset=True)
    assert msg.id == 4660 and msg.question[0].name.to_text() == "Go.Example.COM."
    assert (msg.edns == 0) == edns
    tc = bool(msg.flags & dns.flags.TC)
    if whole:
        assert not tc
        assert seen(msg.answer) == [expected(r) for r in answer]
        assert seen(msg.authority) == [expected(r) for r in authority]
        assert seen(msg.additional) == [expected(r) for r in additional]
    elif seen(msg.answer) != [expected(r) for r in answer] or \
            seen(msg.authority) != [expected(r) for r in authority]:
        assert tc and not msg.answer and not msg.authority  # RFC 2181 §9: all or nothing
    else:  # only optional additional records were left out
        kept = seen(msg.additional)
        assert all(k in [expected(r) for r in additional] for k in kept)


def test_a_referral_that_loses_its_in_domain_glue_says_tc():
    cut = (b"sub", *ORIGIN)
    ns = [Record(cut, 2, 1, 300, ((f"ns{i}".encode(), *cut),)) for i in range(14)]
    glue = [Record((f"ns{i}".encode(), *cut), 28, 1, 300, (bytes(16),)) for i in range(14)]
    q = wire.read(query("x.sub.go.example.com.", payload=None))
    out, whole = wire.render(q, wire.Reply(authority=ns, additional=glue, authoritative=False),
                             1232, 512)
    msg = dns.message.from_wire(out)
    assert not whole and len(out) <= 512 and msg.flags & dns.flags.TC
    assert 0 < len(msg.additional) < 14  # as many as fit (one RRset per name here)
    # Out-of-domain glue left out is no reason for TC (RFC 9471 is about in-domain glue).
    other = [r.renamed(to_name("ns.example.net")) for r in glue]
    out, _ = wire.render(q, wire.Reply(authority=ns[:1], additional=other * 40,
                                       authoritative=False), 1232, 512)
    assert not dns.message.from_wire(out).flags & dns.flags.TC


def test_names_repeat_as_pointers_to_the_question_in_its_spelling():
    q = wire.read(query("WwW.Go.Example.COM.", "MX"))
    owner = (b"www", *ORIGIN)
    reply = wire.Reply(answer=[Record(owner, 15, 1, 60, (b"\0\x0a", ORIGIN))])
    out, whole = wire.render(q, reply, 1232, 1232)
    assert whole
    assert out.count(b"www") + out.count(b"WwW") == 1  # written once, in the question
    assert out.count(b"\xc0\x0c") == 1 and out.count(b"\xc0\x10") == 1  # owner, exchange
    msg = dns.message.from_wire(out)
    assert msg.answer[0].name.to_text() == "WwW.Go.Example.COM."
    assert msg.answer[0][0].exchange.to_text() == "Go.Example.COM."


def test_dnslib_packs_static_rdata_as_dnspython_reads_it():
    from dnslib import CAA, SRV
    caa = packed(CAA(0, "issue", "letsencrypt.org"))
    srv = packed(SRV(10, 5, 443, "www.go.example.com."))
    assert dns.rdata.from_wire(1, 257, caa, 0, len(caa)).to_text() == '0 issue "letsencrypt.org"'
    assert dns.rdata.from_wire(1, 33, srv, 0, len(srv)).to_text() == \
        "10 5 443 www.go.example.com."
