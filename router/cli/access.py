"""What the service can read, checked before it runs (``check --unit``, ``--as-user``).

A systemd unit's ``LoadCredential=ID:PATH`` lines hand the service a private copy of
each secret in ``$CREDENTIALS_DIRECTORY/ID``, whoever owns the original. ``staged()``
puts the unit's sources where a config naming ``$CREDENTIALS_DIRECTORY`` finds them, so
``check`` reads what the service will. ``unreadable()`` says why a user could not read a
file the config names (by its mode bits and those of every folder above it, as the kernel
checks them; a user that does not exist, as ``DynamicUser=`` makes, owns nothing and is
in no group).
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CREDENTIAL = re.compile(r"^\s*LoadCredential(?:Encrypted)?=([^:\s]+):(\S+)\s*$", re.M)


def credentials(unit: str) -> dict[str, Path]:
    """The ``LoadCredential=ID:PATH`` lines of a unit's text: ID → PATH."""
    return {m[1]: Path(m[2]) for m in CREDENTIAL.finditer(unit)}


@contextmanager
def staged(unit: Path) -> Iterator[Path]:
    """A ``$CREDENTIALS_DIRECTORY`` for the while, each of ``unit``'s credentials a link
    to its source (a source that is missing stays missing: systemd would fail the same
    way, unless ``SetCredential=`` gives a default)."""
    with tempfile.TemporaryDirectory(prefix="mirror-router-credentials-") as folder:
        for name, source in credentials(unit.read_text()).items():
            (Path(folder) / name).symlink_to(source)
        before = os.environ.get("CREDENTIALS_DIRECTORY")
        os.environ["CREDENTIALS_DIRECTORY"] = folder
        try:
            yield Path(folder)
        finally:
            if before is None:
                del os.environ["CREDENTIALS_DIRECTORY"]
            else:
                os.environ["CREDENTIALS_DIRECTORY"] = before


def named_files(value: Any, key: str = "") -> Iterator[tuple[str, Path]]:
    """Every file path a loaded config holds, with the key it came from."""
    if isinstance(value, Path):
        yield key, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from named_files(getattr(value, f.name), f"{key}.{f.name}".lstrip("."))
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            yield from named_files(item, f"{key}[{i}]")


def unreadable(path: Path, user: str) -> str | None:
    """Why ``user`` could not read ``path`` (None: it could)."""
    try:
        entry = pwd.getpwnam(user)
        uid, gids = entry.pw_uid, {entry.pw_gid, *(g.gr_gid for g in grp.getgrall()
                                                   if user in g.gr_mem)}
    except KeyError:  # a DynamicUser= of its own: only what everyone may read
        uid, gids = -1, set()
    if uid == 0:
        return None
    real = path.resolve()
    for place, need in [*((d, stat.S_IXOTH) for d in reversed(real.parents)),
                        (real, stat.S_IROTH)]:
        st = place.stat()
        shift = 6 if st.st_uid == uid else 3 if st.st_gid in gids else 0
        if not (st.st_mode >> shift) & need:
            return (f"{place}: mode {stat.S_IMODE(st.st_mode):04o}, owner "
                    f"{_name(pwd.getpwuid, st.st_uid)}:{_name(grp.getgrgid, st.st_gid)}")
    return None


def _name(lookup: Any, number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)
