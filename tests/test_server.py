"""The server's lifecycle, black-box: readiness, reload on SIGHUP, TCP limits, stopping."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import dns.exception
import dns.message
import dns.rcode
import pytest

from tests.conftest import write_zone
from tests.harness import ROOT, RouterProcess, five_city_zone, wait_until
from tests.test_dns import ZONE, addresses, ask


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_ready_only_after_the_first_probe_round(tmp_path, farm):
    mirrors = {tid: farm.mirror(tid) for tid in ("bj", "tyo", "fra", "iad", "gru")}
    mirrors["gru"].delay = 1.5  # the first round has to wait for this one
    zones = write_zone(tmp_path / "zones", five_city_zone(mirrors, timeout="3s", interval="5s"))
    cmd = [sys.executable, "-m", "router", "serve", "--zones", str(zones), "--dns",
           "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-format", "json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        before = [json.loads(proc.stderr.readline())]
        while before[-1]["event"] != "listening":  # the socket set-up is logged first
            before.append(json.loads(proc.stderr.readline()))
        assert [e["event"] for e in before[:-1]] == ["udp_receive_buffer", "http_limits"]
        listening = before[-1]
        port = int(listening["http"][0].rsplit(":", 1)[1])
        started = time.monotonic()
        assert _get(port, "/readyz")[0] == 503
        assert _get(port, "/healthz") == (200, "ok\n")
        events = []
        while not events or events[-1]["event"] != "ready":
            events.append(json.loads(proc.stderr.readline()))
        assert time.monotonic() - started >= 1.0  # it waited for the slow mirror
        names = [e["event"] for e in events]
        assert names == ["target_state"] * 5 + ["first_probe_round", "ready"]
        assert {(e["target"], e["old"], e["new"]) for e in events[:5]} == {
            (t, "unknown", "up") for t in mirrors}
        assert events[5]["checked"] == 5
        assert _get(port, "/readyz") == (200, "ready\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        mirrors["gru"].delay = 0


def test_reload_applies_a_good_config_and_keeps_the_old_one_on_error(tmp_path, farm):
    mirrors = {tid: farm.mirror(tid) for tid in ("bj", "tyo", "fra", "iad", "gru")}
    zones = write_zone(tmp_path / "zones", five_city_zone(mirrors, interval="5s"))
    router = RouterProcess(zones)
    try:
        assert addresses(ask(router, "new." + ZONE, "A")) == []
        good = five_city_zone(mirrors, interval="5s", extra_records=(
            '[[zone.records]]\nname = "new"\ntype = "A"\ndata = "198.51.100.7"\n'))
        write_zone(zones, good)
        router.signal(signal.SIGHUP)
        router.wait_for("reloaded")
        assert addresses(ask(router, "new." + ZONE, "A")) == ["198.51.100.7"]

        bad = good.replace('data = "198.51.100.7"', 'data = "198.51.100.700"')
        write_zone(zones, bad)
        router.signal(signal.SIGHUP)
        failed = router.wait_for("reload_failed")
        assert any("test.example.com.toml" in p and "records[#" in p and "198.51.100.700" in p
                   for p in failed["problems"])
        # The old config keeps serving, steering included.
        assert addresses(ask(router, "new." + ZONE, "A")) == ["198.51.100.7"]
        assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.2"]
    finally:
        assert router.stop() == 0


def test_bad_config_at_start_exits_1_naming_file_key_and_reason(tmp_path):
    zones = write_zone(tmp_path / "zones", '[zone]\norigin = "x.example.com"\nttl = "soon"\n')
    proc = subprocess.run([sys.executable, "-m", "router", "serve", "--zones", str(zones),
                           "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--no-probe"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert re.search(r"test\.example\.com\.toml:\d+: zone\.ttl: must be an integer", proc.stderr)


@pytest.fixture(scope="module")
def tight_tcp(tmp_path_factory, city_mirrors):
    zones = write_zone(tmp_path_factory.mktemp("zones"), five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--tcp-idle", "0.5", "--tcp-max", "3", "--no-probe")
    yield router
    assert router.stop() == 0


def _tcp_query(sock: socket.socket) -> int:
    wire = dns.message.make_query(ZONE, "SOA").to_wire()
    sock.sendall(struct.pack("!H", len(wire)) + wire)
    size = struct.unpack("!H", sock.recv(2))[0]
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return dns.message.from_wire(data).rcode()


@pytest.mark.timing
def test_idle_tcp_connections_are_closed(tight_tcp):
    with socket.create_connection(("127.0.0.1", tight_tcp.dns_port), timeout=3) as s:
        assert _tcp_query(s) == dns.rcode.NOERROR
        started = time.monotonic()
        assert s.recv(1) == b""  # the server hung up
        assert time.monotonic() - started < 0.5 + 2.0


def test_when_full_the_longest_idle_connection_makes_room(tmp_path, city_mirrors):
    """RFC 7766 6.2.3: a new client is not locked out by idle ones; the connection idle
    the longest is closed to admit it, and the others go on. (A router of its own: the
    idle timer is 10 s here, so a loaded machine cannot close the others first.)"""
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--tcp-idle", "10", "--tcp-max", "3", "--no-probe")
    port = router.dns_port
    held = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(3)]
    try:
        for s in held:
            assert _tcp_query(s) == dns.rcode.NOERROR  # held[0] is now the longest idle
        with socket.create_connection(("127.0.0.1", port), timeout=3) as extra:
            assert _tcp_query(extra) == dns.rcode.NOERROR  # admitted at once
        with contextlib.suppress(ConnectionResetError):  # a reset is a close too
            assert held[0].recv(1) == b""  # made room
        assert _tcp_query(held[1]) == dns.rcode.NOERROR  # the others still work
    finally:
        for s in held:
            s.close()
        assert router.stop() == 0


@pytest.mark.timing
def test_a_client_dripping_bytes_is_closed_after_the_message_timeout(tight_tcp):
    """The idle timer starts over only on a whole message: a byte every 0.2 s does not
    keep a connection open past the message timeout (here 0.5 s, as --tcp-idle)."""
    wire = dns.message.make_query(ZONE, "SOA").to_wire()
    frame = struct.pack("!H", len(wire)) + wire
    with socket.create_connection(("127.0.0.1", tight_tcp.dns_port), timeout=3) as s:
        started = time.monotonic()
        closed = False
        for byte in frame:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            s.settimeout(0.2)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
        assert closed, "the drip was never cut off"
        assert time.monotonic() - started < 0.5 + 2.5


def test_one_client_cannot_take_every_connection(tmp_path, city_mirrors):
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--tcp-max", "16", "--tcp-per-client", "4", "--no-probe")
    port = router.dns_port
    mine = [socket.create_connection(("127.0.0.1", port), timeout=3,
                                     source_address=("127.0.0.2", 0)) for _ in range(4)]
    try:
        for s in mine:
            assert _tcp_query(s) == dns.rcode.NOERROR
        with socket.create_connection(("127.0.0.1", port), timeout=3,
                                      source_address=("127.0.0.2", 0)) as fifth, \
                contextlib.suppress(ConnectionResetError):
            assert fifth.recv(1) == b""  # over this client's bound: closed at once
        with socket.create_connection(("127.0.0.1", port), timeout=3,
                                      source_address=("127.0.0.3", 0)) as other:
            assert _tcp_query(other) == dns.rcode.NOERROR  # another client is welcome
    finally:
        for s in mine:
            s.close()
        assert router.stop() == 0


def test_a_pool_full_of_slow_senders_still_admits_a_new_client(tmp_path, city_mirrors):
    """Every slot taken by a client dripping a message (from 16 addresses, so the
    per-client bound does not help): a new client gets the slot of the slowest one long
    before the 5 s message timeout would have freed any."""
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--tcp-max", "16", "--tcp-idle", "10", "--no-probe")
    drips = [socket.create_connection(("127.0.0.1", router.dns_port), timeout=3,
                                      source_address=(f"127.0.4.{i}", 0)) for i in range(1, 17)]
    try:
        for s in drips:
            s.sendall(b"\x00")  # half a length prefix: a message begun, never finished
        started = time.monotonic()

        def answered() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", router.dns_port), timeout=1) as s:
                    return _tcp_query(s) == dns.rcode.NOERROR
            except (OSError, ValueError, struct.error, dns.exception.DNSException):
                return False

        wait_until(answered, 4, interval=0.1, what="a new client answered")
        assert time.monotonic() - started < 4.5  # before any message timeout (5 s)
    finally:
        for s in drips:
            s.close()
        assert router.stop() == 0


def test_sigint_stops_cleanly(tmp_path, city_mirrors):
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--no-probe")
    router.signal(signal.SIGINT)
    assert router.proc.wait(15) == 0
    router.stop()
    assert router.find("stopped")
