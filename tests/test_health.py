"""Health: the pure anti-flap state machine and the board that publishes snapshots."""

from __future__ import annotations

import pytest

from router.core.config import HealthCheck
from router.core.health import (
    EWMA_ALPHA,
    TRANSITIONS,
    Board,
    Effective,
    Health,
    Result,
    Snapshot,
    Status,
    effective,
    observe,
)
from router.core.overrides import Override

U, D, N = Status.UP, Status.DOWN, Status.UNKNOWN
LETTER = {"U": U, "D": D, "S": Status.SUSPECT}


def run(outcomes: str, rise: int, fall: int) -> list[Health]:
    """Feed ``+`` (pass) / ``-`` (fail) results at t = 1, 2, ...; return each state."""
    check = HealthCheck(rise=rise, fall=fall)
    h, out = Health(), []
    for i, mark in enumerate(outcomes, start=1):
        h = observe(h, Result(ok=mark == "+", at=float(i)), check)
        out.append(h)
    return out


@pytest.mark.parametrize(("rise", "fall", "outcomes", "statuses"), [
    # the first result decides at once
    (2, 3, "+", "U"),
    (2, 3, "-", "D"),
    (5, 5, "+", "U"),
    (5, 5, "-", "D"),
    # UP needs `fall` consecutive failures, and is SUSPECT in between
    (2, 3, "+--", "USS"),
    (2, 3, "+---", "USSD"),
    (2, 3, "+----", "USSDD"),
    (2, 1, "+-", "UD"),
    # a success resets the failure streak: a suspect is UP again at once
    (2, 3, "+--+--", "USSUSS"),
    (2, 3, "+--+---", "USSUSSD"),
    # DOWN needs `rise` consecutive successes (and is never suspect)
    (2, 3, "-+", "DD"),
    (2, 3, "-++", "DDU"),
    (3, 3, "-+++", "DDDU"),
    (1, 3, "-+", "DU"),
    # a failure resets the success streak
    (2, 3, "-+-+", "DDDD"),
    (2, 3, "-+-++", "DDDDU"),
    (3, 2, "+--+-++-+++", "USDDDDDDDDU"),
    # flapping with rise = fall = 1 follows every result
    (1, 1, "+-+-", "UDUD"),
    # a full cycle
    (2, 2, "++--++", "UUSDDU"),
])
def test_rise_and_fall(rise: int, fall: int, outcomes: str, statuses: str) -> None:
    assert [h.status for h in run(outcomes, rise, fall)] == [LETTER[s] for s in statuses]


@pytest.mark.parametrize("outcomes", ["+", "-", "++--+-", "---+++", "+-+--++-"])
def test_streak_counters_are_the_trailing_run(outcomes: str) -> None:
    for i, h in enumerate(run(outcomes, rise=2, fall=3), start=1):
        seen = outcomes[:i]
        last = seen[-1]
        streak = len(seen) - len(seen.rstrip(last))
        assert (h.successes, h.failures) == ((streak, 0) if last == "+" else (0, streak))
        assert h.checks == i
        assert h.last is not None and h.last.at == float(i)


@pytest.mark.parametrize(("rise", "fall", "outcomes", "since"), [
    # `since` is the time of the last status change (the first result counts as one)
    (2, 3, "+++", [1, 1, 1]),
    (2, 3, "+---", [1, 2, 2, 4]),  # up, suspect, suspect, down
    (2, 3, "-++--+", [1, 1, 3, 4, 4, 6]),
    (1, 1, "+-+", [1, 2, 3]),
])
def test_since_marks_the_last_change(rise: int, fall: int, outcomes: str,
                                     since: list[float]) -> None:
    assert [h.since for h in run(outcomes, rise, fall)] == since


def test_first_state_is_unknown() -> None:
    h = Health()
    assert h.status is N
    assert (h.successes, h.failures, h.checks) == (0, 0, 0)
    assert h.since is h.last_ok is h.last_failure is h.last_error is h.ttfb_ewma is None


def test_every_status_and_outcome_has_a_rule() -> None:
    assert set(TRANSITIONS) == {(s, ok) for s in Status for ok in (True, False)}


