"""Bounded resources, black-box: idle keep-alive connections are closed, requests with
too many or too large header lines are refused, and the DNS UDP buffer is asked for."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone, wait_until
from tests.test_dns import ZONE, addresses, ask
from tests.test_http import FILE, request, xff


@pytest.fixture(scope="module")
def limited(tmp_path_factory, city_mirrors):
    zones = write_zone(tmp_path_factory.mktemp("zones"), five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--keepalive", "1")
    yield router
    assert router.stop() == 0


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        return s.recv(65536)


@pytest.mark.timing
def test_an_idle_keepalive_connection_is_closed(limited):
    with socket.create_connection(("127.0.0.1", limited.http_port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        idle = time.monotonic()
        assert s.recv(4096) == b""  # the server hung up ...
        assert time.monotonic() - idle < 1.0 + 5.0  # ... after --keepalive 1, not an hour


def test_too_many_header_lines_are_refused(limited):
    headers = b"".join(b"X-%d: y\r\n" % i for i in range(41))
    reply = _exchange(limited.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers
                      + b"\r\n")
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"431")
    ok = b"".join(b"X-%d: y\r\n" % i for i in range(30))
    assert _exchange(limited.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + ok
                     + b"\r\n").startswith(b"HTTP/1.1 200")


def test_a_header_line_over_4_kib_is_refused(limited):
    big = b"X-Big: " + b"a" * 5000 + b"\r\n"
    reply = _exchange(limited.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big
                      + b"\r\n")
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"431")
    assert _exchange(limited.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     ).startswith(b"HTTP/1.1 200")  # and the server goes on


def test_the_udp_receive_buffer_is_asked_for_and_the_log_says_what_was_given(limited):
    (line,) = limited.find("udp_receive_buffer")
    assert line["asked"] == 4 << 20 and line["granted"] > 0
    assert line["capped"] is (line["granted"] < line["asked"])


def test_malformed_requests_log_one_json_line_and_then_a_count(limited):
    """aiohttp's report of a malformed request goes through structlog (one JSON line, no
    traceback), and the same report again within 10 s is counted, not written."""
    bad = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
    for _ in range(30):
        _exchange(limited.http_port, bad)
    def reports() -> list[dict]:  # one kind: the earlier tests' 400s are of it too
        return [e for e in limited.events
                if str(e.get("event", "")).startswith("Error handling request from")]
    wait_until(reports, 10, what="the report of a malformed request")
    assert all(r["logger"] == "aiohttp.server" and "exception" not in r and r["error"]
               for r in reports())
    assert all(line.startswith("{") for line in limited.raw)  # every line is JSON

    def counted() -> bool:
        _exchange(limited.http_port, bad)
        later = reports()
        return len(later) > 1 and later[-1].get("suppressed", 0) >= 29
    wait_until(counted, 30, interval=0.5, what="the next report with the count")


def test_malformed_requests_from_many_addresses_are_one_kind_and_all_counted(limited):
    """aiohttp names the sender in its report, which made each address its own kind: 60
    senders wrote 60 lines (3,000 wrote 3,000). Now they are one line, and every 400 is
    in http_responses_total (aiohttp answered them before any handler of ours)."""
    from tests.test_observability import scrape, value

    bad = b"GET / HTTP/1.1\r\nHost: x\r\nAlso Bad\r\n\r\n"
    before = value(scrape(limited), "mirror_router_http_responses_total", status="400")
    for n in range(60):
        with socket.create_connection(("127.0.0.1", limited.http_port), timeout=10,
                                      source_address=(f"127.0.2.{n + 1}", 0)) as s:
            s.sendall(bad)
            assert s.recv(65536).split(b"\r\n")[0].endswith(b" 400 Bad Request")
    wait_until(lambda: value(scrape(limited), "mirror_router_http_responses_total",
                             status="400") >= before + 60, 10, what="every 400 counted")
    lines = [e for e in limited.events if str(e.get("event", "")).startswith(
        "Error handling request from 127.0.2.")]
    assert len(lines) <= 1, lines


def test_only_http_1_is_served_and_connect_is_not_allowed(limited):
    """An HTTP/0.9 request line ("GET /f") and an HTTP/2.0 one got a 302; CONNECT got 404."""
    for line in (b"GET /" + FILE.encode() + b"\r\n\r\n",
                 b"GET /" + FILE.encode() + b" HTTP/2.0\r\nHost: x\r\n\r\n"):
        status = _exchange(limited.http_port, line).split(b"\r\n")[0]
        assert status.endswith(b" 505 HTTP Version Not Supported"), status
    reply = _exchange(limited.http_port,
                      b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 405 Method Not Allowed"), reply
    assert b"Allow: GET,HEAD" in reply


def test_console_lines_escape_control_bytes():
    import subprocess
    import sys

    code = ("from router import log; log.configure('console'); import structlog; "
            "structlog.get_logger('t').warning('bad_value', value='a\\x00b\\x1b[31m')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent).stderr
    assert "value=a\\x00b\\x1b[31m" in err and "\x00" not in err and "\x1b" not in err


def test_the_rate_limit_counts_what_it_drops():
    from router.log import RateLimit
    now = [0.0]
    limit = RateLimit(quiet=10.0, clock=lambda: now[0])
    assert limit.admit("a", "boom") == 0  # the first: written
    assert [limit.admit("a", "boom") for _ in range(3)] == [None, None, None]
    assert limit.admit("a", "other") == 0  # another kind: written
    now[0] = 10.5
    assert limit.admit("a", "boom") == 3  # written, with the count left out
    assert limit.admit("a", "boom") is None


def test_a_zone_file_that_hangs_stops_nothing(tmp_path, city_mirrors):
    """A FIFO in place of the zone file: the reload's read hangs in a thread of its own;
    DNS and HTTP go on with the old config, and the process still stops at once."""
    import os
    import signal

    from tests.test_dns import ZONE, addresses, ask
    from tests.test_http import request
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones)
    try:
        (zones / "test.example.com.toml").unlink()
        os.mkfifo(zones / "test.example.com.toml")  # opening it for reading blocks
        router.signal(signal.SIGHUP)
        for _ in range(20):  # served all along, by the old config
            assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.2"]
            assert request(router.http_port, "/healthz").status == 200
    finally:
        assert router.stop(timeout=15) == 0  # the hung read does not hold the exit


def test_files_that_are_no_regular_files_are_refused_at_once(tmp_path, city_mirrors):
    """A zone file and a state file that are /dev/zero (a symlink, or a FIFO): each is
    refused within a second, naming the file and what it is, with no memory taken
    (a read of /dev/zero grew the process by 500 MB/s), and the old config and
    overrides keep serving."""
    import os
    import signal

    from tests.test_dns import ZONE, addresses, ask
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    state = tmp_path / "state.toml"
    state.write_text('[targets]\nfra = "drain"\n')
    router = RouterProcess(zones, "--state", str(state))
    try:
        router.wait_for("state_loaded")
        rss = _rss_mb(router.proc.pid)
        zone = zones / "test.example.com.toml"
        zone.unlink()
        zone.symlink_to("/dev/zero")
        started = time.monotonic()
        router.signal(signal.SIGHUP)
        failed = router.wait_for("reload_failed", 5)
        assert time.monotonic() - started < 1.5
        assert "a character device, not a regular file" in json.dumps(failed), failed
        assert str(zone) in json.dumps(failed)
        state.unlink()
        os.mkfifo(state)  # the state file is looked at every second
        invalid = router.wait_for("state_file_invalid", 5)
        assert "a FIFO, not a regular file" in invalid["error"], invalid
        assert invalid["keeping"] == {"fra": "drain"}
        state.unlink()
        state.symlink_to("/dev/zero")
        invalid = router.wait_for("state_file_invalid", 5, count=2)
        assert "a character device" in router.find("state_file_invalid")[-1]["error"]
        assert _rss_mb(router.proc.pid) < rss + 20
        assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.2"]
    finally:
        assert router.stop(timeout=15) == 0


def test_a_fleet_cache_that_is_dev_zero_is_refused_at_once(tmp_path, city_mirrors):
    """The fleet's cache of overrides (read at start, before the store answers) as a
    symlink to /dev/zero: refused at once, the node starts and serves."""
    from tests.test_dns import ZONE, addresses, ask
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    state = tmp_path / "state.toml"
    (tmp_path / "fleet-mirror-router.json").symlink_to("/dev/zero")
    with socket.socket() as s:  # a store address nobody answers on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    router = RouterProcess(zones, "--fleet", f"redis://127.0.0.1:{dead}/0", "--node", "n1",
                           "--state", str(state))
    try:
        invalid = router.wait_for("fleet_cache_invalid", 5)
        assert "a character device, not a regular file" in invalid["error"], invalid
        assert _rss_mb(router.proc.pid) < 200
        assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24))) == ["192.0.2.2"]
    finally:
        assert router.stop(timeout=15) == 0


def test_a_file_over_its_limit_is_refused_with_the_limit_named(tmp_path):
    from router.core import reading

    big = tmp_path / "k.key"
    big.write_bytes(b"x" * (reading.LIMITS["DNSSEC key"] + 1))
    with pytest.raises(reading.Unreadable, match="over the 64 KiB limit of a DNSSEC key"):
        reading.read_text(big, "DNSSEC key")
    with pytest.raises(reading.Unreadable, match="a folder, not a regular file"):
        reading.read_bytes(tmp_path, "zone file")


def _query(name: str = "test.example.com.", qid: int = 1) -> bytes:
    import dns.message

    q = dns.message.make_query(name, "TXT")
    q.id = qid
    wire = q.to_wire()
    return struct.pack("!H", len(wire)) + wire


def test_dns_tcp_honours_the_backlog_and_bounds_what_an_unread_client_holds(tmp_path,
                                                                            city_mirrors):
    """The DNS-over-TCP listener listens with --backlog (it was always 100); a client
    that sends queries and never reads the replies is reset once its replies have waited
    --tcp-idle (here 2 s), counted, with no orphan socket left holding them."""
    import subprocess

    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--backlog", "2048", "--tcp-idle", "2")
    try:
        ss = subprocess.run(["ss", "-Hltn", f"sport = :{router.dns_port}"],
                            capture_output=True, text=True, check=True).stdout.split()
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert int(ss[2]) == min(2048, somaxconn), ss  # Send-Q of a listener: its backlog
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", router.dns_port))
        c.settimeout(0.05)
        burst = b"".join(_query(qid=n) for n in range(200))
        sent = 0
        with contextlib.suppress(TimeoutError, BlockingIOError, OSError):
            for _ in range(2000):  # until the server stops reading (its replies unread)
                sent += c.send(burst)
        assert sent > 0
        wait_until(lambda: _errors(router).get("dns_tcp_unread_closed", 0) >= 1, 15,
                   what="the client that does not read to be closed")
        with pytest.raises(ConnectionResetError):
            c.settimeout(5)
            while c.recv(1 << 20):
                pass
        c.close()
        assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24), tcp=True)) == \
            ["192.0.2.2"]
    finally:
        assert router.stop() == 0


def test_a_new_dns_tcp_client_is_not_the_first_evicted_by_drippers(tmp_path, city_mirrors):
    """Eight connections dripping a query a byte at a time fill a pool of eight; a new
    client connects (and has not spoken yet) and another dripper comes: the slowest
    dripper makes room, and the new client's query is answered."""
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--tcp-max", "8", "--tcp-per-client", "16",
                           "--tcp-idle", "30")
    drippers: list[socket.socket] = []
    try:
        def drip() -> socket.socket:
            d = socket.create_connection(("127.0.0.1", router.dns_port), timeout=5)
            d.send(_query()[:1])
            drippers.append(d)
            return d

        for _ in range(8):
            drip()
        time.sleep(0.6)  # time, not state: the drippers' messages older than SLOW_MESSAGE
        new = socket.create_connection(("127.0.0.1", router.dns_port), timeout=5)
        drip()  # another dripper: someone must make room
        new.sendall(_query(qid=7))
        reply = new.recv(4096)
        assert len(reply) > 14 and reply[2:4] == b"\x00\x07", reply
        assert sum(1 for d in drippers if _closed(d)) >= 1
        new.close()
    finally:
        for d in drippers:
            d.close()
        assert router.stop() == 0


