"""dnstap: sampled queries and answers to a Frame Streams reader, read back by tools not
written here (``fstrm_capture`` from fstrm-bin writes the stream to a file,
``dnstap-read`` from bind9-dnsutils prints it)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone, wait_until
from tests.test_dns import ZONE, ask
from tests.test_observability import scrape, value

needs_fstrm = pytest.mark.skipif(
    not (shutil.which("fstrm_capture") and shutil.which("dnstap-read")),
    reason="needs fstrm_capture (fstrm-bin) and dnstap-read (bind9-dnsutils)")


def capture(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["fstrm_capture", "-t", "protobuf:dnstap.Dnstap", *args,
                             "-w", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def read(proc: subprocess.Popen[bytes], out: Path) -> list[str]:
    """Stop the capture (it closes its file) and read it with dnstap-read."""
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    done = subprocess.run(["dnstap-read", str(out)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def sent(router: RouterProcess, outcome: str = "sent") -> float:
    return value(scrape(router), "mirror_router_dnstap_total", outcome=outcome)


@needs_fstrm
def test_every_answer_is_read_back_by_dnstap_read(tmp_path, city_mirrors):
    sock, out = tmp_path / "tap.sock", tmp_path / "tap.fstrm"
    cap = capture(["-u", str(sock)], out)
    wait_until(sock.exists, 10, what="fstrm_capture listening")
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--dnstap", f"unix:{sock}")
    try:
        router.wait_for("dnstap_connected")
        for _ in range(5):
            ask(router, ZONE, "A", ecs=("1.0.16.0", 24))
        ask(router, ZONE, "TXT", tcp=True)
        ask(router, ZONE, "MX", tcp=True)
        wait_until(lambda: sent(router) >= 7, 10, what="seven answers sent")
    finally:
        assert router.stop() == 0
    lines = read(cap, out)
    queries = [x for x in lines if " AQ " in x]
    answers = [x for x in lines if " AR " in x]
    assert len(queries) == len(answers) == 7, lines
    assert sum(" UDP " in x and "test.example.com/IN/A" in x for x in answers) == 5
    assert sum(" TCP " in x for x in answers) == 2
    assert all(f"-> 127.0.0.1:{router.dns_port}" in x for x in queries)


@needs_fstrm
def test_sampling_over_tcp_and_a_reader_that_goes_away(tmp_path, city_mirrors):
    """--dnstap-sample 0.25 sends about a quarter of 400 answers; with no reader, answers
    go on and what could not be sent is counted as dropped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "tap.fstrm"
    cap = capture(["-a", "127.0.0.1", "-p", str(port)], out)
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{port}"],
                                      capture_output=True, text=True).stdout.strip(), 10,
               what="fstrm_capture listening")
    router = RouterProcess(zones, "--dnstap", f"tcp:127.0.0.1:{port}", "--dnstap-sample",
                           "0.25")
    try:
        router.wait_for("dnstap_connected")
        for n in range(400):
            ask(router, ZONE, "A", ecs=(f"1.0.{n % 250}.0", 24))
        wait_until(lambda: sent(router) >= 60, 10, what="a quarter of them sent")
        assert 60 <= sent(router) <= 140
        lines = read(cap, out)  # the reader goes away
        assert 120 <= sum(" AR " in x for x in lines) + sum(" AQ " in x for x in lines) <= 280
        def more() -> bool:  # still answered; what cannot be sent is counted
            for n in range(40):
                assert ask(router, ZONE, "A", ecs=(f"2.0.{n}.0", 24)).answer
            return sent(router, "dropped") >= 1
        wait_until(more, 20, what="drops counted")
        assert router.find("dnstap_lost") or router.find("dnstap_unreachable")
    finally:
        assert router.stop() == 0


def test_the_decision_log_says_who_got_what_and_why(tmp_path, city_mirrors):
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--decision-log-sample", "1")
    try:
        ask(router, ZONE, "A", ecs=("1.0.16.0", 24))
        line = router.wait_for("dns_decision")
        assert line["chosen"] == ["tyo"] and line["country"] == "JP"
        assert line["client"].startswith("1.0.16.0/") and line["reason"] == "lowest cost"
        assert line["service"] == "downloads" and line["qtype"] == "A"
    finally:
        assert router.stop() == 0
