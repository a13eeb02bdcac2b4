"""The line of a TOML document where a key is written, for problems that name the key
(``services.downloads.targets[fra].url``: line 97). ``tomllib`` keeps no positions, so the
text is read again, line by line, as TOML writes tables: ``[a.b]`` and ``[[a.b]]``
headers (an array's entries named ``[id]`` once their ``id`` is seen, else ``[#n]``),
``key = value`` lines, dotted keys and one-line inline tables. Pure.
"""

from __future__ import annotations

import re

HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=\s*(.*)$")
INLINE_KEY = re.compile(r"(?:^|[{,])\s*([A-Za-z0-9_-]+)\s*=")
ID = re.compile(r"^\s*id\s*=\s*[\"']([^\"']+)[\"']")


def _name(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in text.split("."))


class _Lines:
    """Each key path of the document, with the first line it is written on."""

    def __init__(self, text: str) -> None:
        self.found: dict[str, int] = {}
        self.table = ""  # the current table's path, entries labelled "#n"
        self.counts: dict[str, int] = {}
        self.entry: tuple[str, str, int] | None = None  # (array, "#n" label, header line)
        for number, line in enumerate(text.splitlines(), 1):
            self._read(line, number)

    def _add(self, key: str, number: int) -> None:
        self.found.setdefault(key, number)

    def _read(self, line: str, number: int) -> None:
        header = HEADER.match(line)
        if header is not None:
            path = _name(header[2])
            if header[1] == "[[":
                base = self._labelled(path)
                self.counts[base] = self.counts.get(base, 0) + 1
                self.table = f"{base}[#{self.counts[base]}]"
                self.entry = (base, f"#{self.counts[base]}", number)
            else:
                self.table, self.entry = self._labelled(path), None
            parts = self.table.split(".")
            for i in range(1, len(parts) + 1):  # [a.b] writes table a too
                self._add(".".join(parts[:i]), number)
            return
        assign = ASSIGN.match(line)
        if assign is None or line.lstrip().startswith("#"):
            return
        key = f"{self.table}.{_name(assign[1])}" if self.table else _name(assign[1])
        self._add(key, number)
        if assign[2].lstrip().startswith("{"):
            for inner in INLINE_KEY.findall(assign[2]):
                self._add(f"{key}.{inner}", number)
        found_id = ID.match(line)
        if found_id is not None and self.entry is not None:
            base, label, at = self.entry
            self._alias(f"{base}[{label}]", f"{base}[{found_id[1]}]", at)

    def _labelled(self, path: str) -> str:
        """A header's path with the array entry it is inside (``[[a.t]]``, ``[a.t.x]``)."""
        if self.entry is not None and path.startswith(self.entry[0] + "."):
            base, label, _at = self.entry
            return f"{base}[{label}]{path[len(base):]}"
        return path

    def _alias(self, old: str, new: str, at: int) -> None:
        self._add(new, at)
        for key, number in list(self.found.items()):
            if key.startswith(old + "."):
                self._add(new + key[len(old):], number)
        self.table = new + self.table[len(old):] if self.table.startswith(old) else self.table
        if self.entry is not None:
            self.entry = (self.entry[0], new[len(self.entry[0]) + 1:-1], at)


def line_of(text: str, key: str) -> int | None:
    """The line ``key`` is written on, or that of the nearest table holding it; None when
    nothing of it is written (a required key missing from a document with no tables)."""
    found = _Lines(text).found
    while key:
        if key in found:
            return found[key]
        key = key.rsplit(".", 1)[0] if "." in key else ""
    return None