# ---------------------------------------------------------------- slow senders, fd floods


@pytest.mark.timing
def test_headers_trickled_in_are_cut_off_by_the_keepalive_timer(limited):
    """Slowloris: a byte of header every 0.2 s never completes a request; the connection
    is closed once --keepalive (1 s) has passed since it opened, bytes or not."""
    with socket.create_connection(("127.0.0.1", limited.http_port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        opened = time.monotonic()
        s.settimeout(0.2)
        closed = None
        while closed is None and time.monotonic() - opened < 15:
            with contextlib.suppress(OSError):
                s.sendall(b"X")  # the trickle (a reset once closed is the end too)
            try:
                closed = s.recv(1024) == b"" and time.monotonic()
            except TimeoutError:
                continue
            except OSError:
                closed = time.monotonic()
        assert closed, "a trickling client was never closed"
        assert closed - opened < 1 + 5  # the timer, and room for a loaded machine


PRLIMIT = shutil.which("prlimit")


@pytest.mark.skipif(PRLIMIT is None, reason="needs prlimit (util-linux)")
def test_a_flood_of_idle_connections_never_takes_the_checks_descriptors(tmp_path, city_mirrors):
    """Under a 1,024-descriptor limit, 1,100 idle HTTP connections: the oldest idle ones
    are closed to admit new ones, every target stays up (the checks keep their
    descriptors), a real client gets its 302 and DNS over TCP answers a new client."""
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors, interval="0.3s"))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1",
                           prefix=(str(PRLIMIT), "--nofile=1024:1024"))
    flood: list[socket.socket] = []
    try:
        limits = router.wait_for("http_limits")
        assert limits["open_files"] == 1024 and limits["http_max"] == 1024 - 256 - 512
        for _ in range(1100):
            flood.append(socket.create_connection(("127.0.0.1", router.http_port), timeout=10))
        counted = _probes(router)
        wait_until(lambda: _probes(router) >= counted + 5 * 3, 15,
                   what="three more probe rounds during the flood")
        r = request(router.http_port, "/" + FILE, xff("1.0.16.1"))
        assert r.status == 302 and r.location.startswith(city_mirrors["tyo"].base)
        assert addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24), tcp=True)) == ["192.0.2.2"]
        changes = [e for e in router.find("target_state") if e["old"] != "unknown"]
        assert not changes, changes
        assert not router.find("probe_not_made")
        closed = sum(1 for s in flood if _closed(s))
        assert closed >= 1100 - limits["http_max"], closed
    finally:
        for s in flood:
            s.close()
        assert router.stop() == 0


