"""The watching side as ``serve`` builds it, alone or in a fleet: one place for the
server and the supervisor (and a worker's file checks)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from router.core.availability import Ledger
from router.core.config import Config
from router.core.health import Board, Key
from router.core.load import Sent
from router.core.stats import Stats
from router.serve.settings import Settings
from router.watch.fleetfiles import FleetFiles
from router.watch.inventory import Inventory
from router.watch.loads import sent
from router.watch.monitor import Monitor
from router.watch.verifier import Owns


def monitor(settings: Settings, board: Board, stats: Stats, config: Callable[[], Config],
            totals: Callable[[], Stats] | None = None) -> Monitor:
    """The prober and the state file (and, in a fleet, the fleet's member), and the
    loads (``totals``: the counters of what was sent; by default ``stats``)."""
    counted = totals or (lambda: stats)

    def sent_so_far() -> Mapping[Key, Sent]:
        found = counted()
        return sent(found.http_chosen, found.http_bytes)
    return Monitor(board, stats, config, probe=settings.probe, state=settings.state,
                   ca_file=settings.ca_file, fleet=settings.fleet, totals=sent_so_far)


def inventory(settings: Settings, ledger: Ledger, catalogs: bool = True,
              owns: Owns | None = None) -> Inventory:
    """Catalogs, file checks and content verification; in a fleet, file results and
    corrupt copies are shared through the store, and ``owns`` says which targets this
    node verifies."""
    fleet = settings.fleet
    return Inventory(ledger, catalogs=catalogs, ca_file=settings.ca_file,
                     node=fleet.node if fleet else None,
                     shared=FleetFiles(fleet) if fleet else None, owns=owns)
