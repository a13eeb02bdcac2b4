"""What a reload may keep: ``unchanged_zones`` and the answer cache's ``carry``."""

from __future__ import annotations

from dataclasses import replace

from router.core.config import Config, Record, Zone, unchanged_zones
from router.dns.cache import _in_zones, _wire


def _zone(origin: str, *records: Record, ns: str = "ns1.example.net.") -> Zone:
    return Zone(origin, (ns,), "hostmaster." + origin, records=records)


A = _zone("a.example.", Record("www.a.example.", "A", "192.0.2.1", 60))
B = _zone("b.example.", Record("www.b.example.", "CNAME", "www.a.example.", 60))
C = _zone("c.example.", ns="ns1.c.example.")
SUB = _zone("sub.c.example.")


def test_an_equal_config_keeps_every_zone():
    config = Config((A, B, C))
    assert unchanged_zones(config, Config((A, B, C))) == {"a.example.", "b.example.", "c.example."}


def test_a_changed_zone_goes_and_so_does_one_that_points_into_it():
    a2 = replace(A, records=(Record("www.a.example.", "A", "192.0.2.9", 60),))
    assert unchanged_zones(Config((A, B, C)), Config((a2, B, C))) == {"c.example."}


def test_a_zone_added_or_removed_takes_its_parent_and_children_along():
    assert unchanged_zones(Config((A, C)), Config((A, C, SUB))) == {"a.example."}
    assert unchanged_zones(Config((A, C, SUB)), Config((A, C))) == {"a.example."}


def test_names_are_matched_label_by_label():
    zones = {_wire("a.example.")}
    assert _in_zones(_wire("www.a.example."), zones)
    assert _in_zones(_wire("A.example.".lower()), zones)
    assert not _in_zones(_wire("www.ba.example."), zones)
    assert not _in_zones(_wire("example."), zones)
    assert _in_zones(_wire("anything."), {_wire(".")})