def _probes(router: RouterProcess) -> float:
    from tests.test_observability import scrape

    return sum(v for k, v in scrape(router).get("mirror_router_probes_total", {}).items())


def _closed(s: socket.socket) -> bool:
    s.settimeout(0.01)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


GIANT = b"GET / HTTP/1.1\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"a" * 4000)
                                       for i in range(39))  # never finished
GIANT_BOUND_MB = 160  # 600 such connections, on top of the start (the default budget: 128 MiB)


def _rss_mb(pid: int) -> float:
    status = (Path("/proc") / str(pid) / "status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_memory_comes_back_after_floods_of_refused_requests(tmp_path, city_mirrors):
    """600 connections each sending an over-limit (8 KB) header line, then 100 huge
    request lines: each refused with 400. RSS went 66 -> 254 MB and stayed (the refusals'
    exception cycles held the read buffers, and memory went back to the system only
    after 64 closes within 2 s); now it is back within 20 % of the start."""
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones)
    try:
        pid = router.proc.pid
        request(router.http_port, "/" + FILE, xff("1.0.16.1"))  # warmed up
        before = _rss_mb(pid)
        over = b"GET / HTTP/1.1\r\nHost: x\r\nX-Over: " + b"a" * 8192 + b"\r\n\r\n"
        huge = b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        for flood, count in ((over, 600), (huge, 100)):
            held = []
            for i in range(1, count + 1):
                s = socket.create_connection(("127.0.0.1", router.http_port), timeout=5,
                                             source_address=(f"127.4.{i >> 8}.{i & 255}", 0))
                with contextlib.suppress(OSError):
                    s.sendall(flood)
                held.append(s)
            for s in held:
                with contextlib.suppress(OSError):
                    assert s.recv(100).split(b"\r\n")[0].endswith(b"400 Bad Request")
                s.close()
        wait_until(lambda: _rss_mb(pid) <= before * 1.2, 40, interval=1,
                   what=f"RSS back within 20% of {before:.0f} MB ({_rss_mb(pid):.0f} MB)")
    finally:
        assert router.stop() == 0


