"""The state file watcher, synchronously: ``poll()`` applies a change only once the file has
stood still for one poll, and never lets a bad file take overrides away. Also the
prober's jitter, and the TTL bound with overrides and latency in play."""

from __future__ import annotations

import asyncio
import ipaddress
import os

from hypothesis import given
from hypothesis import strategies as st

from router.core.config import Config, HealthCheck
from router.core.geo import Location
from router.core.health import Board, Status
from router.core.overrides import Override, render
from router.core.steering import Want, rank
from router.watch.prober import JITTER, jittered
from router.watch.statefile import StateFile
from tests.test_steering import service, target


def watcher(tmp_path, text: str | None = None) -> StateFile:
    path = tmp_path / "state.toml"
    if text is not None:
        path.write_text(text)
    state = StateFile(path, Board(), Config)
    asyncio.run(state.load_now())
    return state


def poll(state: StateFile) -> None:
    asyncio.run(state.poll())


def touch(path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a distinct mtime, whatever the clock


def test_missing_at_start_is_no_overrides_and_no_error(tmp_path):
    state = watcher(tmp_path)
    assert state.board.snapshot.admin == {} and state.error is None


def test_a_change_applies_after_it_stood_still_for_one_poll(tmp_path):
    state = watcher(tmp_path, render({}))
    generation = state.board.snapshot.generation
    touch(state.path, render({"tyo": Override.DRAIN}), 1)
    poll(state)  # first seen: maybe still being written
    assert state.board.snapshot.admin == {}
    poll(state)  # unchanged since: apply
    assert state.board.snapshot.admin == {"tyo": Override.DRAIN}
    assert state.board.snapshot.generation == generation + 1
    poll(state)
    assert state.board.snapshot.generation == generation + 1  # no change, no bump


def test_bad_empty_or_missing_files_keep_the_last_good_overrides(tmp_path):
    state = watcher(tmp_path, render({"tyo": Override.DOWN}))
    for tick, text in enumerate(["", '[targets]\ntyo = "dr', "[targets]\ntyo = 3\n"], 1):
        touch(state.path, text, tick)
        poll(state)
        poll(state)
        assert state.board.snapshot.admin == {"tyo": Override.DOWN}
        assert state.error and str(state.path) in state.error
    state.path.unlink()
    poll(state)
    poll(state)
    assert state.board.snapshot.admin == {"tyo": Override.DOWN}
    assert state.error == f"{state.path}: no such file"
    touch(state.path, render({}), 9)
    poll(state)
    poll(state)
    assert state.board.snapshot.admin == {} and state.error is None


def test_jitter_shortens_the_interval_by_at_most_ten_percent():
    assert jittered(10.0, 0.0) == 10.0
    assert jittered(10.0, 0.999) > 10.0 * (1 - JITTER) - 1e-9
    assert JITTER == 0.1


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(list(Override))),
       st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(list(Status))),
       st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 5000)),
       st.integers(0, 600), st.floats(0.05, 100))
def test_answer_ttl_never_exceeds_the_service_ttl(admin, health, latency, ttl, interval):
    svc = service(target("a", "tokyo"), target("b", "beijing"), target("c", None), ttl=ttl,
                  health=HealthCheck(interval=interval))
    client = Location.of(ipaddress.ip_network("1.0.16.0/20"))
    d = rank(svc, client, lambda t: health.get(t, Status.UP), Want.ANY,
             latency=latency.get, admin=lambda t: admin.get(t, Override.AUTO))
    assert d.ttl <= ttl
    assert all(admin.get(c.target.id) not in (Override.DRAIN, Override.DOWN) for c in d.ranked)


def test_a_state_file_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path):
    """``admin`` rewrote the file 0644 whatever it was and whatever the umask: an
    operator's 0600 file, or a unit's UMask=0077, is now kept."""
    import os

    from router.watch.files import write_whole

    kept = tmp_path / "kept.toml"
    kept.write_text("[targets]\n")
    os.chmod(kept, 0o640)
    write_whole(kept, "[targets]\ntyo = \"drain\"\n")
    assert os.stat(kept).st_mode & 0o777 == 0o640 and "drain" in kept.read_text()
    old = os.umask(0o077)
    try:
        write_whole(tmp_path / "new.toml", "[targets]\n")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "new.toml").st_mode & 0o777 == 0o600
