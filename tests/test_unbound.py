"""A real resolver in front of the router: unbound with its ECS subnet cache
(``subnetcache``), a stub zone to the router on loopback, asked for several client
subnets. What it answers must be what the router answers itself."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import pytest

from tests.harness import wait_until
from tests.test_dns import ZONE, addresses, ecs_of
from tests.test_startup import free_port as free_udp_tcp_port

UNBOUND = shutil.which("unbound") or next(
    (p for p in ("/usr/sbin/unbound",) if Path(p).exists()), None)

SUBNETS = [("1.0.16.0", 24), ("5.9.0.0", 24), ("202.106.0.0", 24), ("8.8.8.0", 24),
           ("200.160.0.0", 24), ("1.0.0.0", 16)]

CONFIG = """server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: ""
    chroot: ""
    username: ""
    directory: "{folder}"
    pidfile: ""
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    qname-minimisation: no
    trust-anchor-signaling: no
    auto-trust-anchor-file: ""
{extra}
stub-zone:
    name: "{zone}"
    stub-addr: 127.0.0.1@{router}
remote-control:
    control-enable: no
"""


SUBNETCACHE = """    module-config: "subnetcache iterator"
    send-client-subnet: 127.0.0.1
    max-client-subnet-ipv4: 24
    client-subnet-always-forward: yes"""


@contextlib.contextmanager
def running_unbound(folder: Path, zone: str, router_port: int) -> Iterator[int]:
    """unbound with its subnet cache, stubbing ``zone`` to the router: its port."""
    if UNBOUND is None:
        pytest.skip("needs unbound (Debian package unbound; .ci/run installs it)")
    port = free_udp_tcp_port()
    config = folder / "unbound.conf"
    config.write_text(CONFIG.format(port=port, folder=folder, zone=zone,
                                    router=router_port, extra=SUBNETCACHE))
    check = subprocess.run([str(Path(UNBOUND).with_name("unbound-checkconf")), str(config)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([UNBOUND, "-d", "-c", str(config)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    def answering() -> bool:
        try:
            dns.query.udp(dns.message.make_query(zone, "SOA"), "127.0.0.1", port=port,
                          timeout=1)
            return True
        except (dns.exception.Timeout, OSError):
            return proc.poll() is not None  # it died: the assertion below says so
    try:
        wait_until(answering, 20, what="unbound to answer")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def unbound(tmp_path, five_cities):
    with running_unbound(tmp_path, ZONE, five_cities.dns_port) as port:
        yield port


def _ask(port: int, subnet: tuple[str, int]) -> dns.message.Message:
    q = dns.message.make_query(ZONE, "A", use_edns=0, options=[dns.edns.ECSOption(*subnet)])
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=5)


def test_answers_through_unbound_match_the_routers_own(unbound, five_cities):
    for _ in range(2):  # asked, then from unbound's subnet cache
        for subnet in SUBNETS:
            direct = _ask(five_cities.dns_port, subnet)
            through = _ask(unbound, subnet)
            assert addresses(through) == addresses(direct), subnet
            assert ecs_of(direct).scopelen > 0