def test_unfinished_heads_are_bounded_in_all_by_the_header_budget(tmp_path, city_mirrors):
    """600 connections each holding a 156 KB unfinished head under --header-budget 8
    (MiB): the oldest are closed once the heads hold more than 8 MiB together (before,
    only the descriptor budget bounded them: 3,000 such connections held 1 GB), and a
    real client still gets its redirect."""
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1", "--header-budget", "8")
    conns = []
    try:
        assert router.wait_for("http_limits")["header_budget_mib"] == 8
        before = _rss_mb(router.proc.pid)
        for i in range(1, 601):
            s = socket.create_connection(("127.0.0.1", router.http_port), timeout=5,
                                         source_address=(f"127.5.{i >> 8}.{i & 255}", 0))
            with contextlib.suppress(OSError):
                s.sendall(GIANT)
            conns.append(s)
        wait_until(lambda: _errors(router).get("http_header_budget", 0) >= 500, 15,
                   what="the oldest unfinished heads closed")
        assert _rss_mb(router.proc.pid) - before < 60
        assert sum(1 for s in conns[:400] if _closed(s)) >= 390  # the oldest went first
        r = request(router.http_port, "/" + FILE, xff("1.0.16.1"))
        assert r.status == 302
    finally:
        for s in conns:
            s.close()
        assert router.stop() == 0


