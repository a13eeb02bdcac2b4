"""DNSSEC key rollovers: keys with timing (``dnssec keygen --publish/--activate/...``),
``dnssec status``, and complete rollovers planned by ``dnssec rollover`` and carried out
by a running router, watched through a real chain of trust: a signed parent zone served
by Knot on loopback holds the DS, and a real unbound, whose only trust anchor is the
parent's key, is asked every 100 ms during the whole rollover. Not one answer may fail
to validate: not during a CSK rollover, nor an algorithm rollover (ECDSA P-256 to
Ed25519, RFC 6781 §4.1.4). TTLs are scaled down to seconds."""

from __future__ import annotations

import calendar
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from router.core.values import moment
from router.dns import dnssec
from tests.harness import RouterProcess, wait_until
from tests.test_dnssec import cli, start_unbound
from tests.test_startup import free_port
from tests.test_unbound import UNBOUND

KNOTD = shutil.which("knotd") or next(
    (p for p in ("/usr/sbin/knotd",) if Path(p).exists()), None)
KNOTC = shutil.which("knotc") or next(
    (p for p in ("/usr/sbin/knotc",) if Path(p).exists()), None)

PARENT, CHILD = "example.com.", "go.example.com."
TTL = 2  # every TTL of both zones, in seconds: a rollover of days scaled down
MARGIN = "3s"  # the new key file is read (watched folder, ~2 s) well within it

ZONE = f'''
[zone]
origin = "go.example.com"
nameservers = ["ns1.go.example.com"]
hostmaster = "hostmaster@example.com"
ttl = {TTL}
negative_ttl = {TTL}
dnssec_keys = "keys"

[[zone.records]]
name = "ns1"
type = "A"
data = "127.0.0.1"

[[zone.records]]
name = "@"
type = "TXT"
data = "hello"

[services.edge]
dns_names = ["dl"]
ttl = {TTL}

[[services.edge.targets]]
id = "fra"
url = "http://127.0.0.1:9/"
location = {{ lat = 50.11, lon = 8.68 }}
addresses = ["192.0.2.21"]

[[services.edge.targets]]
id = "sin"
url = "http://127.0.0.1:9/"
location = {{ lat = 1.35, lon = 103.82 }}
addresses = ["192.0.2.24"]
'''

PARENT_ZONE = f"""$ORIGIN {PARENT}
$TTL {TTL}
@ SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 {TTL}
@ NS ns.example.com.
ns A 127.0.0.1
go NS ns1.go.example.com.
ns1.go A 127.0.0.1
"""

KNOT_CONFIG = """server:
    rundir: "{folder}"
    listen: 127.0.0.1@{port}
    pidfile: "{folder}/knot.pid"
database:
    storage: "{folder}"
control:
    listen: "{folder}/knot.sock"
log:
  - target: stderr
    any: notice
policy:
  - id: quick
    algorithm: ecdsap256sha256
    single-type-signing: on
    dnskey-ttl: {ttl}
    zone-max-ttl: {ttl}
template:
  - id: default
    storage: "{folder}"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: difference-no-serial
    journal-content: all
zone:
  - domain: {parent}
    dnssec-signing: on
    dnssec-policy: quick
"""

PARENT_STUB = """
stub-zone:
    name: "{parent}"
    stub-addr: 127.0.0.1@{knot}"""

QUESTIONS = (("dl." + CHILD, "A"), (CHILD, "TXT"), (CHILD, "DNSKEY"), ("ns1." + CHILD, "A"),
             ("nothing." + CHILD, "A"))


# ---------------------------------------------------------------- keys and their timing


