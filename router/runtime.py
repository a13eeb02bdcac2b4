"""The live state every face reads: the current config, GeoIP, health, readiness.

One object, passed explicitly to the DNS and HTTP adapters (never a global). A reload
replaces ``config`` whole; requests read each attribute once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from router.config import Config
from router.geo import Locator
from router.health import Board


@dataclass(slots=True)
class Runtime:
    config: Config
    locator: Locator
    board: Board
    probing: bool = True
    ready: bool = False
    started: float = field(default_factory=time.time)