def test_giant_unfinished_headers_cost_a_bounded_memory_that_comes_back(limited):
    pid = limited.proc.pid
    before = _rss_mb(pid)
    conns = []
    try:
        for i in range(1, 601):
            s = socket.create_connection(("127.0.0.1", limited.http_port), timeout=5,
                                         source_address=(f"127.3.{i >> 8}.{i & 255}", 0))
            with contextlib.suppress(OSError):  # the router may close the oldest first
                s.sendall(GIANT)
            conns.append(s)
        peak = _rss_mb(pid)
        assert peak - before < GIANT_BOUND_MB, (before, peak)
    finally:
        for s in conns:
            s.close()
    wait_until(lambda: _rss_mb(pid) <= before * 1.2, 20,
               what=f"RSS back within 20% of {before:.0f} MB (peak {peak:.0f} MB)")


def _https_router(tmp_path: Path, city_mirrors, *extra: str, prefix: tuple[str, ...] = ()
                  ) -> tuple[RouterProcess, Path]:
    from tests.tls import make_ca

    (tmp_path / "pki").mkdir()
    pki = make_ca(tmp_path / "pki")
    # the city mirrors are http://: an HTTPS client may be sent there only so
    zones = write_zone(tmp_path / "zones", five_city_zone(
        city_mirrors, interval="0.3s", downloads_keys="allow_downgrade = true"))
    router = RouterProcess(zones, "--https", "127.0.0.1:0", "--trusted-proxy", "127.0.0.1",
                           "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), *extra,
                           prefix=prefix)
    return router, pki.ca