def test_timing_decides_what_is_published_and_what_signs(tmp_path):
    """The states of a CSK rollover's keys, step by step, from the plan's own times."""
    made = cli("dnssec", "keygen", "--zone", CHILD, "--out", str(tmp_path / "old.key"))
    assert made.returncode == 0, made.stderr
    old = dnssec.load(tmp_path / "old.key", CHILD)
    now = time.time()
    plan = dnssec.plan(old, old.algorithm, now, ttl=60, max_ttl=300, parent_ttl=3600,
                       parent_delay=86400, margin=600)
    (tmp_path / "new.key").write_text(dnssec.generate(CHILD, "ecdsap256sha256", now, plan.new))
    (tmp_path / "old.key").write_text(dnssec.retimed(
        (tmp_path / "old.key").read_text(), plan.old))
    old, new = (dnssec.load(tmp_path / f, CHILD) for f in ("old.key", "new.key"))
    keys = (old, new)
    start, swap, gone = (s.at for s in plan.steps)
    assert 600 <= start - now < 601 and swap - start == 60 + 600
    assert gone - swap == 86400 + 3600 + 600  # the parent's delay and DS TTL dominate

    def at(when: float) -> tuple[list[int], list[int], list[int]]:
        p = dnssec.phase(keys, when, 60)
        assert not p.lapsed
        return [k.tag for k in p.published], [k.tag for k in p.signing], \
            [k.tag for k in p.cds]

    assert at(now) == ([old.tag], [old.tag], [old.tag])
    assert at(start + 1) == ([old.tag, new.tag], [old.tag], [old.tag])  # pre-published
    assert dnssec.state(new, start + 1, 60) == "published"
    assert dnssec.state(new, start + 61, 60) == "ready"
    assert at(swap) == ([old.tag, new.tag], [new.tag], [new.tag])
    assert dnssec.state(old, swap, 60) == "retired"
    assert at(gone) == ([new.tag], [new.tag], [new.tag])
    assert dnssec.state(old, gone, 60) == "removed"
    assert dnssec.next_event(keys, now, 60)[:2] == (start, "publish")
    # a retired key still signs the DNSKEY RRset: the old DS keeps validating it
    assert {k.tag for k in dnssec.phase(keys, swap + 1, 60).apex} == {old.tag, new.tag}


def test_an_algorithm_rollover_signs_before_it_publishes(tmp_path):
    assert cli("dnssec", "keygen", "--zone", CHILD, "--out", str(tmp_path / "old.key")
               ).returncode == 0
    old = dnssec.load(tmp_path / "old.key", CHILD)
    now = time.time()
    plan = dnssec.plan(old, dnssec.ALGORITHMS["ed25519"], now, ttl=60, max_ttl=300,
                       parent_ttl=3600, parent_delay=86400, margin=600)
    new = dnssec.load(tmp_path / "new.key", CHILD, dnssec.generate(CHILD, "ed25519", now,
                                                                   plan.new))
    old = dnssec.load(tmp_path / "old.key", CHILD, dnssec.retimed(
        (tmp_path / "old.key").read_text(), plan.old))
    start, shown, swap, gone, unsigned = (s.at for s in plan.steps)
    assert start < shown < swap < gone < unsigned
    assert shown - start == 300 + 600  # every signature of the old key alone has expired
    p = dnssec.phase((old, new), start, 60)
    assert [k.tag for k in p.signing] == [old.tag, new.tag] and p.published == (old,)
    assert dnssec.state(new, start, 60) == "signing-unpublished"
    p = dnssec.phase((old, new), gone, 60)
    assert p.published == (new,) and {k.tag for k in p.signing} == {old.tag, new.tag}
    assert dnssec.phase((old, new), unsigned, 60).signing == (new,)


