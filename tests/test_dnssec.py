"""DNSSEC: keys made by ``mirror-router dnssec keygen``, answers signed online, compact
denial (RFC 9824), checked with dnspython's own validator (``dns.dnssec.validate``)
against the DNSKEY the router publishes, and with a DS made by dnspython."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from router.dns import dnssec
from tests.conftest import write_zone
from tests.harness import ROOT, RouterProcess, five_city_zone

ZONE = "test.example.com."
CO = 0x4000  # EDNS flag: Compact answers OK


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def signed_zone(city_mirrors, folder: Path, key: str = "test.key") -> str:
    return five_city_zone(city_mirrors, extra_records='''
[[zone.records]]
name = "gone"
type = "CNAME"
data = "nowhere.test.example.com."

[[zone.records]]
name = "mail"
type = "MX"
data = "10 ns1.test.example.com."
''').replace("[zone]\n", f'[zone]\ndnssec_key = "{key}"\n', 1)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, city_mirrors) -> Iterator[tuple[RouterProcess, Path, str]]:
    folder = tmp_path_factory.mktemp("signed")
    made = cli("dnssec", "keygen", "--zone", "test.example.com", "--out", str(folder / "test.key"))
    assert made.returncode == 0, made.stderr
    write_zone(folder, signed_zone(city_mirrors, folder))
    router = RouterProcess(folder)
    yield router, folder, made.stdout
    assert router.stop() == 0


def ask(router: RouterProcess, name: str, rdtype: str, *, ecs=None, flags: int = 0,
        tcp: bool = False) -> dns.message.Message:
    options = [dns.edns.ECSOption(*ecs)] if ecs else []
    q = dns.message.make_query(name, rdtype, want_dnssec=True, options=options,
                               payload=1232)
    q.ednsflags |= flags
    send = dns.query.tcp if tcp else dns.query.udp
    return send(q, "127.0.0.1", port=router.dns_port, timeout=5)


def dnskeys(router: RouterProcess) -> dict[dns.name.Name, dns.rrset.RRset]:
    reply = ask(router, ZONE, "DNSKEY")
    rrset = reply.find_rrset(reply.answer, dns.name.from_text(ZONE), dns.rdataclass.IN,
                             dns.rdatatype.DNSKEY)
    return {dns.name.from_text(ZONE): rrset}


def validate_all(reply: dns.message.Message, keys) -> int:
    """Every RRset in answer and authority is covered by an RRSIG that validates;
    returns how many RRsets were checked."""
    checked = 0
    for section in (reply.answer, reply.authority):
        sigs = [r for r in section if r.rdtype == dns.rdatatype.RRSIG]
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            sig = next(s for s in sigs if s.name == rrset.name and s[0].type_covered ==
                       rrset.rdtype)
            dns.dnssec.validate(rrset, sig, keys)
            assert sig.ttl == rrset.ttl and sig[0].original_ttl == rrset.ttl
            checked += 1
    return checked


def test_keygen_writes_a_private_file_and_prints_the_ds(keyed):
    _router, folder, printed = keyed
    path = folder / "test.key"
    assert (os.stat(path).st_mode & 0o777) == 0o600
    key = dnssec.load(path, ZONE)
    dnskey = dns.rdata.from_text("IN", "DNSKEY", dnssec.presentation(key).split(" DNSKEY ")[1])
    ds = dns.dnssec.make_ds(ZONE, dnskey, "SHA256")
    assert f"IN DS {ds.to_text().upper()}" in printed.upper()
    assert f'dnssec_key = "{path.resolve()}"' in printed  # a path that works from any zone
    again = cli("dnssec", "ds", "--zones", str(folder))
    assert again.returncode == 0 and ds.to_text().upper() in again.stdout.upper()
    refused = cli("dnssec", "keygen", "--zone", ZONE, "--out", str(path))
    assert refused.returncode == 1  # never over an existing key
    checked = cli("check", "--zones", str(folder))
    assert checked.returncode == 0 and f"signed (ecdsap256sha256, key tag {key.tag}" in \
        checked.stdout


@pytest.mark.parametrize(("name", "rdtype", "ecs"), [
    (ZONE, "A", ("1.0.16.0", 24)),  # Tokyo
    (ZONE, "A", ("5.9.0.0", 16)),  # Frankfurt
    (ZONE, "AAAA", ("202.106.0.0", 24)),  # Beijing
    ("TeSt.ExAmPlE.cOm.", "A", ("1.0.16.0", 24)),  # mixed case
    (ZONE, "TXT", None),
    (ZONE, "NS", None),
    (ZONE, "SOA", None),
    (ZONE, "DNSKEY", None),
    (ZONE, "CDS", None),
    (ZONE, "CDNSKEY", None),
    ("mail." + ZONE, "MX", None),
    ("alias." + ZONE, "A", ("1.0.16.0", 24)),  # a CNAME to the steered name
    ("ns1." + ZONE, "A", None),
])
def test_every_answer_validates(keyed, name, rdtype, ecs):
    router, _folder, _out = keyed
    keys = dnskeys(router)
    reply = ask(router, name, rdtype, ecs=ecs)
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer
    assert validate_all(reply, keys) >= 1
    if ecs:  # the ECS scope behaviour is unchanged by signing
        echoed = next(o for o in reply.options if isinstance(o, dns.edns.ECSOption))
        assert echoed.scopelen > 0


@pytest.mark.parametrize(("name", "rdtype", "types"), [
    ("nothing." + ZONE, "A", {"RRSIG", "NSEC", "NXNAME"}),  # NXDOMAIN, compact
    ("ns1." + ZONE, "MX", {"A", "RRSIG", "NSEC"}),  # NODATA
    (ZONE, "PTR", None),  # NODATA at the apex: its types, with DNSKEY
    ("gone." + ZONE, "A", {"RRSIG", "NSEC", "NXNAME"}),  # a CNAME to nowhere
])
def test_denials_are_compact_and_validate(keyed, name, rdtype, types):
    router, _folder, _out = keyed
    keys = dnskeys(router)
    reply = ask(router, name, rdtype)
    assert reply.rcode() == dns.rcode.NOERROR  # NXDOMAIN only with CO
    validate_all(reply, keys)
    nsecs = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC]
    assert len(nsecs) == 1
    nsec = nsecs[0]
    target = "nowhere." + ZONE if name.startswith("gone") else name
    assert nsec.name == dns.name.from_text(target)
    assert nsec[0].next == dns.name.from_text("\\000." + target)  # nothing to walk
    shown = set(nsec[0].to_text().split()[1:])
    if types is not None:
        assert shown == types
    else:
        assert {"SOA", "NS", "DNSKEY", "A", "AAAA", "RRSIG", "NSEC"} <= shown


def test_co_restores_nxdomain_and_nxname_is_refused(keyed):
    router, _folder, _out = keyed
    reply = ask(router, "nothing." + ZONE, "A", flags=CO)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.ednsflags & CO
    validate_all(reply, dnskeys(router))
    assert ask(router, ZONE, "TYPE128").rcode() == dns.rcode.FORMERR


def test_without_do_nothing_is_signed(keyed):
    router, _folder, _out = keyed
    q = dns.message.make_query(ZONE, "A", use_edns=0)
    reply = dns.query.udp(q, "127.0.0.1", port=router.dns_port, timeout=5)
    assert reply.answer and not any(r.rdtype == dns.rdatatype.RRSIG for r in reply.answer)
    nx = dns.query.udp(dns.message.make_query("nothing." + ZONE, "A", use_edns=0),
                       "127.0.0.1", port=router.dns_port, timeout=5)
    assert nx.rcode() == dns.rcode.NXDOMAIN


def test_signatures_are_the_same_bytes_every_time(keyed):
    router, _folder, _out = keyed
    first = ask(router, ZONE, "SOA", tcp=True)
    second = ask(router, ZONE, "SOA", tcp=True)
    sig = next(r for r in first.answer if r.rdtype == dns.rdatatype.RRSIG)[0]
    again = next(r for r in second.answer if r.rdtype == dns.rdatatype.RRSIG)[0]
    assert sig.signature == again.signature  # deterministic ECDSA, aligned windows
    assert (sig.expiration - sig.inception) == 3 * dnssec.WINDOW


def test_a_bad_key_file_is_named_at_start(tmp_path, city_mirrors):
    folder = tmp_path / "zones"
    write_zone(folder, signed_zone(city_mirrors, folder))
    (folder / "test.key").write_text("; zone: other.example.\n; algorithm: ed25519\n")
    done = cli("check", "--zones", str(folder))
    assert done.returncode == 1
    assert "zone.dnssec_key" in done.stderr and "test.key" in done.stderr and \
        "other.example" in done.stderr
    (folder / "test.key").unlink()
    missing = cli("check", "--zones", str(folder))
    assert missing.returncode == 1 and "no such file" in missing.stderr


# ---------------------------------------------------------------- a validating resolver


VALIDATOR = """    module-config: "validator iterator"
    trust-anchor: "{anchor}"
    val-log-level: 2"""


def start_unbound(folder: Path, router: RouterProcess, anchor: str, *, zone: str = ZONE,
                  stubs: str = "", first: str = "ns1." + ZONE
                  ) -> tuple[subprocess.Popen[str], int]:
    """unbound validating with ``anchor`` as its trust anchor, ``zone`` stubbed to the
    router (and ``stubs``: more stub zones), once it answers ``first``."""
    from tests.harness import wait_until
    from tests.test_startup import free_port
    from tests.test_unbound import CONFIG, UNBOUND
    if UNBOUND is None:
        pytest.skip("needs unbound (Debian package unbound; .ci/run installs it)")
    port = free_port()
    config = folder / "unbound.conf"
    config.write_text(CONFIG.format(port=port, folder=folder, zone=zone,
                                    router=router.dns_port,
                                    extra=VALIDATOR.format(anchor=anchor) + stubs))
    proc = subprocess.Popen([UNBOUND, "-d", "-c", str(config)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    def answering() -> bool:
        try:
            dns.query.udp(dns.message.make_query(first, "A"), "127.0.0.1", port=port,
                          timeout=1)
            return True
        except (dns.exception.Timeout, OSError):
            return proc.poll() is not None
    wait_until(answering, 20, what="unbound to answer")
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    return proc, port


def resolve(port: int, name: str, rdtype: str, ecs=None) -> dns.message.Message:
    options = [dns.edns.ECSOption(*ecs)] if ecs else []
    q = dns.message.make_query(name, rdtype, want_dnssec=True, options=options)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=10)


def test_unbound_validates_answers_and_denials_and_refuses_a_wrong_key(keyed, tmp_path):
    router, folder, _out = keyed
    anchor = dnssec.presentation(dnssec.load(folder / "test.key", ZONE))
    proc, port = start_unbound(tmp_path, router, anchor)
    try:
        for name, rdtype in ((ZONE, "A"), (ZONE, "AAAA"), ("ns1." + ZONE, "A"),
                             (ZONE, "TXT"), ("nothing." + ZONE, "A"),
                             ("ns1." + ZONE, "MX")):
            reply = resolve(port, name, rdtype)
            assert reply.rcode() == dns.rcode.NOERROR, (name, rdtype, reply)
            assert reply.flags & dns.flags.AD, (name, rdtype, reply)  # secure
        assert resolve(port, ZONE, "A").answer  # a steered answer, validated
    finally:
        proc.terminate()
        proc.wait(10)
    other = tmp_path / "other"
    other.mkdir()
    assert cli("dnssec", "keygen", "--zone", ZONE, "--out", str(other / "k")).returncode == 0
    wrong = dnssec.presentation(dnssec.load(other / "k", ZONE))
    proc, port = start_unbound(other, router, wrong)
    try:
        assert resolve(port, ZONE, "A").rcode() == dns.rcode.SERVFAIL
    finally:
        proc.terminate()
        proc.wait(10)


def test_failover_changes_the_answer_and_the_new_one_validates(keyed, city_mirrors):
    from tests.harness import wait_until
    router, _folder, _out = keyed
    keys = dnskeys(router)

    def japan() -> str:
        reply = ask(router, ZONE, "A", ecs=("1.0.16.0", 24))
        validate_all(reply, keys)  # every answer, before and after, validates
        return next(r for r in reply.answer if r.rdtype == dns.rdatatype.A)[0].address

    assert japan() == "192.0.2.2"  # Tokyo
    city_mirrors["tyo"].health_status = 503
    try:
        wait_until(lambda: japan() == "192.0.2.1", 15, what="Japan to move to Beijing")
    finally:
        city_mirrors["tyo"].health_status = 200
    wait_until(lambda: japan() == "192.0.2.2", 15, what="Tokyo back")


def test_metrics_and_status_show_the_key_and_its_signatures(keyed):
    from tests.test_observability import scrape, value
    router, _folder, _out = keyed
    ask(router, "ns1." + ZONE, "A", tcp=True)  # signed, and the reply cached
    ask(router, "ns1." + ZONE, "A", tcp=True)  # the answer cache: nothing signed
    ask(router, "ns1." + ZONE, "A", ecs=("1.0.16.0", 24))  # another shape: same RRSIG
    m = scrape(router)
    made = value(m, "mirror_router_cache_events_total", cache="dnssec_signatures", event="miss")
    reused = value(m, "mirror_router_cache_events_total", cache="dnssec_signatures", event="hit")
    assert made >= 1 and reused >= 1
    zone = {"zone": ZONE}
    assert value(m, "mirror_router_dnssec_signatures_total", **zone, result="made") >= 1
    assert value(m, "mirror_router_dnssec_signatures_total", **zone, result="cached") >= 1
    key = dnssec.load(_folder / "test.key", ZONE)
    age = value(m, "mirror_router_dnssec_key_age_seconds", **zone, key_tag=str(key.tag))
    assert 0 <= age < 3600
    import json
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{router.http_port}/status.json") as r:
        shown = json.load(r)["dnssec"]
    assert shown[0]["zone"] == ZONE and shown[0]["keys"][0]["key_tag"] == key.tag
    assert shown[0]["keys"][0]["state"] == "active" and shown[0]["next_event"] is None
    assert shown[0]["signatures_made"] >= 1
    assert value(m, "mirror_router_dnssec_key_state", **zone, key_tag=str(key.tag),
                 algorithm="ecdsap256sha256", state="active") == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{router.http_port}/status") as r:
        assert "<h2>DNSSEC</h2>" in r.read().decode()


def test_a_degraded_answer_is_signed_with_its_shortened_ttl(keyed, city_mirrors):
    from tests.harness import wait_until
    router, _folder, _out = keyed
    keys = dnskeys(router)

    def ttl() -> int:
        reply = ask(router, ZONE, "A", ecs=("1.0.16.0", 24))
        validate_all(reply, keys)  # the RRSIG's original TTL is the answer's, whatever it is
        return next(r for r in reply.answer if r.rdtype == dns.rdatatype.A).ttl

    normal = ttl()
    for mirror in city_mirrors.values():
        mirror.health_status = 503
    try:
        wait_until(lambda: ttl() < normal, 15, what="a degraded answer (all targets down)")
    finally:
        for mirror in city_mirrors.values():
            mirror.health_status = 200
    wait_until(lambda: ttl() == normal, 15, what="the normal TTL back")


def test_a_key_replaced_in_place_is_a_changed_zone(tmp_path, city_mirrors):
    """The key is read with the zone, so a reload after a key rollover (same file name)
    serves the new key instead of keeping the old answers and signatures."""
    from router.core.config import unchanged_zones
    from router.core.zonefile import load
    folder = tmp_path / "zones"
    write_zone(folder, signed_zone(city_mirrors, folder))
    assert cli("dnssec", "keygen", "--zone", ZONE, "--out", str(folder / "test.key")
               ).returncode == 0
    before = load(folder)
    (folder / "test.key").unlink()
    assert cli("dnssec", "keygen", "--zone", ZONE, "--out", str(folder / "test.key")
               ).returncode == 0
    after = load(folder)
    assert ZONE not in unchanged_zones(before, after)
    assert "PRIVATE KEY" not in repr(after.zones[0])  # the secret is never shown
