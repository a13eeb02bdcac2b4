"""Real parts for black-box tests: the router as a subprocess, mirrors as aiohttp servers.

Everything listens on 127.0.0.1 with port 0. Nothing here sends traffic off the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``.

    Every poll starts before the deadline: a truthy answer from a poll that started
    after it does not count, so a bound is a bound even when polls are slow."""
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        if started > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


class RouterProcess:
    """``mirror-router serve`` in a subprocess, with its JSON log lines collected."""

    def __init__(self, zones: Path, *args: str, ready_timeout: float = 30.0,
                 env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> None:
        self.zones = zones
        cmd = [*prefix, sys.executable, "-m", "router", "serve", "--zones", str(zones),
               "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-format", "json", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            ready = self.wait_for("ready", ready_timeout)
        except BaseException:
            self.stop()  # never leave a router (and its workers) running behind a failure
            raise
        self.dns_port = int(ready["dns"][0].rsplit(":", 1)[1])
        self.http_port = int(ready["http"][0].rsplit(":", 1)[1]) if ready["http"] else 0
        self.admin_port = _first_port(ready.get("admin"))
        self.https_port = _first_port(ready.get("https"))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))

    def find(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == event]

    def wait_for(self, event: str, timeout: float = 10.0, count: int = 1) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            found = self.find(event)
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"router exited ({self.proc.returncode}) before "
                                     f"{event!r}:\n{''.join(self.raw)}")
            return None
        try:
            return wait_until(seen, timeout, what=f"log event {event!r}")
        except AssertionError as e:
            with self._lock:
                tail = "".join(self.raw[-40:])
            raise AssertionError(f"{e}; the router's log ends:\n{tail}") from None

    def wait_for_overrides(self, expected: dict[str, str], timeout: float = 10.0) -> None:
        """Until the router says it applied exactly these overrides from its state file."""
        def applied() -> bool:
            loaded = self.find("state_loaded")
            return bool(loaded) and loaded[-1]["overrides"] == expected
        wait_until(applied, timeout, what=f"the router to apply the overrides {expected}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def _first_port(addresses: list[str] | None) -> int:
    return int(addresses[0].rsplit(":", 1)[1]) if addresses else 0


class Mirror:
    """One loopback HTTP mirror. ``.../health`` answers ``health_status``; files from ``files``.

    It can be made slow (``delay``), unhealthy (``health_status = 503``), or stopped and
    started again on the same port (connection refused in between). Files are looked up by
    path and query first (an origin's ``/dl/?mode=json``), then by path; ``Range`` requests
    get 206. ``requests`` logs (method, path) and ``most_active`` the most requests that
    were in flight at once.
    """

    def __init__(self, farm: MirrorFarm, name: str, tls: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        self.farm = farm
        self.name = name
        self.health_status = 200
        self.failing_for: set[str] = set()  # fleet nodes whose health checks get 503
        self.delay = 0.0
        self.body = f"{name}\n"  # what .../health answers
        self.agents: list[str] = []  # the User-Agent of every request
        self.tls = tls
        self.host = host  # the name in ``base``; it always listens on 127.0.0.1
        self.head_delay = 0.0  # HEAD requests only: a mirror slow to answer file checks
        self.heads_active = 0
        self.most_heads_active = 0
        self.files: dict[str, bytes] = {}
        self.hits: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.active = 0
        self.most_active = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._also: list[web.TCPSite] = []  # the same mirror on other addresses

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        self.requests.append((request.method, request.path))
        self.agents.append(request.headers.get("User-Agent", ""))
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        head = request.method == "HEAD"
        self.heads_active += head
        self.most_heads_active = max(self.most_heads_active, self.heads_active)
        try:
            if self.delay or (head and self.head_delay):
                await asyncio.sleep(self.head_delay if head else self.delay)
            return self._answer(request)
        finally:
            self.active -= 1
            self.heads_active -= head

    def heads(self, path: str | None = None) -> int:
        """HEAD requests received (for ``path`` only, when given)."""
        return sum(1 for m, p in list(self.requests) if m == "HEAD" and path in (None, p))

    def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/health"):
            agent = request.headers.get("User-Agent", "")
            if any(f"node {n};" in agent for n in self.failing_for):
                return web.Response(status=503, text="failing for this node\n")
            return web.Response(status=self.health_status, text=self.body)
        body = self.files.get(request.path_qs, self.files.get(request.path))
        if body is None:
            return web.Response(status=404, text="not found\n")
        first, last = _byte_range(request.headers.get("Range"), len(body))
        if first is None:
            return web.Response(body=body, content_type="application/octet-stream",
                                headers={"Accept-Ranges": "bytes"})
        return web.Response(status=206, body=body[first:last + 1],
                            content_type="application/octet-stream",
                            headers={"Content-Range": f"bytes {first}-{last}/{len(body)}"})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True,
                           ssl_context=self.tls)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> Mirror:
        self.farm.run(self._start())
        return self

    def listen_also(self, address: str, tls: ssl.SSLContext | None = None) -> None:
        """Serve on ``address`` too, same port (``tls``: another certificate there)."""
        async def start() -> None:
            assert self._runner is not None
            site = web.TCPSite(self._runner, address, self.port, reuse_address=True,
                               ssl_context=tls or self.tls)
            await site.start()
            self._also.append(site)
        self.farm.run(start())

    def unlisten_also(self) -> None:
        """Stop serving on the addresses of ``listen_also``."""
        async def stop() -> None:
            for site in self._also:
                await site.stop()
            self._also.clear()
        self.farm.run(stop())

    def stop(self) -> None:
        self.farm.run(self._stop())


def _byte_range(header: str | None, size: int) -> tuple[int | None, int]:
    """``bytes=A-B`` or ``bytes=A-`` → (first, last); (None, 0) for no or another range."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None, 0
    a, _, b = header[6:].partition("-")
    if not a.isdigit() or int(a) >= size:
        return None, 0
    return int(a), min(int(b), size - 1) if b.isdigit() else size - 1


class MirrorFarm:
    """An event loop in a background thread that runs any number of mirrors."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.mirrors: list[Mirror] = []

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def mirror(self, name: str, tls: ssl.SSLContext | None = None,
               host: str = "127.0.0.1") -> Mirror:
        m = Mirror(self, name, tls, host).start()
        self.mirrors.append(m)
        return m

    def close(self) -> None:
        for m in self.mirrors:
            m.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def release_list(releases: list[tuple[str, bool, dict[str, bytes]]],
                 wrong_sha256: frozenset[str] = frozenset()) -> bytes:
    """A Go release list (go.dev/dl/?mode=json&include=all) for ``(version, stable, files)``.

    Each file's sha256 and size are those of its bytes, except for names in
    ``wrong_sha256``, which get the hash of other bytes (a listed hash no copy matches).
    """
    out = []
    for version, stable, files in releases:
        entries = []
        for name, body in files.items():
            parts = name.removeprefix(version + ".").split(".")[0].split("-")
            source = parts == ["src"]
            digest = hashlib.sha256(body + b"x" if name in wrong_sha256 else body).hexdigest()
            entries.append({"filename": name, "os": "" if source else parts[0],
                            "arch": "" if source else parts[-1], "version": version,
                            "sha256": digest, "size": len(body),
                            "kind": "source" if source else "archive"})
        out.append({"version": version, "stable": stable, "files": entries})
    return json.dumps(out, indent=1).encode()


LIST_PATH = "/dl/?mode=json&include=all"  # where a loopback origin serves its release list


def downloads_zone(origin: Mirror, mirrors: dict[str, Mirror], service_keys: str) -> str:
    """A zone whose ``downloads`` service has a catalog at ``origin`` (the anycast fallback)
    and the given mirrors, each in the city of ``CITIES`` its id names, under ``/go/``."""
    targets = "".join(f'''
[[services.downloads.targets]]
id = "{tid}"
url = "{m.base}/go/"
location = {{ lat = {CITIES[tid][1]}, lon = {CITIES[tid][2]} }}
country = "{CITIES[tid][3]}"
''' for tid, m in mirrors.items())
    return f'''
[zone]
origin = "dl.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.com"

[services.downloads]
http_prefix = "/"
fallback = ["origin"]
km_per_ms = 0
{service_keys}
catalog.url = "{origin.base}{LIST_PATH}"

[[services.downloads.targets]]
id = "origin"
url = "{origin.base}/go/"
location = "anycast"
{targets}'''


# The five-city test zone (the same mirrors as ../shared/peers/mirrors.txt).
CITIES = {
    "bj": ("Beijing", 39.90, 116.40, "CN", 1),
    "tyo": ("Tokyo", 35.68, 139.69, "JP", 2),
    "fra": ("Frankfurt", 50.11, 8.68, "DE", 3),
    "iad": ("Ashburn", 39.04, -77.49, "US", 4),
    "gru": ("Sao Paulo", -23.55, -46.63, "BR", 5),
}


def five_city_zone(mirrors: dict[str, Mirror], *, interval: str = "500ms",
                   timeout: str = "500ms", rise: int = 2, fall: int = 2,
                   extra_service: str = "", extra_records: str = "",
                   km_per_ms: float = 0, suspect_interval: str | None = None,
                   downloads_keys: str = "") -> str:
    """A zone steering test.example.com among the five cities, each probed on loopback.

    ``km_per_ms`` is 0 by default: tests of geography must not be reordered by a loaded
    test machine's timing; tests of latency pricing turn it on.
    """
    health = (f'path = "/health", interval = "{interval}", timeout = "{timeout}", '
              f"rise = {rise}, fall = {fall}")
    if suspect_interval is not None:
        health += f', suspect_interval = "{suspect_interval}"'
    targets = []
    for tid, (city, lat, lon, country, n) in CITIES.items():
        targets.append(f'''
[[services.downloads.targets]]
id = "{tid}"   # {city}
url = "{mirrors[tid].base}/dl/"
health_url = "{mirrors[tid].base}/health"
location = {{ lat = {lat}, lon = {lon} }}
country = "{country}"
addresses = ["192.0.2.{n}", "2001:db8::{n}"]
''')
    return f'''
[zone]
origin = "test.example.com"
nameservers = ["ns1.test.example.com", "ns2.elsewhere.example.net"]
hostmaster = "hostmaster@example.com"
ttl = 300
negative_ttl = 60
serial = 2024010101

[[zone.records]]
name = "ns1"
type = "A"
data = "198.51.100.53"

[[zone.records]]
name = "@"
type = "TXT"
data = "hello"

[[zone.records]]
name = "@"
type = "MX"
data = "10 mail.example.net"

[[zone.records]]
name = "big"
type = "TXT"
data = [{", ".join(f'"{"x" * 200} {i}"' for i in range(12))}]

[[zone.records]]
name = "medium"
type = "TXT"
data = [{", ".join(f'"{"y" * 200} {i}"' for i in range(3))}]

[[zone.records]]
name = "alias"
type = "CNAME"
data = "test.example.com"

[[zone.records]]
name = "_sip._tcp.deep"
type = "SRV"
data = "10 5 5060 sip.example.net"

[[zone.records]]
name = "sub"
type = "NS"
data = "ns.sub.test.example.com"

[[zone.records]]
name = "ns.sub"
type = "A"
data = "198.51.100.99"
{extra_records}
[services.downloads]
dns_names = ["@", "www"]
http_prefix = "/"
km_per_ms = {km_per_ms}
ttl = 30
default_location = {{ lat = 39.04, lon = -77.49 }}
health = {{ {health} }}
{downloads_keys}
{"".join(targets)}
{extra_service}
'''


class RedisServer:
    """A real ``redis-server`` on a loopback port, no persistence, for fleet tests. It can
    be killed (by its PID) and started again on the same port (empty: no persistence)."""

    def __init__(self, folder: Path, password: str | None = None,
                 replica_of: int | None = None) -> None:
        import socket
        self.folder, self.password, self.replica_of = folder, password, replica_of
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--protected-mode", "no",
             "--loglevel", "warning",
             *(("--requirepass", self.password) if self.password else ()),
             *(("--replicaof", "127.0.0.1", str(self.replica_of)) if self.replica_of else ())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.client().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start within 20 s")

    def client(self) -> Any:
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           password=self.password)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.kill()