def test_keygen_writes_timing_and_refuses_a_bad_one(tmp_path):
    made = cli("dnssec", "keygen", "--zone", CHILD, "--out", str(tmp_path / "k.key"),
               "--publish", "2030-01-01T00:00Z", "--activate", "+30d")
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "k.key").read_text()
    assert "; publish: 2030-01-01T00:00:00Z" in text and "; activate: " in text
    key = dnssec.load(tmp_path / "k.key", CHILD)
    assert key.timing.publish == calendar.timegm((2030, 1, 1, 0, 0, 0))
    assert key.timing.activate is not None and key.timing.activate - time.time() > 29 * 86400
    bad = cli("dnssec", "keygen", "--zone", CHILD, "--out", str(tmp_path / "b.key"),
              "--retire", "2030-01-01T00:00Z", "--activate", "2031-01-01T00:00Z")
    assert bad.returncode == 1 and "retire" in bad.stderr and "before activate" in bad.stderr
    assert not (tmp_path / "b.key").exists()
    garbled = cli("dnssec", "keygen", "--zone", CHILD, "--out", str(tmp_path / "c.key"),
                  "--publish", "tomorrow")
    assert garbled.returncode == 1 and "'tomorrow' is not a time" in garbled.stderr
    (tmp_path / "d.key").write_text(text.replace("; publish: 2030-01-01T00:00:00Z",
                                                 "; publish: +3d"))
    with pytest.raises(dnssec.DnssecError, match=r"d\.key: publish: '\+3d': write a time"):
        dnssec.load(tmp_path / "d.key", CHILD)


def test_a_zone_whose_keys_all_wait_is_refused_and_status_tells_the_next_event(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (tmp_path / "go.toml").write_text(ZONE)
    later = cli("dnssec", "keygen", "--zone", CHILD, "--out", str(keys / "later.key"),
                "--publish", "+1d", "--activate", "+2d")
    assert later.returncode == 0
    check = cli("check", "--zones", str(tmp_path))
    assert check.returncode == 1
    assert "zone.dnssec_keys" in check.stderr and "no key is both published and active" \
        in check.stderr
    assert cli("dnssec", "keygen", "--zone", CHILD, "--out", str(keys / "now.key")
               ).returncode == 0
    status = cli("dnssec", "status", "--zones", str(tmp_path))
    assert status.returncode == 0, status.stderr
    now_tag = dnssec.load(keys / "now.key", CHILD).tag
    later_tag = dnssec.load(keys / "later.key", CHILD).tag
    assert f"key {now_tag} ecdsap256sha256 active" in status.stdout
    assert f"key {later_tag} ecdsap256sha256 planned" in status.stdout
    assert f"next: key {later_tag} publish at " in status.stdout
    assert f"the parent's DS should be: key {now_tag}" in status.stdout
    twice = cli("dnssec", "rollover", "--zones", str(tmp_path), "--zone", CHILD)
    assert twice.returncode == 1 and "one rollover at a time" in twice.stderr


# ---------------------------------------------------------------- the chain of trust


@dataclass
class Knot:
    """A signed parent zone in Knot on loopback; its DS for the child can be replaced."""

    folder: Path
    port: int
    proc: subprocess.Popen[str]
    anchor: str = ""

    def knotc(self, *args: str, absent_ok: bool = False) -> None:
        assert KNOTC is not None
        done = subprocess.run([KNOTC, "-s", str(self.folder / "knot.sock"), *args],
                              capture_output=True, text=True, timeout=30, check=False)
        if absent_ok and "(not exists)" in done.stdout:
            return
        assert done.returncode == 0 and "error" not in done.stdout, done.stdout + done.stderr

    def set_ds(self, *records: str) -> None:
        """Replace the child's DS RRset, as an operator does at the parent (Knot signs
        the change at once)."""
        self.knotc("zone-begin", PARENT)
        self.knotc("zone-unset", PARENT, CHILD, "DS", absent_ok=True)
        for r in records:
            owner, _in, _ds, *rdata = r.split()
            self.knotc("zone-set", PARENT, owner, str(TTL), "DS", *rdata)
        self.knotc("zone-commit", PARENT)


@pytest.fixture
def knot(tmp_path) -> Iterator[Knot]:
    if KNOTD is None or KNOTC is None or UNBOUND is None:
        pytest.skip("needs knotd and unbound (Debian packages knot and unbound; .ci/run "
                    "installs them)")
    folder = tmp_path / "knot"
    folder.mkdir()
    port = free_port()
    (folder / "knot.conf").write_text(KNOT_CONFIG.format(folder=folder, port=port, ttl=TTL,
                                                         parent=PARENT))
    (folder / f"{PARENT.rstrip('.')}.zone").write_text(PARENT_ZONE)
    proc = subprocess.Popen([KNOTD, "-c", str(folder / "knot.conf")], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent = Knot(folder, port, proc)

    def signed() -> str:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "knotd died")
        try:
            reply = dns.query.udp(dns.message.make_query(PARENT, "DNSKEY"), "127.0.0.1",
                                  port=port, timeout=1)
        except (dns.exception.Timeout, OSError):
            return ""
        keys = [r for rrset in reply.answer for r in rrset if r.flags & 1]  # SEP
        return f"{PARENT} IN DNSKEY {keys[0].to_text()}" if keys else ""
    try:
        parent.anchor = wait_until(signed, 30, what="knotd to sign the parent")
        yield parent
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Sampler:
    """Asks unbound every question every 100 ms, from another thread, and keeps every
    answer that did not validate (not NOERROR/NXDOMAIN with AD)."""

    port: int
    asked: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            for name, rdtype in QUESTIONS:
                q = dns.message.make_query(name, rdtype, want_dnssec=True)
                try:
                    reply = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5)
                except (dns.exception.Timeout, OSError) as e:
                    self.failures.append(f"{time.time():.1f} {name} {rdtype}: {e!r}")
                    continue
                self.asked += 1
                good = reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and \
                    reply.flags & dns.flags.AD
                if not good:
                    self.failures.append(f"{time.time():.1f} {name} {rdtype}: "
                                         f"{dns.rcode.to_text(reply.rcode())} "
                                         f"{dns.flags.to_text(reply.flags)}")


