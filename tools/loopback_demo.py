"""``make demo``: five loopback mirrors and a router that probes them, with nothing leaving
the machine. The README's ``probe``, ``admin`` and ``/status`` examples run against it.

    .venv/bin/python tools/loopback_demo.py [FOLDER] [--dns HOST:PORT] [--http HOST:PORT]

FOLDER (default /tmp/mirror-router-demo) gets a throw-away CA (``ca.pem``), the zone
(``zones/test.example.com.toml``: test.example.com steered among Beijing, Tokyo,
Frankfurt, Ashburn and Sao Paulo) and an empty operator state file (``state.toml``).
The mirrors listen on 127.0.0.1: Sao Paulo over HTTPS, and each a little slower than
the one before (Tokyo 0 ms, Beijing 40, Ashburn 80, Sao Paulo 120, Frankfurt 300), so
``probe`` sorts them the same way every time. The router serves DNS on 127.0.0.1:5301 and
HTTP on 127.0.0.1:8301 (port 0: any free one), probes every 2 s, watches the state file
and trusts 127.0.0.1 as a proxy. When it is ready, ``demo.json`` in FOLDER names its
addresses. Ctrl-C stops everything.

Needs the test extra (``cryptography``), which ``make`` installs.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import Mirror, MirrorFarm, five_city_zone  # noqa: E402
from tests.tls import make_ca  # noqa: E402

DELAYS = {"tyo": 0.0, "bj": 0.04, "iad": 0.08, "gru": 0.12, "fra": 0.3}  # seconds


def mirrors(farm: MirrorFarm, folder: Path) -> dict[str, Mirror]:
    pki = make_ca(folder)
    found = {tid: farm.mirror(tid, tls=pki.server_context() if tid == "gru" else None,
                              host="localhost") for tid in DELAYS}
    for tid, delay in DELAYS.items():
        found[tid].delay = delay
    return found


def router(folder: Path, dns: str, http: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--zones", str(folder / "zones"),
         "--ca-file", str(folder / "ca.pem"), "--state", str(folder / "state.toml"),
         "--dns", dns, "--http", http, "--trusted-proxy", "127.0.0.1/32",
         "--log-format", "json"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)


def follow(log: IO[str], folder: Path) -> None:
    """Pass the router's log on; on ``ready``, write demo.json and say what to try."""
    for line in log:
        sys.stderr.write(line)
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "ready":
            (folder / "demo.json").write_text(json.dumps(
                {"dns": event["dns"][0], "http": event["http"][0]}))
            print(f"demo ready: DNS {event['dns'][0]}, HTTP http://{event['http'][0]}/status,"
                  f" zones {folder / 'zones'}, CA {folder / 'ca.pem'},"
                  f" state {folder / 'state.toml'} (Ctrl-C stops)", flush=True)


def claim(folder: Path, dns: str, http: str) -> IO[str] | str:
    """The folder's lock (held while the demo runs), or why not: a demo already runs in
    it, or a port is taken. A second demo used to reset the running one's state file,
    rewrite its zone with dead ports and delete its demo.json before failing on a port."""
    lock = (folder / ".demo.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return (f"a demo already runs in {folder} (its lock: {folder / '.demo.lock'}): stop "
                "it first, or give another FOLDER; nothing was changed")
    for kind, address in (("DNS", dns), ("HTTP", http)):
        host, _, port = address.rpartition(":")
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host.strip("[]"), int(port)))
            except OSError as e:
                lock.close()
                return f"{kind} {address}: {e.strerror}; nothing was changed"
    return lock


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/loopback_demo.py")
    p.add_argument("folder", type=Path, nargs="?", default=Path("/tmp/mirror-router-demo"))
    p.add_argument("--dns", default="127.0.0.1:5301")
    p.add_argument("--http", default="127.0.0.1:8301")
    args = p.parse_args(argv)
    folder: Path = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    held = claim(folder, args.dns, args.http)  # before anything in the folder is touched
    if isinstance(held, str):
        print(f"tools/loopback_demo.py: {held}", file=sys.stderr)
        return 1
    (folder / "zones").mkdir(exist_ok=True)
    (folder / "demo.json").unlink(missing_ok=True)
    (folder / "state.toml").write_text("[targets]\n")
    farm = MirrorFarm()
    zone = five_city_zone(mirrors(farm, folder), interval="2s", timeout="2s", km_per_ms=100)
    (folder / "zones" / "test.example.com.toml").write_text(zone)
    proc = router(folder, args.dns, args.http)
    assert proc.stderr is not None
    reader = threading.Thread(target=follow, args=(proc.stderr, folder), daemon=True)
    reader.start()
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    reader.join(5)
    farm.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
