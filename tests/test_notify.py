"""systemd's Type=notify, black-box: the router tells $NOTIFY_SOCKET when it is ready,
reloading and stopping, as systemd would read it (one datagram per state change)."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.conftest import write_zone
from tests.harness import RouterProcess, five_city_zone


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    yield path, sock
    sock.close()


def messages(sock: socket.socket, count: int) -> list[dict[str, str]]:
    out = []
    for _ in range(count):
        data = sock.recv(4096).decode()
        out.append(dict(line.split("=", 1) for line in data.splitlines()))
    return out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ready_reloading_and_stopping_reach_systemd(tmp_path, city_mirrors, notify_socket,
                                                     workers):
    path, sock = notify_socket
    zones = write_zone(tmp_path / "zones", five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--workers", workers, env={"NOTIFY_SOCKET": str(path)})
    try:
        (ready,) = messages(sock, 1)  # sent once serving: no worker sends one of its own
        assert ready == {"READY": "1", "STATUS": "serving"}
        router.signal(signal.SIGHUP)
        reloading, again = messages(sock, 2)
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert again == {"READY": "1", "STATUS": "serving"}
        (zones / "test.example.com.toml").write_text("[zone]\norigin = 1\n")  # broken
        router.signal(signal.SIGHUP)
        _reloading, kept = messages(sock, 2)
        assert kept["STATUS"] == "serving the previous config: the reload failed"
    finally:
        assert router.stop() == 0
    assert messages(sock, 1) == [{"STOPPING": "1"}]
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(4096)  # nothing more: not from a worker either