def router_keys(router: RouterProcess) -> set[int]:
    """The key tags in the router's DNSKEY RRset."""
    q = dns.message.make_query(CHILD, "DNSKEY", want_dnssec=True)
    reply = dns.query.udp(q, "127.0.0.1", port=router.dns_port, timeout=5)
    return {dns.dnssec.key_id(r) for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.DNSKEY for r in rrset}


def roll(zones: Path, router: RouterProcess, knot: Knot, *extra: str) -> int:
    """One rollover as an operator runs it: ``dnssec rollover``, the DS replaced at the
    parent when the plan says, and waiting for its last step. The new key's tag."""
    done = cli("dnssec", "rollover", "--zones", str(zones), "--zone", CHILD,
               "--parent-ttl", f"{TTL}s", "--parent-delay", "1s", "--margin", MARGIN, *extra)
    assert done.returncode == 0, done.stderr
    steps = [(moment(line.split()[0], 0), line) for line in done.stdout.splitlines()
             if re.match(r"^\d{4}-", line)]
    new_ds = done.stdout.strip().splitlines()[-1]
    new_tag = int(new_ds.split()[3])
    swap = next(at for at, line in steps if "replace the DS" in line)
    wait_until(lambda: new_tag in router_keys(router), 30, interval=0.2,
               what="the new key published")
    wait_until(lambda: time.time() >= swap, swap - time.time() + 5, interval=0.1,
               what="the step that replaces the DS")
    knot.set_ds(new_ds)
    last = steps[-1][0]
    wait_until(lambda: time.time() >= last + 2 * TTL, last - time.time() + 10, interval=0.2,
               what="the last step, and the TTLs after it")
    assert router_keys(router) == {new_tag}
    return new_tag


