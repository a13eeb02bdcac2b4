"""The DNS registry (``router.core.dnsparams``): one home for types, classes, rcodes and
option codes, a grammar and a compile function per record type. SVCB and HTTPS (RFC
9460) are the proof: a registry entry, a grammar, a compile function, and a real server
whose answers dnspython reads as it reads the same text itself."""

from __future__ import annotations

import os

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.core import dnsparams, rdata, stats
from router.core.config import ConfigError
from router.core.zonefile import load
from router.dns import records
from tests.conftest import write_zone
from tests.harness import RouterProcess
from tests.test_http import request

ZONE = """
[zone]
origin = "svc.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.net"
"""

# (owner, type, data as an operator writes it in the zone file)
SVC_RECORDS = [
    ("@", "HTTPS", '1 . alpn="h2,h3" port=443'),
    ("alias", "HTTPS", "0 cdn.example.net."),
    ("dl", "HTTPS", "1 dl.example.net. alpn=h3 ipv4hint=192.0.2.1,192.0.2.2 "
                    "ipv6hint=2001:db8::1"),
    ("dl", "HTTPS", "2 . alpn=h2 no-default-alpn port=8443"),
    ("_dns", "SVCB", '1 dns.example.net. mandatory=alpn,port alpn=dot port=853'),
    ("ech", "HTTPS", "1 . ech=AAj+DQAEAAAAAA== key65000=hello"),  # a framed ECHConfigList
    ("esc", "HTTPS", r'1 . alpn="f\\\\oo\\,bar,h2"'),
]


def zone_text() -> str:
    return ZONE + "".join(
        f"\n[[zone.records]]\nname = \"{name}\"\ntype = \"{rtype}\"\ndata = '{data}'\n"
        for name, rtype, data in SVC_RECORDS)


def test_every_zone_file_type_has_a_grammar_and_a_compile_function():
    assert set(rdata.GRAMMAR) == set(records.COMPILERS)
    assert all(name in dnsparams.Type.__members__ for name in rdata.RECORD_TYPES)


def test_metrics_name_every_rcode_the_server_sends():
    assert stats.RCODE_NAMES[23] == "BADCOOKIE"  # was "23" in /metrics
    assert {stats.RCODE_NAMES[int(r)] for r in dnsparams.Rcode} == \
        {r.name for r in dnsparams.Rcode}
    assert stats.QTYPE_NAMES[65] == "HTTPS" and 41 not in stats.QTYPES  # OPT: never asked


def test_names_of_numbers_we_do_not_know():
    assert dnsparams.type_name(65) == "HTTPS" and dnsparams.type_name(999) == "TYPE999"
    assert dnsparams.rcode_name(23) == "BADCOOKIE" and dnsparams.rcode_name(9) == "RCODE9"


@pytest.fixture(scope="module")
def svc_router(tmp_path_factory):
    zones = write_zone(tmp_path_factory.mktemp("svc"), zone_text(), "svc.example.com.toml")
    router = RouterProcess(zones, "--no-probe")
    yield router
    assert router.stop() == 0


def owner(name: str) -> str:
    return "svc.example.com." if name == "@" else f"{name}.svc.example.com."


@pytest.mark.parametrize(("name", "rtype"), sorted({(n, t) for n, t, _d in SVC_RECORDS}))
def test_svcb_and_https_are_served_as_dnspython_reads_them(svc_router, name, rtype):
    q = dns.message.make_query(owner(name), rtype, use_edns=0)
    r = dns.query.udp(q, "127.0.0.1", port=svc_router.dns_port, timeout=3)
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    served = sorted(rd.to_wire() for rd in r.answer[0])
    expected = sorted(
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(t), d).to_wire()
        for n, t, d in SVC_RECORDS if (n, t) == (name, rtype))
    assert served == expected
    assert r.answer[0].ttl == 300


def test_an_https_query_is_counted_by_its_name_and_badcookie_by_its(svc_router):
    q = dns.message.make_query(owner("@"), "HTTPS", use_edns=0)
    dns.query.udp(q, "127.0.0.1", port=svc_router.dns_port, timeout=3)
    forged = dns.edns.GenericOption(10, os.urandom(8) + bytes(16))  # a server cookie not ours
    q = dns.message.make_query(owner("@"), "A", use_edns=0, options=[forged])
    r = dns.query.udp(q, "127.0.0.1", port=svc_router.dns_port, timeout=3)
    assert r.rcode() == dns.rcode.BADCOOKIE
    body = request(svc_router.http_port, "/metrics").body.decode()
    labels = {tuple(sorted(s.labels.items()))
              for f in text_string_to_metric_families(body) for s in f.samples
              if s.name == "mirror_router_dns_queries_total"}
    assert (("qtype", "HTTPS"), ("rcode", "NOERROR")) in labels
    assert (("qtype", "other"), ("rcode", "BADCOOKIE")) in labels
    assert not [lab for lab in labels if dict(lab)["rcode"].isdigit()]


@pytest.mark.parametrize(("data", "reason"), [
    ("0 . alpn=h2", "AliasMode (priority 0) takes no SvcParams"),
    ("1 . alpn=h2 alpn=h3", "alpn is given twice"),
    ("1 . port=99999", "port '99999' is not a number from 0 to 65535"),
    ("1 . mandatory=port alpn=h2", "mandatory names port, which is not given"),
    ("1 . no-default-alpn", "no-default-alpn needs alpn"),
    ("1 . ipv4hint=2001:db8::1", "is not a list of IPv4 addresses"),
    ("1 . colour=blue", "'colour' is not a SvcParamKey"),
    ("1", "is not of the form 'priority target"),
    ("1 . ech=AEX+DQBBpQAgACD/1+s=", "ech must be an ECHConfigList"),
])
def test_a_bad_svcb_is_a_check_error_naming_the_record(tmp_path, data, reason):
    text = ZONE + f"\n[[zone.records]]\nname = \"x\"\ntype = \"HTTPS\"\ndata = '{data}'\n"
    with pytest.raises(ConfigError) as e:
        load(write_zone(tmp_path, text, "svc.example.com.toml"))
    (problem,) = e.value.problems
    assert problem.key == "zone.records[#1].data" and reason in problem.reason
