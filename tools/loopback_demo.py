"""Five loopback mirrors to try issue 5's tools on, with nothing leaving the machine.

    .venv/bin/python tools/loopback_demo.py /tmp/demo     # runs until Ctrl-C

starts the five-city test mirrors on 127.0.0.1 (Sao Paulo over HTTPS, with a throw-away
CA in /tmp/demo/ca.pem; Frankfurt slow to answer, 300 ms) and writes
/tmp/demo/zones/test.example.com.toml. Then, in another terminal:

    mirror-router probe --zones /tmp/demo/zones --ca-file /tmp/demo/ca.pem --client 1.0.16.1
    mirror-router serve --zones /tmp/demo/zones --ca-file /tmp/demo/ca.pem \\
        --state /tmp/demo/state.toml
    mirror-router admin --state /tmp/demo/state.toml set tyo drain
    chromium --headless --screenshot=/tmp/demo/status.png http://127.0.0.1:8300/status

Needs the test extra (``cryptography``): ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import MirrorFarm, five_city_zone
from tests.tls import make_ca


def main(folder: Path) -> None:
    (folder / "zones").mkdir(parents=True, exist_ok=True)
    pki = make_ca(folder)
    farm = MirrorFarm()
    mirrors = {t: farm.mirror(t, host="localhost") for t in ("bj", "tyo", "fra", "iad")}
    mirrors["gru"] = farm.mirror("gru", tls=pki.server_context(), host="localhost")
    mirrors["fra"].delay = 0.3
    zone = five_city_zone(mirrors, interval="2s", timeout="2s")
    (folder / "zones" / "test.example.com.toml").write_text(zone)
    for tid, m in mirrors.items():
        print(f"{tid}: {m.base}/health", flush=True)
    print(f"zones: {folder / 'zones'}  CA: {pki.ca}  (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        farm.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mirror-router-demo"))