def _https_get(port: int, ca: Path) -> int:
    import http.client
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", "/" + FILE, headers={"X-Forwarded-For": "1.0.16.1"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def _silent(port: int, count: int, sources: int) -> list[socket.socket]:
    """``count`` TCP connections to ``port`` that never send a byte (no ClientHello),
    from ``sources`` loopback addresses (127.0.1.1 onwards)."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10,
                                     source_address=(f"127.0.1.{1 + n % sources}", 0))
            for n in range(count)]


def _errors(router: RouterProcess) -> dict[str, float]:
    from tests.test_observability import scrape

    found = scrape(router).get("mirror_router_errors_total", {})
    return {dict(k)["where"]: v for k, v in found.items()}


@pytest.mark.skipif(PRLIMIT is None, reason="needs prlimit (util-linux)")
def test_tls_connections_that_never_say_hello_are_counted_from_accept(tmp_path, city_mirrors):
    """Under a 1,500-descriptor limit, 1,600 connections to the HTTPS listener that never
    send a ClientHello (handshake timeout raised to a minute, so that only the cap can
    help): legitimate HTTP, HTTPS and DNS-over-TCP all answer (>= 95 %), and no probe
    fails (before the cap counted handshakes, 6 % got through and probes hit EMFILE)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    router, ca = _https_router(tmp_path, city_mirrors, "--tls-handshake-timeout", "60",
                               prefix=(str(PRLIMIT), "--nofile=1500:1500"))
    flood: list[socket.socket] = []
    try:
        limits = router.wait_for("http_limits")
        assert limits["open_files"] == 1500 and limits["tls_handshake_timeout"] == 60
        https = router.https_port
        counted = _probes(router)
        flood = _silent(https, 1600, sources=40)  # 40 a source: under the per-address cap
        wait_until(lambda: _probes(router) >= counted + 5 * 3, 20,
                   what="three more probe rounds during the flood")
        ok = {"http": 0, "https": 0, "dns-tcp": 0}
        for _ in range(40):
            ok["https"] += _https_get(https, ca) == 302
            ok["http"] += request(router.http_port, "/" + FILE, xff("1.0.16.1")).status == 302
            ok["dns-tcp"] += addresses(ask(router, ZONE, "A", ecs=("1.0.16.0", 24),
                                           tcp=True)) == ["192.0.2.2"]
        assert all(n >= 38 for n in ok.values()), ok
        changes = [e for e in router.find("target_state") if e["old"] != "unknown"]
        assert not changes, changes
        assert not router.find("probe_not_made")
        errors = _errors(router)
        assert errors.get("tls_handshake_evicted", 0) >= 1600 - limits["http_max"], errors
        assert sum(1 for s in flood if _closed(s)) >= 1600 - limits["http_max"]
    finally:
        for s in flood:
            s.close()
        assert router.stop() == 0


def test_a_silent_tls_connection_is_closed_after_the_handshake_timeout_and_per_address(
        tmp_path, city_mirrors):
    """A connection that sends no ClientHello is closed --tls-handshake-timeout after
    accept; past 64 unfinished handshakes from one address, its oldest are closed; and a
    real client on the same listener gets its redirect meanwhile."""
    router, ca = _https_router(tmp_path, city_mirrors, "--tls-handshake-timeout", "1")
    held: list[socket.socket] = []
    try:
        https = router.https_port
        held = _silent(https, 70, sources=1)
        assert _https_get(https, ca) == 302
        wait_until(lambda: _errors(router).get("tls_handshakes_per_address", 0) >= 6, 10,
                   what="the oldest handshakes from one address closed")
        started = time.monotonic()
        wait_until(lambda: all(_closed(s) for s in held), 15, what="every silent one closed")
        assert time.monotonic() - started < 10
        assert _errors(router).get("tls_handshake_timeout", 0) >= 60
        assert _https_get(https, ca) == 302
    finally:
        for s in held:
            s.close()
        assert router.stop() == 0