def test_ttfb_is_an_ewma_of_successful_probes() -> None:
    check = HealthCheck()
    h = Health()
    a = EWMA_ALPHA
    second = 0.100 + a * 0.100
    for result, ewma in [
        (Result(ok=True, at=1, ttfb=0.100), 0.100),  # the first sample is taken as is
        (Result(ok=True, at=2, ttfb=0.200), second),
        (Result(ok=True, at=3, ttfb=None), second),  # no sample: kept
        (Result(ok=False, at=4, ttfb=5.0, error="HTTP 500"), second),  # failures ignored
        (Result(ok=True, at=5, ttfb=0.400), second + a * (0.400 - second)),
    ]:
        h = observe(h, result, check)
        assert h.ttfb_ewma == pytest.approx(ewma)
    assert EWMA_ALPHA == 0.5
    assert h.ttfb_ewma == pytest.approx(0.275)


def test_no_ttfb_sample_leaves_ewma_unset() -> None:
    h = observe(Health(), Result(ok=True, at=1), HealthCheck())
    assert h.ttfb_ewma is None


def test_error_and_time_bookkeeping() -> None:
    check = HealthCheck(rise=2, fall=3)
    steps = [
        # result, (last_ok, last_failure, last_error)
        (Result(ok=True, at=10.0, http_status=200, ttfb=0.05), (10.0, None, None)),
        (Result(ok=False, at=20.0, error="timed out after 3s"), (10.0, 20.0, "timed out after 3s")),
        (Result(ok=False, at=30.0, error="HTTP 503", http_status=503),
         (10.0, 30.0, "HTTP 503")),
        (Result(ok=True, at=40.0, http_status=200), (40.0, 30.0, "HTTP 503")),
    ]
    h = Health()
    for result, (last_ok, last_failure, last_error) in steps:
        h = observe(h, result, check)
        assert (h.last_ok, h.last_failure, h.last_error) == (last_ok, last_failure, last_error)
        assert h.last is result
    assert h.checks == 4
    assert h.status is U  # two failures never reached fall = 3


def test_observe_is_pure() -> None:
    before = Health()
    after = observe(before, Result(ok=False, at=1.0, error="refused"), HealthCheck())
    assert before == Health()
    assert after is not before
    assert after.status is D


# ---------------------------------------------------------------- board

KEY = ("downloads", "tyo")
OTHER = ("downloads", "bj")


def test_record_returns_before_and_after() -> None:
    board, check = Board(), HealthCheck(rise=2, fall=2)
    before, after = board.record(KEY, Result(ok=True, at=1.0), check)
    assert before == Health()
    assert after.status is U
    before2, after2 = board.record(KEY, Result(ok=False, at=2.0, error="x"), check)
    assert before2 == after
    assert (after2.status, after2.failures) == (Status.SUSPECT, 1)
    _, after3 = board.record(KEY, Result(ok=False, at=3.0, error="x"), check)
    assert after3.status is D
    assert board.snapshot.get(*KEY) == after3


def test_generation_bumps_only_on_status_change() -> None:
    board, check = Board(), HealthCheck(rise=2, fall=2)
    assert board.snapshot.generation == 0
    steps = [
        # (key, ok, generation after, status after, checks after)
        (KEY, True, 1, U, 1),  # UNKNOWN -> UP
        (KEY, True, 1, U, 2),
        (KEY, False, 1, Status.SUSPECT, 3),  # one failure of two: served as before
        (OTHER, False, 2, D, 1),  # another target: UNKNOWN -> DOWN
        (KEY, False, 3, D, 4),  # SUSPECT -> DOWN
        (KEY, True, 3, D, 5),
        (KEY, True, 4, U, 6),  # DOWN -> UP
    ]
    for key, ok, generation, status, checks in steps:
        old = board.snapshot
        board.record(key, Result(ok=ok, at=float(checks)), check)
        snap = board.snapshot
        assert snap is not old  # content is republished on every result
        assert snap.generation == generation
        assert snap.get(*key).status is status
        assert snap.get(*key).checks == checks


def test_published_snapshots_do_not_change() -> None:
    board, check = Board(), HealthCheck(rise=1, fall=1)
    board.record(KEY, Result(ok=True, at=1.0), check)
    first = board.snapshot
    board.record(KEY, Result(ok=False, at=2.0), check)
    board.record(OTHER, Result(ok=True, at=3.0), check)
    assert first.get(*KEY).status is U
    assert first.get(*KEY).checks == 1
    assert OTHER not in first.health
    assert board.snapshot.get(*KEY).status is D
    with pytest.raises(TypeError):
        first.health[KEY] = Health()  # type: ignore[index]


