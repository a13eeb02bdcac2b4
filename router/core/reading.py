"""Files read whole, bounded: every file the router reads (zones, prefix lists, keys,
certificates, the state file, the fleet cache, GeoIP and ASN databases) goes through here.

- Regular files only: a FIFO, a device (``/dev/zero``), a socket or a folder is refused
  before a byte is read (the file is opened non-blocking, so a FIFO without a writer does
  not hang the open either).
- At most a limit per kind of file (``LIMITS``): a larger file is refused with the limit
  named, and a file that grows while it is read is cut off at the limit and refused.
- ``private_copy`` copies a database into memory of the process's own (a ``memfd``),
  checking that the file kept its size and modification time while it was copied, so
  that a database replaced in place (``cp new.mmdb City.mmdb`` truncates, then writes)
  can never take pages from under a lookup (which would kill the process with SIGBUS).

Errors are ``Unreadable``, an ``OSError``: every reader already reports an ``OSError``
with the file's name and keeps what it had.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MiB = 1 << 20
LIMITS = {  # the largest file of each kind read, in bytes
    "zone file": 16 * MiB,
    "prefix list": 16 * MiB,
    "DNSSEC key": 64 * 1024,
    "store password": 4 * 1024,
    "certificate": 1 * MiB,
    "state file": 16 * MiB,
    "fleet cache": 64 * MiB,
    "database": 1024 * MiB,  # GeoLite2 City ~70 MB, DB-IP City Lite ~130 MB
    "traffic file": 256 * MiB,  # simulate --traffic: a row per client network
    "country list": 1 * MiB,
}
CHUNK = 1 * MiB

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder", stat.S_IFSOCK: "a socket"}


class Unreadable(OSError):
    """A file refused: not a regular file, too large, or changed while read."""


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // 1024} KiB"


def _open(path: Path, kind: str) -> tuple[int, os.stat_result]:
    """``path`` opened for reading, and its status; ``Unreadable`` unless it is a regular
    file within the limit of ``kind``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise Unreadable(f"{path}: {what}, not a regular file: a {kind} must be one")
        if st.st_size > LIMITS[kind]:
            raise Unreadable(f"{path}: {st.st_size} bytes, over the {_size(LIMITS[kind])} "
                             f"limit of a {kind}")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_all(fd: int, path: Path, kind: str) -> bytes:
    limit = LIMITS[kind]
    chunks: list[bytes] = []
    got = 0
    while True:
        chunk = os.read(fd, min(CHUNK, limit + 1 - got))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        got += len(chunk)
        if got > limit:
            raise Unreadable(f"{path}: grew past the {_size(limit)} limit of a {kind} "
                             "while it was read")


def read_bytes(path: Path, kind: str) -> bytes:
    """The content of ``path``, a file of ``kind`` (a key of ``LIMITS``)."""
    fd, _st = _open(path, kind)
    try:
        return _read_all(fd, path, kind)
    finally:
        os.close(fd)


def read_text(path: Path, kind: str) -> str:
    """The UTF-8 text of ``path``, a file of ``kind``."""
    return read_bytes(path, kind).decode("utf-8")


def check(path: Path, kind: str) -> None:
    """``Unreadable`` unless ``path`` is a regular file within the limit of ``kind`` (for
    files another library reads by name: certificates)."""
    fd, _st = _open(path, kind)
    os.close(fd)


def private_copy(path: Path, kind: str = "database") -> int:
    """A descriptor of an in-memory copy of ``path`` (a ``memfd``; the caller closes it),
    made only if the file kept its size and modification time while it was copied."""
    fd, before = _open(path, kind)
    try:
        data = _read_all(fd, path, kind)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if len(data) != before.st_size or (after.st_size, after.st_mtime_ns) != \
            (before.st_size, before.st_mtime_ns):
        raise Unreadable(f"{path}: changed while it was read (being copied over?): "
                         "replace it with mv, which is atomic")
    copy = os.memfd_create(f"{kind} {path.name}", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(copy, view):]
    except BaseException:
        os.close(copy)
        raise
    return copy
