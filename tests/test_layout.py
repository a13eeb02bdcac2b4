"""The house rules, held by a test: folders by data path, imports that point one way,
no import circles, short functions.

The rules are data (``LAYERS``, ``THIRD_PARTY``, ``FORBIDDEN``, and for the core's
purity ``FILE_LOADERS`` and ``CLOCK_CALLS``; ``OTHER_CACHES`` for the one memo policy).
The imports are read with ``ast`` from the source, so an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROUTER = Path(__file__).resolve().parent.parent / "router"

# layer -> the layers of router/ it may import. Layer = the first folder under router/.
LAYERS: Mapping[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "watch": frozenset({"core", "watch"}),
    "dns": frozenset({"core", "dns"}),
    "http": frozenset({"core", "http"}),
    "serve": frozenset({"core", "watch", "dns", "http", "serve", "log"}),
    "cli": frozenset({"core", "watch", "dns", "http", "serve", "cli", "log"}),
    # the modules at the top of router/
    "root": frozenset({"root", "cli"}),  # __main__ runs the CLI
    "errors": frozenset(),
    "log": frozenset({"core"}),  # core/memo: the one policy for bounded tables
}
# Everyone may import these top-level modules: the package itself (``__version__``) and
# the root of every error.
EVERYONE = frozenset({"root", "errors"})

# layer -> the third-party packages it may import (the standard library is free, but for
# FORBIDDEN below).
THIRD_PARTY: Mapping[str, frozenset[str]] = {
    "core": frozenset({"maxminddb", "_maxminddb_geolite2"}),
    "watch": frozenset({"aiohttp", "redis", "structlog"}),
    "dns": frozenset({"cryptography", "dnslib", "dnstap_pb", "fstrm", "siphash24", "structlog"}),
    "http": frozenset({"aiohttp", "multidict", "structlog", "prometheus_client"}),
    "serve": frozenset({"aiohttp", "structlog", "uvloop"}),
    "cli": frozenset({"aiohttp"}),
    "root": frozenset(),
    "errors": frozenset(),
    "log": frozenset({"structlog"}),
}
# The core is pure: no event loop, no sockets, no processes, no signals (STYLE.md rule 1).
FORBIDDEN: Mapping[str, frozenset[str]] = {
    "core": frozenset({"asyncio", "socket", "ssl", "selectors", "subprocess", "signal",
                       "threading"}),
}
MAX_FUNCTION_LINES = 40
# The core is pure in two more ways. Files are read only by the modules that load them
# (the zone and server files; the GeoIP database), and the clock is read only through a
# clock handed in (``clock=time.time`` as a default is handed in; ``time.time()`` is read).
FILE_LOADERS = frozenset({"router.core.zonefile", "router.core.geo", "router.core.reading"})
FILE_CALLS = frozenset({"open", "read_text", "read_bytes", "write_text", "write_bytes",
                        "is_file", "is_dir", "exists", "stat", "lstat", "glob", "rglob",
                        "iterdir", "listdir", "scandir", "walk", "mmap", "open_database",
                        "unlink", "rename", "mkdir", "touch"})
CLOCK_CALLS = frozenset({"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter",
                         "perf_counter_ns", "now", "utcnow", "today"})
CLOCK_OWNERS = frozenset({"time", "datetime", "date"})
# One policy for bounded tables (``core/memo``): none of these elsewhere.
# (``functools.cache`` on a function of no arguments makes one value once: not a table.)
OTHER_CACHES = frozenset({"functools.lru_cache", "collections.OrderedDict",
                          "cachetools.LRUCache", "cachetools.TTLCache"})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted (a module or a name in one)
    line: int


def layer_of(module: str) -> str:
    """``router.core.geo`` -> ``core``; ``router.__main__`` and ``router`` -> ``root``."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__", "__init__", "__version__"):
        return "root"
    return parts[1]


def module_name(path: Path, root: Path = ROUTER) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(module: str, source: str) -> Iterator[Import]:
    """Every import in ``source``, with relative imports made absolute."""
    package = module if module.count(".") == 0 else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield Import(module, f"{base}.{alias.name}", node.lineno)