def test_assume_sets_unprobed_targets() -> None:
    board = Board()
    board.assume([KEY, OTHER], U, at=5.0)
    snap = board.snapshot
    assert snap.generation == 1
    assert snap.get(*KEY) == Health(status=U, since=5.0)
    assert snap.get(*OTHER) == Health(status=U, since=5.0)
    board.assume([OTHER], D, at=6.0)
    assert board.snapshot.generation == 2
    assert board.snapshot.get(*OTHER) == Health(status=D, since=6.0)
    assert board.snapshot.get(*KEY).status is U


def test_assume_overrides_probed_state() -> None:
    board = Board()
    board.record(KEY, Result(ok=False, at=1.0, error="refused"), HealthCheck())
    board.assume([KEY], U, at=2.0)
    assert board.snapshot.get(*KEY) == Health(status=U, since=2.0)


def test_retain_forgets_targets_that_left() -> None:
    board, check = Board(), HealthCheck()
    board.record(KEY, Result(ok=True, at=1.0), check)
    board.record(OTHER, Result(ok=False, at=1.0), check)
    generation = board.snapshot.generation
    board.retain([KEY, OTHER, ("downloads", "new")])  # nothing left: no new snapshot
    assert board.snapshot.generation == generation
    board.retain([KEY])
    assert board.snapshot.generation == generation + 1
    assert set(board.snapshot.health) == {KEY}
    assert board.snapshot.get(*OTHER) == Health()
    # a forgotten target starts over: its next result decides at once
    before, after = board.record(OTHER, Result(ok=True, at=2.0), check)
    assert before == Health()
    assert after.status is U


def test_view_reads_one_service() -> None:
    board, check = Board(), HealthCheck(rise=1, fall=1)
    board.record(("downloads", "tyo"), Result(ok=True, at=1.0), check)
    board.record(("downloads", "bj"), Result(ok=False, at=1.0), check)
    board.record(("proxy", "tyo"), Result(ok=False, at=1.0), check)
    view = board.snapshot.view("downloads")
    assert view("tyo") is U
    assert view("bj") is D
    assert view("nowhere") is N
    assert board.snapshot.view("proxy")("tyo") is D
    assert board.snapshot.view("proxy")("bj") is N
    assert board.snapshot.view("unknown-service")("tyo") is N


def test_view_is_bound_to_its_snapshot() -> None:
    board, check = Board(), HealthCheck(rise=1, fall=1)
    board.record(KEY, Result(ok=True, at=1.0), check)
    view = board.snapshot.view(KEY[0])
    board.record(KEY, Result(ok=False, at=2.0), check)
    assert view(KEY[1]) is U  # one decision sees one consistent state
    assert board.snapshot.view(KEY[0])(KEY[1]) is D


def test_empty_snapshot() -> None:
    snap = Snapshot()
    assert snap.generation == 0
    assert snap.get("downloads", "tyo") == Health()
    assert snap.view("downloads")("tyo") is N


@pytest.mark.parametrize(("status", "override", "expected"), [
    (Status.UP, Override.AUTO, Effective.USABLE),
    (Status.UNKNOWN, Override.AUTO, Effective.USABLE),
    (Status.DOWN, Override.AUTO, Effective.DOWN),
    (Status.DOWN, Override.UP, Effective.FORCED),
    (Status.UP, Override.UP, Effective.USABLE),
    (Status.UP, Override.DRAIN, Effective.DRAINED),
    (Status.DOWN, Override.DRAIN, Effective.DRAINED),
    (Status.UP, Override.DOWN, Effective.ADMIN_DOWN),
    (Status.DOWN, Override.DOWN, Effective.ADMIN_DOWN),
])
def test_effective_combines_health_and_the_override(status, override, expected) -> None:
    assert effective(status, override) is expected


@pytest.mark.parametrize(("interval", "suspect", "fast"), [
    (10.0, None, 1.0),  # the default: a second
    (0.5, None, 0.5),  # never slower than the normal interval
    (10.0, 0.2, 0.2),
    (0.3, 2.0, 0.3),
])
def test_a_suspect_is_checked_at_the_fast_interval(interval, suspect, fast) -> None:
    assert HealthCheck(interval=interval, suspect_interval=suspect).fast == fast
