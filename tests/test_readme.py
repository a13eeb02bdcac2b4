"""The README runs as printed.

- Every ``toml`` block passes the check its kind gets: a zone (``[zone]``) loads as
  ``mirror-router check`` loads it, a server file (``[server]``) as ``--config`` reads it,
  a state file (``[targets]``) as ``serve --state`` reads it.
- Every ``console`` block is run, command by command, and each command's output must be
  the one printed, normalising only query ids and timings (and the column widths timings
  change). A block runs against a router like ``make serve``'s, or, when the README marks
  it ``<!-- docs-test: demo -->``, against ``make demo`` (tools/loopback_demo.py); marked
  ``own``, in a fresh folder where the block's own commands write a zone and start a
  router. All listen on free loopback ports that are put in place of the printed ones.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from router.core.overrides import parse
from router.core.zonefile import load, load_server
from tests.harness import ROOT, RouterProcess, wait_until

README = ROOT / "README.md"
DEMO_FOLDER = "/tmp/mirror-router-demo"
BLOCK = re.compile(
    r"(?:<!-- docs-test: (?P<mark>[\w-]+) -->\n)?^```(?P<lang>\w+)\n(?P<body>.*?)^```",
                   re.S | re.M)
RETRY = 10.0  # seconds a command may take to show what is printed (a change settling)


@dataclass(frozen=True)
class Example:
    line: int  # in README.md
    mark: str  # "serve" or "demo"
    command: str
    output: str

    def __str__(self) -> str:
        return f"README.md:{self.line}: $ {self.command}"


def blocks(text: str, lang: str) -> Iterator[tuple[int, str, str]]:
    """(line of the block's first line, mark, body) for every ``lang`` block."""
    for m in BLOCK.finditer(text):
        if m.group("lang") == lang:
            yield text.count("\n", 0, m.start("body")) + 1, m.group("mark") or "serve", \
                m.group("body")


def examples(text: str) -> list[Example]:
    """Every ``$ command`` of every console block, with the lines printed after it."""
    found = []
    for first, mark, body in blocks(text, "console"):
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                raise AssertionError(f"README.md:{first + i}: console output before a command")
            start, command = i, lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + lines[i]
            i += 1
            output = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            found.append(Example(first + start, mark, command, "\n".join(output)))
    return found


PROBE_ROW = re.compile(r"\(\d+/\d+ ok\)$")  # a row of mirror-router probe's table


def normalise(text: str) -> str:
    """Query ids, cookies and timings out (dig's id and COOKIE, which hold a random client
    cookie and a timestamp, the milliseconds of a probe row); trailing blank lines and the
    widths of columns do not count."""
    lines = []
    text = re.sub(r"; COOKIE: [0-9a-f]+", "; COOKIE: C", re.sub(r"\bid: \d+", "id: ID", text))
    for line in text.strip().splitlines():
        if PROBE_ROW.search(line):
            line = re.sub(r"(?<![\w.])\d+\.\d+(?![\w.])", "T", line)
        lines.append(re.sub(r"[ \t]+", " ", line).rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------- the TOML blocks


def test_every_toml_block_passes_its_check(tmp_path):
    checked = []
    for n, (line, _mark, body) in enumerate(blocks(README.read_text(), "toml")):
        path = tmp_path / f"block{n}.toml"
        path.write_text(body)
        if "[zone]" in body:
            load(path)
        elif "[server]" in body:
            for name in re.findall(r'tls_(?:ca|cert|key) = "([^"]+)"', body):
                named = tmp_path / name  # the files it names (an absolute name replaces tmp)
                body = body.replace(f'"{name}"', f'"{tmp_path / named.name}"')
                (tmp_path / named.name).write_text("")
            path.write_text(body)
            load_server(path)
        elif "[targets]" in body:
            parse(body, str(path))
        else:
            raise AssertionError(f"README.md:{line}: a TOML block of no known kind")
        checked.append(line)
    assert len(checked) >= 3  # a zone, a server file, a state file


# ---------------------------------------------------------------- the console blocks


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """What ``make serve`` runs, on free ports."""
    router = RouterProcess(ROOT / "zones", "--no-probe", "--trusted-proxy", "127.0.0.1/32")
    yield {"-p 5300": f"-p {router.dns_port}", "127.0.0.1:8300": f"127.0.0.1:{router.http_port}"}
    assert router.stop() == 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """What ``make demo`` runs, on free ports, in a folder of its own."""
    folder = tmp_path_factory.mktemp("demo")
    proc = subprocess.Popen([sys.executable, "tools/loopback_demo.py", str(folder),
                             "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = folder / "demo.json"
        wait_until(lambda: ready.exists() or proc.poll() is not None, 60, what="the demo")
        ports = json.loads(ready.read_text())
        dns_port, http_port = ports["dns"].rsplit(":", 1)[1], ports["http"].rsplit(":", 1)[1]
        yield {"-p 5301": f"-p {dns_port}", "127.0.0.1:8301": f"127.0.0.1:{http_port}",
               DEMO_FOLDER: str(folder)}
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


OWN_FOLDER = "/tmp/my-mirrors"


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """"Your own mirrors in ten minutes": a fresh folder, two free ports for the router
    its example starts in the background (stopped here: its --zones names the folder)."""
    import socket
    folder = tmp_path_factory.mktemp("own")
    (folder / "zones").mkdir()
    ports = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    yield {OWN_FOLDER: str(folder), "127.0.0.1:5302": f"127.0.0.1:{ports[0]}",
           "-p 5302": f"-p {ports[0]}", "127.0.0.1:8302": f"127.0.0.1:{ports[1]}"}
    subprocess.run(["pkill", "-TERM", "-f", f"zones {folder}/zones"], check=False)
    wait_until(lambda: subprocess.run(["pgrep", "-f", f"zones {folder}/zones"],
                                      capture_output=True).returncode == 1, 20,
               what="the README's own router to stop")


def run(example: Example, places: dict[str, str]) -> str:
    command = example.command.replace(".venv/bin/mirror-router",
                                      str(Path(sys.executable).parent / "mirror-router"))
    for printed, actual in places.items():
        command = command.replace(printed, actual)
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "100"})
    out = done.stdout + done.stderr
    for printed, actual in places.items():
        out = out.replace(actual, printed)
    return out


def test_console_examples_exist_for_both_routers():
    marks = [e.mark for e in examples(README.read_text())]
    assert marks.count("serve") >= 5 and marks.count("demo") >= 4
    assert [e.command.split()[:2] for e in examples(README.read_text()) if e.mark == "own"] \
        == [[".venv/bin/mirror-router", "init"], [".venv/bin/mirror-router", "check"],
            [".venv/bin/mirror-router", "serve"], ["dig", "@127.0.0.1"], ["curl", "-sI"],
            [".venv/bin/mirror-router", "admin"], ["curl", "-sI"]]


@pytest.mark.parametrize("example", examples(README.read_text()), ids=str)
def test_console_example_prints_what_the_readme_shows(example, request):
    places = request.getfixturevalue(example.mark)
    expected = normalise(example.output)
    seen: list[str] = []

    def matches() -> bool:
        seen.append(normalise(run(example, places)))
        return seen[-1] == expected
    try:
        wait_until(matches, RETRY, interval=0.5, what=str(example))
    except AssertionError:
        assert seen[-1] == expected, f"{example} prints something else"


def test_normalise_keeps_what_is_not_a_timing():
    printed = "id: 14486\nfra     0.5      0.8    -  303.0  301.9  303.0     5  200 (3/3 ok)"
    ran = "id: 9\nfra     0.6      0.9    -  301.2  300.1  301.2     5  200 (3/3 ok)"
    assert normalise(printed) == normalise(ran)
    assert normalise(printed) != normalise(ran.replace("  5  ", "  4  "))
    assert normalise("A\t192.0.2.10") != normalise("A\t192.0.2.11")
    assert normalise("1 tuna 9.3 km") != normalise("1 tuna 9.4 km")  # not a timing


def test_a_second_demo_in_the_same_folder_changes_nothing(demo):
    """A second ``make demo`` reset the running one's state file, rewrote its zone with
    dead ports and deleted its demo.json before it failed on a port."""
    folder = Path(demo[DEMO_FOLDER])
    before = {name: (folder / name).read_bytes()
              for name in ("state.toml", "demo.json", "zones/test.example.com.toml")}
    second = subprocess.run([sys.executable, "tools/loopback_demo.py", str(folder),
                             "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "a demo already runs in" in second.stderr
    assert {name: (folder / name).read_bytes() for name in before} == before
