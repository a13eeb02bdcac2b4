"""Safe start-up, black-box: a second mirror-router on the same addresses refuses to start
and names the address; every start-up problem names its listener, address or file."""

from __future__ import annotations

import errno
import re
import socket
import subprocess
import sys

import pytest

from router.serve.settings import ListenError, _named
from tests.conftest import write_zone
from tests.harness import ROOT, RouterProcess, five_city_zone, wait_until
from tests.test_workers import _answering_pid


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (to start two routers on it)."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            try:
                udp.bind(("127.0.0.1", tcp.getsockname()[1]))
            except OSError:
                continue
            return int(tcp.getsockname()[1])


def serve(zones, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "serve", "--zones", str(zones),
                           "--log-format", "json", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def zones(tmp_path_factory, city_mirrors):
    return write_zone(tmp_path_factory.mktemp("zones"), five_city_zone(city_mirrors))


def test_a_second_instance_refuses_and_the_first_serves_alone(tmp_path, zones):
    dns, http = free_port(), free_port()
    where = ("--dns", f"127.0.0.1:{dns}", "--http", f"127.0.0.1:{http}")
    first = subprocess.Popen([sys.executable, "-m", "router", "serve", "--zones", str(zones),
                              *where, "--workers", "2", "--log-format", "json"], cwd=ROOT,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _pid_at(http), 30, what="the first router")
        pids = set()
        wait_until(lambda: pids.add(_pid_at(http)) or len(pids) == 2, 10,
                   what="both workers of the first router")
        for workers in ("2", "1"):
            second = serve(zones, *where, "--workers", workers)
            assert second.returncode == 1
            assert (f"DNS 127.0.0.1:{dns}: another mirror-router already serves this address"
                    in second.stderr)
        assert {_pid_at(http) for _ in range(40)} <= pids  # only the first answers
        assert first.poll() is None
    finally:
        first.terminate()
        assert first.wait(30) == 0


def _pid_at(port: int) -> int:
    class At:
        http_port = port
    try:
        return _answering_pid(At())
    except OSError:
        return 0


def test_a_busy_port_is_named_with_its_listener(zones):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(zones, "--dns", "127.0.0.1:0", "--http", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert f"HTTP 127.0.0.1:{port}: Address already in use; another program listens there" \
        in done.stderr


def test_a_missing_ca_file_is_named_before_anything_listens(zones, tmp_path):
    done = serve(zones, "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0",
                 "--ca-file", str(tmp_path / "nope.pem"))
    assert done.returncode == 1
    assert f"{tmp_path / 'nope.pem'}: cannot read CA certificates" in done.stderr
    assert '"event": "listening"' not in done.stderr


def test_every_zone_problem_is_on_a_line_of_its_own(tmp_path):
    bad = write_zone(tmp_path / "zones", "[zone]\norigin = \"a.example\"\nttl = -1\n"
                     "negative_ttl = \"x\"\n")
    done = serve(bad, "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0")
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if "startup_problem" in line]
    assert len(problems) >= 2
    assert all(re.search(r"test\.example\.com\.toml:\d: zone\.", line) for line in problems)


@pytest.mark.parametrize(("code", "port", "hint"), [
    (errno.EACCES, 53, "needs CAP_NET_BIND_SERVICE: the systemd unit grants it"),
    (errno.EADDRNOTAVAIL, 5300, "no interface of this machine has that address"),
])
def test_bind_errors_carry_a_hint(code, port, hint):
    def refuse(host: str, p: int) -> None:
        raise OSError(code, "refused")
    with pytest.raises(ListenError, match=rf"admin 192\.0\.2\.1:{port}: refused; .*") as e:
        _named("admin", ("192.0.2.1", port), refuse)
    assert hint in str(e.value)


def test_router_process_still_starts_on_port_zero_twice(zones):
    """Port 0 claims nothing: two routers on free ports never collide."""
    a, b = RouterProcess(zones), RouterProcess(zones)
    try:
        assert a.http_port != b.http_port
    finally:
        assert a.stop() == 0 and b.stop() == 0