class SentinelServer:
    """A real ``redis-sentinel`` on a loopback port, watching ``service`` at ``primary``
    (quorum 1: the only sentinel decides), quick to fail over for tests."""

    def __init__(self, folder: Path, primary: int, service: str = "mirrors") -> None:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.service = service
        conf = folder / f"sentinel-{self.port}.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\n"
                        f"dir {folder}\nsentinel monitor {service} 127.0.0.1 {primary} 1\n"
                        f"sentinel down-after-milliseconds {service} 1000\n"
                        f"sentinel failover-timeout {service} 5000\n")
        self.proc = subprocess.Popen(["redis-sentinel", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.primary() == primary, 20, what="the sentinel to see the primary")

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def primary(self) -> int | None:
        import redis
        try:
            found = redis.Redis(port=self.port, socket_timeout=2).execute_command(
                "SENTINEL", "get-master-addr-by-name", self.service)
        except Exception:
            return None
        return int(found[1]) if found else None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


# ---------------------------------------------------------------- Go module proxies


def module_files(module: str, versions: list[str], name: str = "m.go") -> dict[str, bytes]:
    """The GOPROXY tree of a one-file module at ``versions``, as a proxy serves it."""
    files = {f"/{module}/@v/list": "".join(f"{v}\n" for v in versions).encode()}
    for version in versions:
        mod = f"module {module}\n\ngo 1.19\n".encode()
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr(f"{module}@{version}/go.mod", mod)
            z.writestr(f"{module}@{version}/{name}", b"package m\n\nconst V = 1\n")
        base = f"/{module}/@v/{version}"
        files |= {base + ".info": json.dumps({"Version": version,
                                              "Time": "2024-01-01T00:00:00Z"}).encode(),
                  base + ".mod": mod, base + ".zip": archive.getvalue()}
    files[f"/{module}/@latest"] = files[f"/{module}/@v/{versions[-1]}.info"]
    return files


def proxy_targets(proxies: dict[str, Mirror]) -> str:
    """``[[services.modules.targets]]`` for loopback proxies: Frankfurt, then Ashburn."""
    return "".join(f'''
[[services.modules.targets]]
id = "{name}"
url = "{m.base}/"
health_url = "{m.base}/health"
location = {{ lat = {lat}, lon = {lon} }}
''' for (name, m), (lat, lon) in zip(proxies.items(), [(50.11, 8.68), (39.04, -77.49)],
                                    strict=False))