def violations(module: str, source: str) -> list[str]:
    """What in one module's imports breaks the rules, one line each."""
    mine = layer_of(module)
    found = []
    for imp in imports_of(module, source):
        top = imp.target.split(".")[0]
        where = f"{module}:{imp.line} imports {imp.target}"
        if top == "router":
            theirs = layer_of(imp.target) if imp.target.count(".") else "root"
            if theirs not in LAYERS[mine] | EVERYONE | {mine}:
                found.append(f"{where}: {mine} may not import {theirs}")
        elif top in FORBIDDEN.get(mine, ()):
            found.append(f"{where}: {mine} is pure, no {top}")
        elif top not in sys.stdlib_module_names and top != "__future__" \
                and top not in THIRD_PARTY[mine]:
            found.append(f"{where}: {mine} may not use the third-party {top}")
    return found


def modules() -> dict[str, str]:
    return {module_name(p): p.read_text(encoding="utf-8") for p in sorted(ROUTER.rglob("*.py"))}


def graph(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """module -> the router modules it imports (a name imported from a package that is a
    module counts as that module)."""
    edges: dict[str, set[str]] = {m: set() for m in sources}
    for module, source in sources.items():
        for imp in imports_of(module, source):
            for candidate in (imp.target, imp.target.rpartition(".")[0]):
                if candidate in sources and candidate != module:
                    edges[module].add(candidate)
                    break
    return edges


def circles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def long_functions(module: str, source: str) -> list[str]:
    return [f"{module}:{n.lineno} {n.name} has {n.end_lineno - n.lineno + 1} lines"
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.end_lineno is not None and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]


def file_io(module: str, source: str) -> list[str]:
    """Calls in a core module that touch the file system (by the method's name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else \
                func.id if isinstance(func, ast.Name) else None
            if name in FILE_CALLS:
                found.append(f"{module}:{node.lineno} calls {name}()")
    return found


def clock_reads(module: str, source: str) -> list[str]:
    """Calls that read the clock: ``time.time()``, ``datetime.now()``, ``monotonic()``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in CLOCK_CALLS:
            owner = func.value
            base = owner.attr if isinstance(owner, ast.Attribute) else \
                owner.id if isinstance(owner, ast.Name) else ""
            if base in CLOCK_OWNERS:
                found.append(f"{module}:{node.lineno} reads the clock ({base}.{func.attr}())")
        elif isinstance(func, ast.Name) and func.id in CLOCK_CALLS - {"now", "today"}:
            found.append(f"{module}:{node.lineno} reads the clock ({func.id}())")
    return found


def other_caches(module: str, source: str) -> list[str]:
    """Bounded tables kept another way than ``core/memo``: a functools cache, an
    ``OrderedDict`` LRU, or a dict emptied when it is full (``if len(x) >= n: x.clear()``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = [f"{node.module}.{a.name}" for a in node.names] \
            if isinstance(node, ast.ImportFrom) else \
            [f"{node.value.id}.{node.attr}"] if isinstance(node, ast.Attribute) and \
            isinstance(node.value, ast.Name) else []
        found += [f"{module}:{node.lineno} uses {n.rpartition('.')[2]}" for n in names
                  if n in OTHER_CACHES]
        if isinstance(node, ast.FunctionDef) and (node.args.args or node.args.kwonlyargs) \
                and any(ast.unparse(d) in ("cache", "functools.cache")
                        for d in node.decorator_list):
            found.append(f"{module}:{node.lineno} caches {node.name}() by its arguments")
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
                isinstance(node.test.left, ast.Call) and \
                isinstance(node.test.left.func, ast.Name) and node.test.left.func.id == "len":
            for inner in node.body:
                if isinstance(inner, ast.Expr) and isinstance(inner.value, ast.Call) and \
                        isinstance(inner.value.func, ast.Attribute) and \
                        inner.value.func.attr in ("clear", "popitem"):
                    found.append(f"{module}:{node.lineno} empties a table when it is full")
    return found


# ---------------------------------------------------------------- the tree as it is


def test_every_module_sits_in_a_known_layer():
    unknown = sorted(m for m in modules() if layer_of(m) not in LAYERS)
    assert not unknown, "modules outside every layer:\n" + "\n".join(unknown)


def test_imports_point_one_way():
    broken = [line for module, source in modules().items()
              for line in violations(module, source)]
    assert not broken, "imports that break the rules:\n" + "\n".join(broken)


def test_there_are_no_import_circles():
    found = circles(graph(modules()))
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_function_is_longer_than_forty_lines():
    long = [line for module, source in modules().items()
            for line in long_functions(module, source)]
    assert not long, "functions over 40 lines:\n" + "\n".join(long)


def test_core_reads_files_only_where_it_loads_them():
    found = [line for module, source in modules().items()
             if layer_of(module) == "core" and module not in FILE_LOADERS
             for line in file_io(module, source)]
    assert not found, "file I/O in the core outside its loaders:\n" + "\n".join(found)


def test_core_reads_the_clock_only_through_a_clock_it_is_given():
    found = [line for module, source in modules().items() if layer_of(module) == "core"
             for line in clock_reads(module, source)]
    assert not found, "clock reads in the core:\n" + "\n".join(found)


def test_every_bounded_table_is_a_memo():
    found = [line for module, source in modules().items() if module != "router.core.memo"
             for line in other_caches(module, source)]
    assert not found, "bounded tables that are not a core.memo.Memo:\n" + "\n".join(found)


def test_a_dns_miss_and_a_new_http_client_go_one_way():
    """Traced call by call (bench/crossings.py): a DNS answer-cache miss and an HTTP
    redirect for a new client never call back into a module that called them, and
    GeoIP is asked once per request."""
    sys.path.insert(0, str(ROUTER.parent / "bench"))
    import crossings

    for calls in (crossings.dns_miss(), crossings.http_new_client()):
        assert calls, "nothing traced"
        assert not [c for c in calls if c[2]], f"calls back up: {[c for c in calls if c[2]]}"
        assert sum(callee == "core/geo" for _caller, callee, _up in calls) == 1


# ---------------------------------------------------------------- the checker itself


@pytest.mark.parametrize(("module", "source", "reason"), [
    ("router.dns.authority", "from router.http.routes import clean\n", "dns may not import http"),
    ("router.http.redirect", "import router.watch.inventory\n", "http may not import watch"),
    ("router.core.steering", "from router.serve import server\n", "core may not import serve"),
    ("router.core.geo", "import asyncio\n", "core is pure, no asyncio"),
    ("router.core.geo", "import aiohttp\n", "core may not use the third-party aiohttp"),
    ("router.dns.wire", "from ..http import app\n", "dns may not import http"),
    ("router.watch.prober", "from router.cli.main import main\n", "watch may not import cli"),
])
def test_a_broken_rule_is_reported(module, source, reason):
    assert [line.split(": ", 1)[1] for line in violations(module, source)] == [reason]


@pytest.mark.parametrize(("module", "source"), [
    ("router.core.geo", "import maxminddb\nfrom router.core.earth import Point\n"),
    ("router.serve.server", "from router.dns.listener import bind\nimport uvloop\n"),
    ("router.http.app", "from router import __version__\nfrom router.errors import RouterError\n"),
    ("router.cli.main", "from router.serve.server import run\nimport json\n"),
])
def test_an_allowed_import_is_not_reported(module, source):
    assert violations(module, source) == []


@pytest.mark.parametrize(("check", "source", "found"), [
    (file_io, "def f(p):\n    return p.read_text()\n", "m:2 calls read_text()"),
    (file_io, "def f(p):\n    return open(p)\n", "m:2 calls open()"),
    (clock_reads, "import time\nx = time.time()\n", "m:2 reads the clock (time.time())"),
    (clock_reads, "import datetime\nx = datetime.datetime.now()\n",
     "m:2 reads the clock (datetime.now())"),
    (other_caches, "from functools import lru_cache\n", "m:1 uses lru_cache"),
    (other_caches, "if len(t) >= 9:\n    t.clear()\n", "m:1 empties a table when it is full"),
    (other_caches, "import functools\n@functools.cache\ndef f(x):\n    return x\n",
     "m:3 caches f() by its arguments"),
])
def test_a_broken_purity_rule_is_found(check, source, found):
    assert check("m", source) == [found]


@pytest.mark.parametrize(("check", "source"), [
    (clock_reads, "import time\ndef f(clock=time.time):\n    return clock()\n"),
    (file_io, "def f(text):\n    return text.split()\n"),
    (other_caches, "if len(t) >= 9:\n    t.append(1)\n"),
    (other_caches, "import functools\n@functools.cache\ndef f():\n    return 1\n"),
])
def test_what_keeps_the_rules_is_not_found(check, source):
    assert check("m", source) == []


def test_a_circle_is_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]


def test_a_long_function_is_found():
    source = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    assert long_functions("m", source) == [f"m:1 f has {MAX_FUNCTION_LINES + 1} lines"]
