"""The ``mirror-router`` command: serve, check, explain, admin, probe, fleet, dnssec.

Each subcommand is a module of its own with ``add_parser(sub)``, which registers its
options and the function that runs it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from router import __version__, log
from router.cli import admin, check, dnssec, explain, fleet, init, probe, serve, simulate

SUBCOMMANDS = (serve, check, explain, admin, probe, fleet, dnssec, init, simulate)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log.configure(getattr(args, "log_format", "console"), getattr(args, "log_level", "info"))
    return int(args.func(args))


class Parser(argparse.ArgumentParser):
    """argparse, whose errors are two lines (the error, and where the help is) rather
    than the whole usage first with the error at the bottom."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mirror-router",
        description="Geo-aware edge router for download mirrors: authoritative GeoDNS and "
                    "an HTTP 302 redirector over one steering core.")
    p.add_argument("--version", action="version", version=f"mirror-router {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return p