def test_rollovers_never_break_validation_at_a_real_resolver(tmp_path, knot):
    keys = tmp_path / "zones" / "keys"
    keys.mkdir(parents=True)
    (tmp_path / "zones" / "go.toml").write_text(ZONE)
    made = cli("dnssec", "keygen", "--zone", CHILD, "--out", str(keys / "first.key"))
    assert made.returncode == 0, made.stderr
    knot.set_ds(next(line for line in made.stdout.splitlines() if " IN DS " in line))
    router = RouterProcess(tmp_path / "zones", "--no-probe")
    unbound, port = start_unbound(tmp_path, router, knot.anchor, zone=CHILD, first=PARENT,
                                  stubs=PARENT_STUB.format(parent=PARENT, knot=knot.port))
    sampler = Sampler(port)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: sampler.asked >= 2 * len(QUESTIONS), 20, what="first answers")
        assert not sampler.failures, sampler.failures[:5]  # validates before anything
        csk = roll(tmp_path / "zones", router, knot)
        ed = roll(tmp_path / "zones", router, knot, "--algorithm", "ed25519")
        assert dnssec.load(next(p for p in keys.glob("*.key") if dnssec.load(
            p, CHILD).tag == ed), CHILD).name == "ed25519" and csk != ed
        sampler.stop.set()
        thread.join(10)
        assert sampler.asked > 300
        assert not sampler.failures, (len(sampler.failures), sampler.failures[:10])
        states = [e for e in router.events if e.get("event") == "dnssec_key_state"]
        assert {"published", "active", "retired", "removed", "signing-unpublished"} <= {
            e["state"] for e in states}
        # the chain is really checked through the parent: a wrong DS there is bogus
        knot.set_ds(f"{CHILD} IN DS 1 13 2 {'00' * 32}")
        wait_until(lambda: dns.query.udp(dns.message.make_query(CHILD, "TXT"), "127.0.0.1",
                                         port=port, timeout=5).rcode() == dns.rcode.SERVFAIL,
                   20, interval=0.2, what="SERVFAIL after a wrong DS")
    finally:
        sampler.stop.set()
        unbound.terminate()
        unbound.wait(10)
        assert router.stop() == 0


def test_status_shows_each_key_and_the_next_event_and_cds_can_ask_for_deletion(tmp_path):
    import json
    import urllib.request

    from tests.test_observability import scrape, value
    keys = tmp_path / "keys"
    keys.mkdir()
    assert cli("dnssec", "keygen", "--zone", CHILD, "--out", str(keys / "a.key")
               ).returncode == 0
    assert cli("dnssec", "keygen", "--zone", CHILD, "--out", str(keys / "b.key"),
               "--publish", "+1h", "--activate", "+2h").returncode == 0
    a, b = (dnssec.load(keys / f, CHILD) for f in ("a.key", "b.key"))
    (tmp_path / "go.toml").write_text(ZONE)
    router = RouterProcess(tmp_path, "--no-probe")
    try:
        assert router_keys(router) == {a.tag}  # b is planned: not published yet
        with urllib.request.urlopen(f"http://127.0.0.1:{router.http_port}/status.json") as r:
            shown = json.load(r)["dnssec"][0]
        assert {k["key_tag"]: k["state"] for k in shown["keys"]} == {a.tag: "active",
                                                                     b.tag: "planned"}
        assert shown["next_event"]["event"] == "publish"
        assert shown["next_event"]["key_tag"] == b.tag
        assert 3500 < shown["next_event"]["in_s"] <= 3600
        assert value(scrape(router), "mirror_router_dnssec_next_event_timestamp_seconds",
                     zone=CHILD, key_tag=str(b.tag), event="publish") == b.timing.publish
        cds = dns.query.udp(dns.message.make_query(CHILD, "CDS", want_dnssec=True),
                            "127.0.0.1", port=router.dns_port, timeout=5)
        assert [r.key_tag for rrset in cds.answer if rrset.rdtype == dns.rdatatype.CDS
                for r in rrset] == [a.tag]
    finally:
        assert router.stop() == 0
    (tmp_path / "go.toml").write_text(ZONE.replace('dnssec_keys = "keys"',
                                                   'dnssec_keys = "keys"\ndnssec_cds = "delete"'))
    router = RouterProcess(tmp_path, "--no-probe")
    try:
        for rdtype, text in (("CDS", "0 0 0 00"), ("CDNSKEY", "0 3 0 AA==")):
            reply = dns.query.udp(dns.message.make_query(CHILD, rdtype, want_dnssec=True),
                                  "127.0.0.1", port=router.dns_port, timeout=5)
            found = {rrset.rdtype: rrset for rrset in reply.answer}
            assert [r.to_text() for r in found[dns.rdatatype.from_text(rdtype)]] == [text]
            assert dns.rdatatype.RRSIG in found  # signed, by the published key
    finally:
        assert router.stop() == 0
