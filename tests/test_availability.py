"""The pure half of "never a bad download": the Go catalog, judging HEAD answers, the
ledger of results and freshness, and how ``rank()`` filters on a file's availability."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.core.availability import Availability, Freshness, Ledger, Outcome, judge
from router.core.catalog import CatalogError, CatalogFile, FileChecks, go_version_key, parse_go
from router.core.config import Config, OnAllDown, Service, Zone
from router.core.health import Status
from router.core.steering import Exclusion, Standing, Want, rank, worth_waiting_for
from tests.harness import release_list
from tests.test_steering import client, service, states, target

A = Availability

LIST = release_list([
    ("go1.23rc1", False, {"go1.23rc1.linux-amd64.tar.gz": b"r" * 10}),
    ("go1.22.5", True, {"go1.22.5.linux-amd64.tar.gz": b"n" * 30, "go1.22.5.src.tar.gz": b"s"}),
    ("go1.22.4", True, {"go1.22.4.linux-amd64.tar.gz": b"o" * 20}),
    ("go1.21.13", True, {"go1.21.13.linux-amd64.tar.gz": b"p" * 5}),
    ("go1.21.12", True, {"go1.21.12.linux-amd64.tar.gz": b"q" * 5}),
])
CATALOG = parse_go(LIST)
NEW_FILE = CATALOG.files["go1.22.5.linux-amd64.tar.gz"]
OLD_FILE = CATALOG.files["go1.22.4.linux-amd64.tar.gz"]


# ---------------------------------------------------------------- the catalog


def test_the_go_list_becomes_files_with_size_and_sha256():
    assert len(CATALOG.files) == 6 and len(CATALOG.releases) == 5
    assert CatalogFile("go1.22.5.linux-amd64.tar.gz", "go1.22.5", 30,
                                   hashlib.sha256(b"n" * 30).hexdigest(), "linux", "amd64",
                                   "archive") == NEW_FILE
    assert CATALOG.lookup("go1.22.5.src.tar.gz").kind == "source"
    assert CATALOG.lookup("go1.22.6.src.tar.gz") is None


def test_the_digest_is_rfc_3230_base64_of_the_sha256():
    value = NEW_FILE.digest.removeprefix("sha-256=")
    assert base64.b64decode(value) == hashlib.sha256(b"n" * 30).digest()
    assert CatalogFile("x", "go1").digest is None


def test_newest_stable_release_and_the_files_that_new():
    assert CATALOG.newest_stable.version == "go1.22.5"
    assert [f.name for f in CATALOG.probe_files()] == ["go1.22.5.linux-amd64.tar.gz",
                                                       "go1.22.5.src.tar.gz"]
    assert CATALOG.new_files == {"go1.23rc1.linux-amd64.tar.gz", "go1.22.5.linux-amd64.tar.gz",
                                 "go1.22.5.src.tar.gz"}


def test_listings_all_and_current():
    assert json.loads(CATALOG.listing(True)) == json.loads(LIST)
    current = [r["version"] for r in json.loads(CATALOG.listing(False))]
    assert current == ["go1.22.5", "go1.21.13"]  # newest stable of the two newest lines


@pytest.mark.parametrize(("older", "newer"), [
    ("go1.22.4", "go1.22.5"), ("go1.22rc2", "go1.22.0"), ("go1.22beta1", "go1.22rc1"),
    ("go1.9", "go1.10"), ("go1.9.7", "go1.10beta1"), ("go1", "go1.0.1"), ("go1.21.13", "go1.22.0"),
])
def test_go_versions_order(older, newer):
    assert go_version_key(older) < go_version_key(newer)


def test_versions_are_ordered_by_version_not_by_list_position():
    shuffled = json.loads(LIST)
    shuffled.reverse()
    assert parse_go(json.dumps(shuffled).encode()).newest_stable.version == "go1.22.5"


@pytest.mark.parametrize(("data", "reason"), [
    (b"<html>", "not JSON"),
    (b"{}", "must be a JSON array of releases"),
    (b'[{"stable": true, "files": []}]', "[0].version: must be str"),
    (b'[{"version": "go1", "stable": "yes", "files": []}]', "[0].stable: must be bool"),
    (b'[{"version": "go1", "stable": true, "files": [{"filename": "../x"}]}]',
     "[0] (go1).files[0].filename: '../x' is not a plain file name"),
    (b'[{"version": "go1", "stable": true, "files": [{"filename": "x", "size": -1}]}]',
     "[0] (go1).files[0].size: must be a whole number of bytes, not -1"),
    (b'[{"version": "go1", "stable": true, "files": [{"filename": "x", "sha256": "zz"}]}]',
     "[0] (go1).files[0].sha256: 'zz' is not 64 hex digits"),
])
def test_a_bad_list_says_where_and_why(data, reason):
    with pytest.raises(CatalogError) as e:
        parse_go(data)
    assert reason in str(e.value)


# ---------------------------------------------------------------- judging a HEAD


@pytest.mark.parametrize(("status", "length", "state", "detail"), [
    (200, 30, A.PRESENT, "HTTP 200"),
    (200, 29, A.WRONG_SIZE, "29 bytes, the catalog says 30"),
    (200, None, A.WRONG_SIZE, "no Content-Length, the catalog says 30"),
    (404, None, A.MISSING, "HTTP 404"),
    (410, None, A.MISSING, "HTTP 410"),
    (403, None, A.MISSING, "HTTP 403"),
    (429, None, None, "HTTP 429"),
    (503, None, None, "HTTP 503"),
    (302, None, None, "HTTP 302"),  # still a redirect after following three
    (None, None, None, "timeout after 3s"),
])
def test_judge(status, length, state, detail):
    outcome = judge(NEW_FILE, status, length, "timeout after 3s" if status is None else None)
    assert outcome == Outcome(state, detail)


def test_a_file_without_a_listed_size_is_present_on_any_200():
    assert judge(CatalogFile("x", "go1"), 200, None).state is A.PRESENT


# ---------------------------------------------------------------- the ledger

CHECKS = FileChecks(ttl=100.0, negative_ttl=10.0)


def two_mirrors() -> Service:
    return service(target("origin", None), target("tyo", "tokyo", "JP"),
                   target("bj", "beijing", "CN"), fallback=("origin",), checks=CHECKS,
                   http_prefix="/")


def ledger_with_catalog(s: Service) -> Ledger:
    ledger = Ledger()
    assert ledger.install(s, CATALOG) and ledger.generation == 1
    assert not ledger.install(s, parse_go(LIST)) and ledger.generation == 1  # the same list
    return ledger


def present(s, ledger, tid, *files, at=0.0):
    for f in files:
        ledger.record(s, tid, f, Outcome(A.PRESENT, "HTTP 200"), at)


def test_results_are_due_after_their_ttl_and_a_failed_check_keeps_what_was_known():
    s = two_mirrors()
    ledger = ledger_with_catalog(s)
    assert ledger.is_due(s, "tyo", OLD_FILE, 0.0)
    assert not ledger.is_due(s, "origin", OLD_FILE, 0.0)  # the origin is never checked
    present(s, ledger, "tyo", OLD_FILE, at=5.0)
    assert not ledger.is_due(s, "tyo", OLD_FILE, 104.9) and ledger.is_due(s, "tyo", OLD_FILE, 105)
    generation = ledger.generation
    assert not ledger.record(s, "tyo", OLD_FILE, Outcome(None, "timeout after 3s"), 200.0)
    assert ledger.view(s, OLD_FILE)("tyo") is A.PRESENT and ledger.generation == generation
    assert ledger.seen("downloads", "tyo", OLD_FILE.name).due == 210.0  # the negative TTL
    assert ledger.record(s, "tyo", OLD_FILE, Outcome(A.MISSING, "HTTP 404"), 211.0)
    assert ledger.view(s, OLD_FILE)("tyo") is A.MISSING and ledger.generation == generation + 1


def test_freshness_and_the_stale_view():
    s = two_mirrors()
    ledger = ledger_with_catalog(s)
    assert [t for t, _f in ledger.freshness_plan(s, 0.0)] == ["tyo", "tyo", "bj", "bj"]
    present(s, ledger, "bj", *CATALOG.probe_files())
    present(s, ledger, "tyo", NEW_FILE, OLD_FILE)
    assert ledger.freshness(s, "tyo") is Freshness.UNKNOWN
    ledger.record(s, "tyo", CATALOG.files["go1.22.5.src.tar.gz"], Outcome(A.MISSING, "x"), 0)
    assert ledger.freshness(s, "tyo") is Freshness.STALE
    assert ledger.freshness(s, "bj") is Freshness.FRESH
    assert ledger.freshness(s, "origin") is Freshness.ORIGIN
    view_new, view_old = ledger.view(s, NEW_FILE), ledger.view(s, OLD_FILE)
    assert [view_new(t) for t in ("origin", "tyo", "bj")] == [A.ORIGIN, A.STALE, A.PRESENT]
    assert [view_old(t) for t in ("origin", "tyo", "bj")] == [A.ORIGIN, A.PRESENT, A.UNKNOWN]
    rc = CATALOG.files["go1.23rc1.linux-amd64.tar.gz"]
    assert ledger.view(s, rc)("tyo") is A.STALE  # newer than the newest stable, too
    assert list(ledger.freshness_plan(s, 1.0)) == []  # nothing due


def test_a_new_catalog_drops_unlisted_results_and_a_reload_drops_moved_targets():
    s = two_mirrors()
    ledger = ledger_with_catalog(s)
    present(s, ledger, "tyo", OLD_FILE, NEW_FILE)
    smaller = parse_go(release_list([("go1.22.5", True, {NEW_FILE.name: b"n" * 30})]))
    assert ledger.install(s, smaller)
    assert ledger.seen("downloads", "tyo", OLD_FILE.name) is None
    assert ledger.seen("downloads", "tyo", NEW_FILE.name).state is A.PRESENT
    moved = service(target("origin", None), target("tyo", "tokyo", "JP", url="https://new/"),
                    fallback=("origin",), http_prefix="/")
    generation = ledger.generation
    ledger.retain(Config((Zone("x.", (), "h.", services=(moved,)),)))
    assert ledger.seen("downloads", "tyo", NEW_FILE.name) is None
    assert ledger.catalog("downloads") is None  # the service has no catalog any more
    assert ledger.generation == generation + 1


# ---------------------------------------------------------------- rank() on a file


def views(**by_id: Availability):
    return lambda tid: by_id.get(tid, A.PRESENT)


def test_rank_excludes_what_is_known_bad_with_reasons():
    s = service(target("tyo", "tokyo", "JP"), target("bj", "beijing", "CN"),
                target("fra", "frankfurt", "DE"), target("la", "la", "US"),
                target("hefei", "hefei", "CN"))
    d = rank(s, client("tokyo", "JP"), states(), Want.URL,
             files=views(tyo=A.STALE, bj=A.WRONG_SIZE, hefei=A.MISSING, fra=A.UNKNOWN))
    assert [c.target.id for c in d.ranked] == ["la"]
    reasons = {c.target.id: c.excluded for c in d.excluded}
    assert reasons == {"tyo": Exclusion.STALE, "bj": Exclusion.WRONG_SIZE,
                       "hefei": Exclusion.MISSING_FILE, "fra": Exclusion.UNVERIFIED}
    assert worth_waiting_for(d) == ()  # fra costs more than la


def test_the_origin_takes_a_file_no_mirror_has_and_unverified_nearer_ones_are_worth_a_wait():
    s = service(target("origin", None), target("tyo", "tokyo", "JP"),
                target("bj", "beijing", "CN"), fallback=("origin",), anycast_km=5000)
    d = rank(s, client("tokyo", "JP"), states(), Want.URL,
             files=views(origin=A.ORIGIN, tyo=A.UNKNOWN, bj=A.MISSING))
    assert [c.target.id for c in d.ranked] == ["origin"] and not d.degraded
    assert worth_waiting_for(d) == ("tyo",)


def test_a_down_origin_is_still_the_fallback_for_a_file_no_mirror_has():
    s = service(target("origin", None), target("tyo", "tokyo", "JP"), fallback=("origin",),
                on_all_down=OnAllDown.FALLBACK)
    d = rank(s, client("tokyo", "JP"), states(origin=Status.DOWN), Want.URL,
             files=views(origin=A.ORIGIN, tyo=A.MISSING))
    assert [c.target.id for c in d.ranked] == ["origin"] and d.degraded
    assert d.ranked[0].standing is Standing.FALLBACK


def test_with_nothing_known_the_unverified_are_ranked_but_never_a_known_bad_one():
    s = service(target("tyo", "tokyo", "JP"), target("bj", "beijing", "CN"),
                target("fra", "frankfurt", "DE"))
    d = rank(s, client("tokyo", "JP"), states(fra=Status.DOWN), Want.URL,
             files=views(tyo=A.MISSING, bj=A.UNKNOWN, fra=A.UNKNOWN))
    assert [(c.target.id, c.standing) for c in d.ranked] == [("bj", Standing.UNVERIFIED)]
    assert {c.target.id: c.excluded for c in d.excluded} == {
        "tyo": Exclusion.MISSING_FILE, "fra": Exclusion.DOWN}
    assert worth_waiting_for(d) == ("bj",)


def test_without_a_file_view_nothing_changes():
    s = service(target("tyo", "tokyo", "JP"), target("bj", "beijing", "CN"))
    plain = rank(s, client("tokyo", "JP"), states(), Want.URL)
    assert [c.target.id for c in plain.ranked] == ["tyo", "bj"]
    assert all(c.file is None for c in plain.ranked)


BAD = {A.MISSING, A.WRONG_SIZE, A.STALE}
FIVE = service(target("origin", None), target("tyo", "tokyo", "JP"),
               target("bj", "beijing", "CN"), target("fra", "frankfurt", "DE"),
               target("la", "la", "US"), fallback=("origin",))


@given(st.lists(st.sampled_from([A.PRESENT, A.UNKNOWN, *BAD]), min_size=4, max_size=4),
       st.lists(st.sampled_from(list(Status)), min_size=5, max_size=5),
       st.sampled_from(list(OnAllDown)), st.sampled_from(["tokyo", "frankfurt", "sydney"]))
def test_no_known_bad_copy_is_ever_ranked(files, health, on_all_down, where):
    by_id = dict(zip(["tyo", "bj", "fra", "la"], files, strict=True))
    s = replace(FIVE, on_all_down=on_all_down)
    status = dict(zip([t.id for t in FIVE.targets], health, strict=True))
    d = rank(s, client(where), status.__getitem__, Want.URL,
             files=lambda tid: A.ORIGIN if tid == "origin" else by_id[tid])
    assert not any(c.file in BAD for c in d.ranked)
    verified = [c for c in d.ranked if c.file in (A.PRESENT, A.ORIGIN)]
    if any(c.standing is Standing.UNVERIFIED for c in d.ranked):
        assert not verified  # the unchecked are served only when nothing known is usable


# ---------------------------------------------------------------- immutable paths (no catalog)

IMMUTABLE = ("*/@v/*.info", "*/@v/*.mod", "*/@v/*.zip")


@pytest.mark.parametrize(("path", "checked"), [
    ("example.com/hello/@v/v1.1.0.zip", True),
    ("github.com/!azure/go-autorest/@v/v14.2.0+incompatible.mod", True),
    ("example.com/hello/@v/v1.1.0.info", True),
    ("example.com/hello/@v/list", False),  # mutable: a new version changes it
    ("example.com/hello/@latest", False),
    ("example.com/hello/@v/v1.1.0.zip.meta4", False),
])
def test_immutable_paths_are_checked_and_mutable_ones_not(path, checked):
    svc = replace(service(target("a", "tokyo")), immutable=IMMUTABLE)
    found = svc.checked(path)
    assert (found is not None) is checked
    if found is not None:
        assert (found.name, found.size, found.sha256) == (path, None, None)


def test_without_a_size_a_200_means_present():
    file = CatalogFile("example.com/hello/@v/v1.1.0.zip", "")
    assert judge(file, 200, 123).state is Availability.PRESENT
    assert judge(file, 200, None).state is Availability.PRESENT
    assert judge(file, 404, None).state is Availability.MISSING


def test_another_process_learns_an_immutable_paths_result():
    svc = replace(service(target("a", "tokyo")), immutable=IMMUTABLE)
    config = Config((Zone("example.org.", ("ns.example.org.",), "h.example.org.", 300, 60,
                          1, 3600, 600, 604800, (), (svc,), "test"),))
    mine, theirs = Ledger(), Ledger()
    events = []
    mine.journal = events.append
    file = svc.checked("example.com/hello/@v/v1.1.0.zip")
    assert file is not None
    mine.record(svc, "a", file, Outcome(Availability.MISSING, "HTTP 404"), 1.0)
    for event in events:
        theirs.apply(event, config)
    assert theirs.view(svc, file)("a") is Availability.MISSING


def test_results_per_mirror_are_bounded():
    svc = replace(service(target("a", "tokyo")), immutable=IMMUTABLE)
    ledger = Ledger(max_files=16)
    for i in range(40):
        ledger.record(svc, "a", CatalogFile(f"m/@v/v{i}.zip", ""),
                      Outcome(Availability.PRESENT, "HTTP 200"), float(i))
    held = [i for i in range(40) if ledger.seen(svc.name, "a", f"m/@v/v{i}.zip")]
    assert len(held) <= 16 and held[-1] == 39  # the newest stay, the oldest went
