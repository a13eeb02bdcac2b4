"""Operator overrides: the state file's text, and how ``rank()`` applies drain/down/up."""

from __future__ import annotations

import pytest

from router.core.availability import Availability
from router.core.config import ConfigError, OnAllDown
from router.core.health import Board, Status
from router.core.overrides import Override, changed, lookup, parse, render
from router.core.steering import FORCED, Exclusion, Standing, Want, rank
from tests.test_steering import client, service, target

TOKYO, BEIJING = target("tyo", "tokyo", "JP"), target("bj", "beijing", "CN")
JAPAN = client("tokyo", "JP")


def decide(admin: dict[str, Override], health: dict[str, Status] | None = None, **kw):
    svc = service(TOKYO, BEIJING, **kw)
    h = health or {}
    return rank(svc, JAPAN, lambda t: h.get(t, Status.UP), Want.IPV4,
                admin=lambda t: lookup(admin, svc.name, t))


def test_state_file_round_trip():
    overrides = {"tyo": Override.DRAIN, "downloads/bj": Override.DOWN, "x.y-z": Override.UP}
    text = render(overrides)
    assert parse(text, "state.toml") == overrides
    assert render({}).strip().endswith("[targets]")
    assert parse(render({}), "state.toml") == {}


def test_auto_entries_are_dropped():
    assert parse('[targets]\ntyo = "auto"\nbj = "up"\n', "s") == {"bj": Override.UP}
    assert changed({"tyo": Override.DRAIN}, "tyo", Override.AUTO) == {}
    assert changed({}, "tyo", Override.DOWN) == {"tyo": Override.DOWN}


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("", "targets", "is required"),                      # empty (or truncated) file
    ('tyo = "drain"\n', "targets", "is required"),       # no table
    ('[targets]\ntyo = "drian"\n', "targets.tyo", "'drian' is not one of"),
    ('[targets]\n"a b" = "down"\n', "targets.a b", "is not a target id or service/id"),
    ('[targets]\ntyo = 1\n', "targets.tyo", "must be a string"),
    ('[targets]\n[other]\n', "other", "unknown key"),
    ('[targets]\ntyo = "dr', "", "not valid TOML"),        # half-written
])
def test_bad_state_files_name_file_key_and_reason(text, key, reason):
    with pytest.raises(ConfigError) as info:
        parse(text, "/var/lib/mirror-router/state.toml")
    problem = info.value.problems[0]
    assert (problem.file, problem.key) == ("/var/lib/mirror-router/state.toml", key)
    assert reason in problem.reason


def test_service_entry_wins_over_plain_id():
    overrides = {"tyo": Override.DRAIN, "downloads/tyo": Override.UP}
    assert lookup(overrides, "downloads", "tyo") is Override.UP
    assert lookup(overrides, "proxy", "tyo") is Override.DRAIN
    assert lookup(overrides, "proxy", "bj") is Override.AUTO


@pytest.mark.parametrize(("state", "exclusion"), [
    (Override.DRAIN, Exclusion.DRAINED),
    (Override.DOWN, Exclusion.ADMIN_DOWN),
])
def test_drain_and_down_move_clients_and_stay_visible(state, exclusion):
    assert [c.target.id for c in decide({}).ranked] == ["tyo", "bj"]
    d = decide({"tyo": state})
    assert [c.target.id for c in d.ranked] == ["bj"]
    (tyo,) = d.excluded
    assert (tyo.target.id, tyo.excluded, tyo.admin) == ("tyo", exclusion, state)
    assert not d.degraded and d.ttl == 30


def test_forced_up_ignores_a_failing_check():
    d = decide({"tyo": Override.UP}, {"tyo": Status.DOWN})
    first = d.ranked[0]
    assert (first.target.id, first.status, first.standing) == ("tyo", Status.DOWN,
                                                               Standing.NEAREST)
    assert first.reason == Standing.NEAREST.value + FORCED
    assert not d.degraded


@pytest.mark.parametrize("mode", [OnAllDown.ALL, OnAllDown.FALLBACK])
def test_admin_down_is_not_served_even_when_all_are_down(mode):
    kw = {"on_all_down": mode, "fallback": ("tyo", "bj")}
    health = {"tyo": Status.DOWN, "bj": Status.DOWN}
    assert [c.target.id for c in decide({}, health, **kw).ranked] == ["tyo", "bj"]
    d = decide({"tyo": Override.DOWN}, health, **kw)
    assert d.degraded and [c.target.id for c in d.ranked] == ["bj"]


def test_everything_drained_answers_nothing():
    d = decide({"tyo": Override.DRAIN, "bj": Override.DRAIN})
    assert d.ranked == () and not d.degraded


def test_overrides_bump_the_generation_once_per_change():
    board = Board()
    assert not board.set_overrides({})
    assert board.set_overrides({"tyo": Override.DRAIN})
    generation = board.snapshot.generation
    assert not board.set_overrides({"tyo": Override.DRAIN})
    assert board.snapshot.generation == generation
    assert board.snapshot.overrides("downloads")("tyo") is Override.DRAIN
    assert board.set_overrides({})
    assert board.snapshot.generation == generation + 1
    assert board.snapshot.overrides("downloads")("tyo") is Override.AUTO


def test_a_drained_target_is_not_served_even_as_unverified():
    svc = service(TOKYO, BEIJING)
    d = rank(svc, JAPAN, lambda t: Status.UP, Want.URL, files=lambda t: Availability.UNKNOWN,
             admin=lambda t: lookup({"tyo": Override.DRAIN}, svc.name, t))
    assert [(c.target.id, c.standing) for c in d.ranked] == [("bj", Standing.UNVERIFIED)]
    assert d.excluded[0].excluded is Exclusion.DRAINED


def test_windows_round_trip_and_hold_only_inside():
    from router.core.overrides import Window, in_force, next_change, parse_state
    w = Window("fra", Override.DRAIN, 1_800_000_000.0, 1_800_007_200.0)
    text = render({"tyo": Override.UP}, (w,))
    assert 'from = "2027-01-15T08:00:00Z"' in text
    assert parse_state(text, "s") == ({"tyo": Override.UP}, (w,))
    base = {"fra": Override.UP}
    assert in_force(base, (w,), w.start - 1) == {"fra": Override.UP}
    assert in_force(base, (w,), w.start) == {"fra": Override.DRAIN}  # the window wins
    assert in_force(base, (w,), w.end) == {"fra": Override.UP}
    assert next_change((w,), 0) == w.start and next_change((w,), w.start) == w.end
    assert next_change((w,), w.end) is None


@pytest.mark.parametrize(("window", "reason"), [
    ('target = "fra"\nstate = "drain"\nfrom = "+1h"\nuntil = "+2h"', "give a UTC time"),
    ('target = "fra"\nstate = "auto"\nfrom = "2027-01-01T00:00Z"\nuntil = "2027-01-02T00:00Z"',
     "drain, down or up"),
    ('target = "fra"\nstate = "drain"\nfrom = "2027-01-02T00:00Z"\nuntil = "2027-01-01T00:00Z"',
     "until after from"),
    ('target = "fra"\nstate = "drain"', "needs target, state, from and until"),
])
def test_bad_windows_name_the_entry_and_the_reason(window, reason):
    with pytest.raises(ConfigError) as info:
        parse(f"[targets]\n\n[[windows]]\n{window}\n", "state.toml")
    (problem,) = info.value.problems
    assert problem.key == "windows[#1]" and reason in problem.reason
