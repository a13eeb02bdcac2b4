"""The decision engine: ``rank()`` on hand-built services, tables of cases, and invariants."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck as HypothesisCheck
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core import scoring, steering
from router.core.config import HealthCheck, OnAllDown, Service, Target
from router.core.earth import Point, distance_km
from router.core.geo import Location
from router.core.health import Status
from router.core.steering import Exclusion, Standing, Want, describe, rank

# Great-circle distances between city centres, worked out independently of router.core.earth by the
# spherical law of cosines (R = 6371.0088 km); they agree with published figures
# (London-Paris 344 km, Tokyo-Beijing ~2,100 km, London-New York 5,570 km, ...).
CITY = {
    "tokyo": Point(35.68, 139.69),
    "yokohama": Point(35.44, 139.64),
    "osaka": Point(34.69, 135.50),
    "beijing": Point(39.90, 116.40),
    "hefei": Point(31.84, 117.26),
    "london": Point(51.5074, -0.1278),
    "paris": Point(48.8566, 2.3522),
    "frankfurt": Point(50.11, 8.68),
    "nyc": Point(40.7128, -74.0060),
    "la": Point(34.0522, -118.2437),
    "saopaulo": Point(-23.55, -46.63),
    "sydney": Point(-33.8688, 151.2093),
    "auckland": Point(-36.8485, 174.7633),
}
KM_TOLERANCE = 1.0

V4 = ipaddress.ip_address("192.0.2.10")
V6 = ipaddress.ip_address("2001:db8::10")


def target(tid: str, where: str | Point | None, country: str | None = None, *,
           addresses: tuple[str, ...] = ("192.0.2.10", "2001:db8::10"),
           url: str | None = "https://mirror.example/", weight: int = 100,
           only: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
           enabled: bool = True) -> Target:
    """A target; ``where`` is a city name, a Point, or None for anycast."""
    point = CITY[where] if isinstance(where, str) else where
    return Target(
        id=tid, location=point, country=country,
        addresses=tuple(ipaddress.ip_address(a) for a in addresses),
        url=url, weight=weight, only_countries=frozenset(only),
        exclude_countries=frozenset(exclude), enabled=enabled,
    )


def service(*targets: Target, **kw: Any) -> Service:
    return Service(name="downloads", origin="go.example.com.", targets=targets, **kw)


def always_up(_target_id: str) -> Status:
    return Status.UP


def client(where: str | Point | None, country: str | None = None,
           network: str = "203.0.113.0/24") -> Location:
    point = CITY[where] if isinstance(where, str) else where
    return Location.of(ipaddress.ip_network(network), point, country)


def states(**by_id: Status) -> Callable[[str], Status]:
    """A health view: the named targets have the given status, the rest are UP."""
    return lambda tid: by_id.get(tid, Status.UP)


def ids(candidates: tuple[steering.Candidate, ...]) -> list[str]:
    return [c.target.id for c in candidates]


def rows_of(decision: steering.Decision) -> list[dict[str, Any]]:
    rows = describe(decision)["candidates"]
    assert isinstance(rows, list)
    return rows


def first_id(svc: Service, where: Location) -> str:
    best = rank(svc, where, always_up, Want.ANY).ranked[0].target
    assert best is not None
    return best.id


def reasons(candidates: tuple[steering.Candidate, ...]) -> dict[str, Exclusion | None]:
    return {c.target.id: c.excluded for c in candidates}


# ---------------------------------------------------------------- distance and cost


@pytest.mark.parametrize(("origin", "there", "km"), [
    ("tokyo", "beijing", 2093.2),
    ("london", "paris", 343.6),
    ("nyc", "la", 3935.8),
    ("sydney", "auckland", 2155.9),
    ("frankfurt", "saopaulo", 9829.0),
    ("london", "nyc", 5570.2),
    ("beijing", "hefei", 899.6),
    ("tokyo", "tokyo", 0.0),
    (Point(0.0, 0.0), Point(0.0, 180.0), 20015.1),  # half the equator
    (Point(90.0, 0.0), Point(-90.0, 45.0), 20015.1),  # pole to pole
])
def test_distance_is_great_circle_km(origin: str | Point, there: str | Point, km: float) -> None:
    decision = rank(service(target("m", there)), client(origin), always_up, Want.ANY)
    (only,) = decision.ranked
    assert only.distance_km == pytest.approx(km, abs=KM_TOLERANCE)
    assert only.cost == pytest.approx(km, abs=KM_TOLERANCE)
    assert only.border_km == 0.0


@pytest.mark.parametrize(("origin", "client_country", "there", "target_country", "weight",
                          "border", "km", "cost"), [
    # cost = (km + border when the countries differ) / (weight / 100)
    ("tokyo", "JP", "beijing", "CN", 200, 500.0, 2093.2, (2093.2 + 500) / 2),
    ("london", "GB", "paris", "FR", 50, 1000.0, 343.6, (343.6 + 1000) / 0.5),
    ("nyc", "US", "la", "US", 100, 1000.0, 3935.8, 3935.8),  # same country: no penalty
    ("sydney", "AU", "auckland", "NZ", 100, 0.0, 2155.9, 2155.9),  # penalty off
    ("beijing", "CN", "hefei", None, 100, 800.0, 899.6, 899.6),  # target country unknown
    ("beijing", None, "hefei", "CN", 100, 800.0, 899.6, 899.6),  # client country unknown
    ("frankfurt", "DE", "saopaulo", "BR", 400, 300.0, 9829.0, (9829.0 + 300) / 4),
])
def test_cost_is_distance_plus_border_over_weight(
        origin: str, client_country: str | None, there: str, target_country: str | None,
        weight: int, border: float, km: float, cost: float) -> None:
    svc = service(target("m", there, target_country, weight=weight), cross_border_km=border)
    (c,) = rank(svc, client(origin, client_country), always_up, Want.ANY).ranked
    assert c.distance_km == pytest.approx(km, abs=KM_TOLERANCE)
    crosses = client_country and target_country and client_country != target_country
    assert c.border_km == (border if crosses else 0.0)
    assert c.cost == pytest.approx(cost, abs=KM_TOLERANCE)


@pytest.mark.parametrize(("anycast_km", "weight", "border", "cost"), [
    (1000.0, 100, 0.0, 1000.0),
    (250.0, 50, 0.0, 500.0),
    (250.0, 100, 300.0, 550.0),
])
def test_anycast_target_is_anycast_km_from_everyone(anycast_km: float, weight: int,
                                                    border: float, cost: float) -> None:
    svc = service(target("cdn", None, "US", weight=weight), anycast_km=anycast_km,
                  cross_border_km=border)
    for where in ("tokyo", "saopaulo", "london"):
        (c,) = rank(svc, client(where, "JP"), always_up, Want.ANY).ranked
        assert c.distance_km == anycast_km
        assert c.cost == pytest.approx(cost)


def test_unlocated_client_is_measured_from_the_default_location() -> None:
    svc = service(target("par", "paris", "FR"), target("bj", "beijing", "CN"),
                  default_location=CITY["london"])
    decision = rank(svc, client(None, "CN"), always_up, Want.ANY)
    assert decision.origin == CITY["london"]
    par = next(c for c in decision.ranked if c.target.id == "par")
    assert par.distance_km == pytest.approx(343.6, abs=KM_TOLERANCE)
    assert ids(decision.ranked) == ["par", "bj"]  # nearer London, though the client is CN
    assert describe(decision)["default_location_used"] is True


def test_located_client_ignores_the_default_location() -> None:
    svc = service(target("par", "paris", "FR"), target("bj", "beijing", "CN"),
                  default_location=CITY["london"])
    decision = rank(svc, client("tokyo", "JP"), always_up, Want.ANY)
    assert decision.origin == CITY["tokyo"]
    assert ids(decision.ranked) == ["bj", "par"]
    assert describe(decision)["default_location_used"] is False


@pytest.mark.parametrize(("client_country", "weights", "border", "costs", "order"), [
    # no location anywhere: cost = border / (weight / 100), distance plays no part
    ("JP", {"jp": 100, "cn": 100, "cdn": 100}, 500.0, {"jp": 0, "cn": 500, "cdn": 0},
     ["cdn", "jp", "cn"]),
    ("CN", {"jp": 100, "cn": 100, "cdn": 100}, 500.0, {"jp": 500, "cn": 0, "cdn": 0},
     ["cdn", "cn", "jp"]),
    ("CN", {"jp": 400, "cn": 100, "cdn": 100}, 500.0, {"jp": 125, "cn": 0, "cdn": 0},
     ["cdn", "cn", "jp"]),
    (None, {"jp": 100, "cn": 100, "cdn": 100}, 500.0, {"jp": 0, "cn": 0, "cdn": 0}, None),
])
def test_unlocated_client_without_default_ranks_by_border_and_weight(
        client_country: str | None, weights: dict[str, int], border: float,
        costs: dict[str, float], order: list[str] | None) -> None:
    svc = service(target("jp", "tokyo", "JP", weight=weights["jp"]),
                  target("cn", "beijing", "CN", weight=weights["cn"]),
                  target("cdn", None, None, weight=weights["cdn"]), cross_border_km=border)
    decision = rank(svc, client(None, client_country), always_up, Want.ANY)
    assert decision.origin is None
    assert all(c.distance_km is None for c in decision.ranked)
    assert {c.target.id: c.cost for c in decision.ranked} == pytest.approx(costs)
    zero = [c for c in decision.ranked if c.cost == 0]
    assert {c.target.id for c in decision.ranked[: len(zero)]} == {c.target.id for c in zero}
    if order is not None:
        # the zero-cost pair is hashed, so compare it as a set and the tail in order
        assert set(ids(decision.ranked)[:2]) == set(order[:2])
        assert ids(decision.ranked)[2:] == order[2:]


# ---------------------------------------------------------------- order and exclusions

SIX = service(
    target("tyo", "tokyo", "JP"),
    target("bj", "beijing", "CN", addresses=("192.0.2.20",)),
    target("fra", "frankfurt", "DE", addresses=("2001:db8::30",), url=None),
    target("iad", "nyc", "US", enabled=False),
    target("gru", "saopaulo", "BR", only=("BR", "AR")),
    target("syd", "sydney", "AU", exclude=("JP",)),
)


@pytest.mark.parametrize(("where", "country", "health", "want", "ranked", "excluded"), [
    pytest.param("tokyo", "JP", {}, Want.IPV4, ["tyo", "bj"], {
        "fra": Exclusion.NO_ADDRESS, "iad": Exclusion.DISABLED,
        "gru": Exclusion.NOT_FOR_COUNTRY, "syd": Exclusion.COUNTRY_EXCLUDED}, id="jp-a"),
    pytest.param("tokyo", "JP", {}, Want.IPV6, ["tyo", "fra"], {
        "bj": Exclusion.NO_ADDRESS, "iad": Exclusion.DISABLED,
        "gru": Exclusion.NOT_FOR_COUNTRY, "syd": Exclusion.COUNTRY_EXCLUDED}, id="jp-aaaa"),
    pytest.param("tokyo", "JP", {}, Want.URL, ["tyo", "bj"], {
        "fra": Exclusion.NO_URL, "iad": Exclusion.DISABLED,
        "gru": Exclusion.NOT_FOR_COUNTRY, "syd": Exclusion.COUNTRY_EXCLUDED}, id="jp-url"),
    pytest.param("tokyo", "JP", {"tyo": Status.DOWN}, Want.IPV4, ["bj"], {
        "tyo": Exclusion.DOWN, "fra": Exclusion.NO_ADDRESS, "iad": Exclusion.DISABLED,
        "gru": Exclusion.NOT_FOR_COUNTRY, "syd": Exclusion.COUNTRY_EXCLUDED}, id="jp-tyo-down"),
    pytest.param("tokyo", "JP", {"tyo": Status.UNKNOWN, "bj": Status.DOWN}, Want.ANY,
                 ["tyo", "fra"], {
                     "bj": Exclusion.DOWN, "iad": Exclusion.DISABLED,
                     "gru": Exclusion.NOT_FOR_COUNTRY, "syd": Exclusion.COUNTRY_EXCLUDED},
                 id="unknown-is-usable"),
    pytest.param("tokyo", "JP", {"iad": Status.DOWN, "gru": Status.DOWN}, Want.ANY,
                 ["tyo", "bj", "fra"], {
                     "iad": Exclusion.DISABLED, "gru": Exclusion.NOT_FOR_COUNTRY,
                     "syd": Exclusion.COUNTRY_EXCLUDED}, id="static-reason-before-health"),
    pytest.param("saopaulo", "BR", {}, Want.ANY, ["gru", "fra", "syd", "bj", "tyo"], {
        "iad": Exclusion.DISABLED}, id="br-any"),
    pytest.param("saopaulo", "BR", {}, Want.IPV4, ["gru", "syd", "bj", "tyo"], {
        "iad": Exclusion.DISABLED, "fra": Exclusion.NO_ADDRESS}, id="br-a"),
    pytest.param("tokyo", None, {}, Want.IPV4, ["tyo", "bj", "syd"], {
        "fra": Exclusion.NO_ADDRESS, "iad": Exclusion.DISABLED,
        "gru": Exclusion.NOT_FOR_COUNTRY}, id="country-unknown"),
])
def test_order_and_exclusions(where: str, country: str | None, health: dict[str, Status],
                              want: Want, ranked: list[str],
                              excluded: dict[str, Exclusion]) -> None:
    decision = rank(SIX, client(where, country), states(**health), want)
    assert ids(decision.ranked) == ranked
    assert reasons(decision.excluded) == excluded
    assert decision.ranked[0].standing is Standing.NEAREST
    assert all(c.standing is Standing.BY_COST for c in decision.ranked[1:])
    assert all(c.excluded is None for c in decision.ranked)
    assert decision.chosen(1) == (decision.ranked[0].target,)
    assert not decision.degraded
    assert decision.ttl == SIX.ttl


def test_excluded_candidates_keep_their_figures_and_status() -> None:
    decision = rank(SIX, client("tokyo", "JP"), states(tyo=Status.DOWN), Want.ANY)
    tyo = next(c for c in decision.excluded if c.target.id == "tyo")
    assert tyo.status is Status.DOWN
    assert tyo.distance_km == pytest.approx(0.0)
    assert tyo.reason == Exclusion.DOWN.value
    assert decision.ranked[0].reason == Standing.NEAREST.value


def test_spread_groups_near_equal_targets() -> None:
    # From Osaka: Tokyo 396 km and Yokohama 386 km are within 1.5x; Beijing 1782 km is not.
    svc = service(target("tyo", "tokyo"), target("yok", "yokohama"), target("bj", "beijing"),
                  spread=1.5)
    decision = rank(svc, client("osaka"), always_up, Want.ANY)
    assert {c.target.id for c in decision.ranked[:2]} == {"tyo", "yok"}
    assert [c.standing for c in decision.ranked] == [Standing.SPREAD, Standing.SPREAD,
                                                     Standing.BY_COST]
    assert decision.ranked[2].target.id == "bj"


def test_spread_one_picks_strictly_nearest() -> None:
    svc = service(target("tyo", "tokyo"), target("yok", "yokohama"), target("bj", "beijing"))
    decision = rank(svc, client("osaka"), always_up, Want.ANY)
    assert ids(decision.ranked) == ["yok", "tyo", "bj"]
    assert [c.standing for c in decision.ranked] == [Standing.NEAREST, Standing.BY_COST,
                                                     Standing.BY_COST]


@pytest.mark.parametrize(("spread", "standings"), [
    # two anycast targets at 1000 km: costs 1000 (weight 100) and exactly 2000 (weight 50)
    (2.0, [Standing.SPREAD, Standing.SPREAD]),
    (1.99, [Standing.NEAREST, Standing.BY_COST]),
])
def test_spread_boundary_is_inclusive(spread: float, standings: list[Standing]) -> None:
    svc = service(target("heavy", None), target("light", None, weight=50), spread=spread)
    decision = rank(svc, client("tokyo"), always_up, Want.ANY)
    assert [c.standing for c in decision.ranked] == standings
    if standings[0] is Standing.NEAREST:
        assert ids(decision.ranked) == ["heavy", "light"]


@pytest.mark.parametrize(("spread_km", "standings"), [
    (0.0, [Standing.NEAREST, Standing.BY_COST]),   # best cost 0: no ratio reaches Yokohama
    (50.0, [Standing.SPREAD, Standing.SPREAD]),    # ~27 km away: within the absolute slack
])
def test_spread_km_lets_a_client_on_top_of_a_mirror_share_load(
        spread_km: float, standings: list[Standing]) -> None:
    svc = service(target("tyo", "tokyo"), target("yok", "yokohama"), spread=1.5,
                  spread_km=spread_km)
    decision = rank(svc, client("tokyo"), always_up, Want.ANY)
    assert [c.standing for c in decision.ranked] == standings


def test_ties_outside_the_spread_are_ordered_by_id() -> None:
    svc = service(target("near", "tokyo"), target("b", None), target("a", None))
    decision = rank(svc, client("tokyo"), always_up, Want.ANY)
    assert ids(decision.ranked) == ["near", "a", "b"]


def test_rendezvous_score_never_divides_by_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """The largest 64-bit digest must still give u < 1 (ln u != 0)."""
    class Top:
        def __init__(self, data: bytes, digest_size: int) -> None:
            assert digest_size == 8

        def digest(self) -> bytes:
            return b"\xff" * 8

    class FakeHashlib:
        blake2b = Top

    monkeypatch.setattr(scoring, "hashlib", FakeHashlib)
    svc = service(target("a", "tokyo", weight=100), target("b", "tokyo", weight=300),
                  spread=1.5)
    decision = rank(svc, client("tokyo"), always_up, Want.ANY)
    # equal u for both: the heavier target's score is larger
    assert ids(decision.ranked) == ["b", "a"]


# ---------------------------------------------------------------- all down

ALL_DOWN = dict(tyo=Status.DOWN, bj=Status.DOWN, fra=Status.DOWN, off=Status.DOWN)


def down_service(mode: OnAllDown, ttl: int = 300, interval: float = 10.0) -> Service:
    return service(
        target("tyo", "tokyo", "JP", addresses=("192.0.2.1",)),
        target("bj", "beijing", "CN", addresses=("192.0.2.2",)),
        target("fra", "frankfurt", "DE", addresses=("2001:db8::3",)),
        target("off", "osaka", "JP", addresses=("192.0.2.4",), enabled=False),
        on_all_down=mode, fallback=("bj", "fra", "off"), ttl=ttl,
        health=HealthCheck(interval=interval),
    )


@pytest.mark.parametrize(("mode", "ranked", "standing", "excluded"), [
    (OnAllDown.FALLBACK, ["bj"], Standing.FALLBACK,
     {"tyo": Exclusion.DOWN, "fra": Exclusion.NO_ADDRESS, "off": Exclusion.DISABLED}),
    (OnAllDown.ALL, ["tyo", "bj"], Standing.FAIL_OPEN,
     {"fra": Exclusion.NO_ADDRESS, "off": Exclusion.DISABLED}),
    (OnAllDown.EMPTY, [], None,
     {"tyo": Exclusion.DOWN, "bj": Exclusion.DOWN, "fra": Exclusion.NO_ADDRESS,
      "off": Exclusion.DISABLED}),
])
def test_on_all_down(mode: OnAllDown, ranked: list[str], standing: Standing | None,
                     excluded: dict[str, Exclusion]) -> None:
    decision = rank(down_service(mode), client("tokyo", "JP"), states(**ALL_DOWN), Want.IPV4)
    assert decision.degraded
    assert ids(decision.ranked) == ranked
    assert all(c.standing is standing for c in decision.ranked)
    assert all(c.excluded is None and c.status is Status.DOWN for c in decision.ranked)
    assert reasons(decision.excluded) == excluded
    assert decision.ttl == 10


def test_all_down_in_another_country_still_honours_country_rules() -> None:
    svc = service(target("jp-only", "tokyo", "JP", only=("JP",)),
                  target("not-cn", "beijing", "CN", exclude=("CN",)),
                  target("any", "frankfurt", "DE"), on_all_down=OnAllDown.ALL)
    health = states(**{"jp-only": Status.DOWN, "not-cn": Status.DOWN, "any": Status.DOWN})
    decision = rank(svc, client("beijing", "CN"), health, Want.ANY)
    assert decision.degraded
    assert ids(decision.ranked) == ["any"]
    assert reasons(decision.excluded) == {"jp-only": Exclusion.NOT_FOR_COUNTRY,
                                          "not-cn": Exclusion.COUNTRY_EXCLUDED}


def test_one_target_up_is_not_degraded() -> None:
    health = states(**{**ALL_DOWN, "tyo": Status.UP})
    decision = rank(down_service(OnAllDown.FALLBACK), client("tokyo", "JP"), health, Want.IPV4)
    assert not decision.degraded
    assert ids(decision.ranked) == ["tyo"]
    assert decision.ttl == 300


def test_nothing_down_but_nothing_fits_is_not_degraded() -> None:
    """No AAAA anywhere and every target healthy: an empty answer, not an all-down one."""
    svc4 = service(target("a", "tokyo", addresses=("192.0.2.1",)), on_all_down=OnAllDown.ALL)
    decision = rank(svc4, client("tokyo", "JP"), always_up, Want.IPV6)
    assert decision.ranked == ()
    assert not decision.degraded
    assert decision.ttl == svc4.ttl
    assert reasons(decision.excluded) == {"a": Exclusion.NO_ADDRESS}


@pytest.mark.parametrize(("ttl", "interval", "expected"), [
    (300, 10.0, 10),
    (5, 10.0, 5),
    (60, 30.5, 30),
    (60, 0.05, 1),  # never zero
    (0, 10.0, 0),
])
def test_degraded_ttl_is_at_most_one_probe_interval(ttl: int, interval: float,
                                                    expected: int) -> None:
    svc = down_service(OnAllDown.ALL, ttl=ttl, interval=interval)
    down = rank(svc, client("tokyo", "JP"), states(**ALL_DOWN), Want.IPV4)
    up = rank(svc, client("tokyo", "JP"), always_up, Want.IPV4)
    assert down.ttl == expected
    assert up.ttl == ttl


# ---------------------------------------------------------------- answers and describe


def test_chosen_returns_answers_targets_in_rank_order() -> None:
    svc = service(target("tyo", "tokyo"), target("osa", "osaka"), target("bj", "beijing"),
                  target("fra", "frankfurt"), answers=3)
    decision = rank(svc, client("tokyo"), always_up, Want.ANY)
    assert [t.id for t in decision.chosen()] == ["tyo", "osa", "bj"]
    assert [t.id for t in decision.chosen(1)] == ["tyo"]
    assert [t.id for t in decision.chosen(10)] == ["tyo", "osa", "bj", "fra"]


def test_chosen_is_short_when_few_targets_are_usable() -> None:
    svc = service(target("tyo", "tokyo"), target("osa", "osaka"), target("bj", "beijing"),
                  answers=3)
    decision = rank(svc, client("tokyo"), states(osa=Status.DOWN), Want.ANY)
    assert [t.id for t in decision.chosen()] == ["tyo", "bj"]


def test_describe_lists_every_candidate_with_reasons() -> None:
    svc = service(target("tyo", "tokyo", "JP"), target("cdn", None, "US"),
                  target("bj", "beijing", "CN", addresses=("192.0.2.2",)),
                  target("fra", "frankfurt", "DE", addresses=("2001:db8::3",)),
                  answers=2, cross_border_km=100.0)
    decision = rank(svc, client("tokyo", "JP", "203.0.113.0/24"), states(bj=Status.DOWN),
                    Want.IPV4)
    data = describe(decision)
    assert data["service"] == "downloads"
    assert data["client"] == {"network": "203.0.113.0/24", "country": "JP", "continent": None,
                              "city": None, "lat": 35.68, "lon": 139.69, "asn": None,
                              "rules": [], "region": None}
    assert data["measured_from"] == {"lat": 35.68, "lon": 139.69}
    assert data["default_location_used"] is False
    assert data["degraded"] is False
    assert data["ttl"] == 30
    rows = rows_of(decision)
    assert [r["id"] for r in rows] == ["tyo", "cdn", "bj", "fra"]
    assert [r["rank"] for r in rows] == [1, 2, None, None]
    assert [r["chosen"] for r in rows] == [True, True, False, False]
    assert [r["excluded"] for r in rows] == [False, False, True, True]
    assert [r["reason"] for r in rows] == [Standing.NEAREST.value, Standing.BY_COST.value,
                                           Exclusion.DOWN.value, Exclusion.NO_ADDRESS.value]
    assert [r["state"] for r in rows] == ["up", "up", "down", "up"]
    cdn = rows[1]
    assert cdn["location"] == "anycast"
    assert cdn["distance_km"] == 1000.0
    assert cdn["border_km"] == 100.0
    assert cdn["cost"] == 1100.0
    assert rows[2]["location"] == {"lat": 39.90, "lon": 116.40}
    assert rows[2]["distance_km"] == pytest.approx(2093.2, abs=KM_TOLERANCE)
    assert rows[2]["addresses"] == ["192.0.2.2"]
    assert rows[0]["url"] == "https://mirror.example/"
    assert rows[0]["weight"] == 100


def test_describe_unlocated_client_without_default() -> None:
    decision = rank(service(target("a", "tokyo")), client(None), always_up, Want.ANY)
    data = describe(decision)
    assert data["measured_from"] is None
    assert data["default_location_used"] is False
    assert data["client"] == {"network": "203.0.113.0/24", "country": None, "continent": None,
                              "city": None, "lat": None, "lon": None, "asn": None,
                              "rules": [], "region": None}
    assert rows_of(decision)[0]["distance_km"] is None


def test_describe_degraded() -> None:
    decision = rank(down_service(OnAllDown.FALLBACK), client("tokyo", "JP"),
                    states(**ALL_DOWN), Want.IPV4)
    data = describe(decision)
    assert data["degraded"] is True
    assert data["ttl"] == 10
    assert [(r["id"], r["rank"], r["reason"]) for r in rows_of(decision)] == [
        ("bj", 1, Standing.FALLBACK.value),
        ("tyo", None, Exclusion.DOWN.value),
        ("fra", None, Exclusion.NO_ADDRESS.value),
        ("off", None, Exclusion.DISABLED.value),
    ]


# ---------------------------------------------------------------- properties

COUNTRIES = ["JP", "CN", "DE", "US", "BR"]
countries = st.sampled_from([*COUNTRIES, None])
points = st.builds(Point, st.floats(-90, 90), st.floats(-180, 180))


@st.composite
def targets(draw: st.DrawFn, count: int) -> tuple[Target, ...]:
    out = []
    for i in range(count):
        rules = draw(st.sets(st.sampled_from(COUNTRIES), max_size=2))
        split = draw(st.sampled_from(["none", "only", "exclude"]))
        out.append(Target(
            id=f"t{i}",
            location=draw(st.one_of(points, points, points, st.none())),
            country=draw(countries),
            addresses=draw(st.sampled_from([(V4,), (V6,), (V4, V6), ()])),
            url=draw(st.sampled_from(["https://m.example/", None])),
            weight=draw(st.sampled_from([1, 50, 100, 100, 100, 250, 1000])),
            only_countries=frozenset(rules) if split == "only" else frozenset(),
            exclude_countries=frozenset(rules) if split == "exclude" else frozenset(),
            enabled=draw(st.sampled_from([True, True, True, False])),
        ))
    return tuple(out)


@st.composite
def scenarios(draw: st.DrawFn, equal_weights: bool = False,
              spread: float | None = None) -> tuple[Service, Location, dict[str, Status], Want]:
    tgts = draw(targets(draw(st.integers(1, 8))))
    if equal_weights:
        tgts = tuple(replace(t, weight=100) for t in tgts)
    tids = [t.id for t in tgts]
    svc = service(
        *tgts,
        answers=draw(st.integers(1, 3)),
        spread=spread if spread is not None else draw(st.sampled_from([1.0, 1.2, 2.0, 5.0])),
        cross_border_km=draw(st.sampled_from([0.0, 300.0, 2000.0])),
        anycast_km=draw(st.sampled_from([0.0, 500.0, 1000.0])),
        default_location=draw(st.one_of(st.none(), points)),
        on_all_down=draw(st.sampled_from(list(OnAllDown))),
        fallback=tuple(draw(st.sets(st.sampled_from(tids)))),
    )
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    net = ipaddress.ip_network((draw(st.integers(0, 2**bits - 1)), draw(st.integers(0, bits))),
                               strict=False)
    where = Location.of(net, draw(st.one_of(points, points, st.none())), draw(countries))
    health = {tid: draw(st.sampled_from(list(Status))) for tid in tids}
    return svc, where, health, draw(st.sampled_from(list(Want)))


PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HypothesisCheck.too_slow])


@PROPERTY
@given(scenarios())
def test_down_never_chosen_while_a_usable_target_is_up(
        case: tuple[Service, Location, dict[str, Status], Want]) -> None:
    svc, where, health, want = case
    decision = rank(svc, where, health.__getitem__, want)
    statically_ok = {c.target.id for c in rank(svc, where, always_up, want).ranked}
    if any(health[tid] is not Status.DOWN for tid in statically_ok):
        assert not decision.degraded
        assert decision.ranked
        assert all(c.status is not Status.DOWN for c in decision.ranked)
        assert {c.target.id for c in decision.ranked} == {
            tid for tid in statically_ok if health[tid] is not Status.DOWN}
    else:
        assert all(c.target.id in statically_ok for c in decision.ranked)
        assert decision.degraded == bool(statically_ok)


@PROPERTY
@given(scenarios())
def test_same_inputs_same_ranking(case: tuple[Service, Location, dict[str, Status],
                                              Want]) -> None:
    svc, where, health, want = case
    first = rank(svc, where, health.__getitem__, want)
    again = rank(svc, where, health.__getitem__, want)
    assert first == again
    reordered = replace(svc, targets=tuple(reversed(svc.targets)))
    shuffled = rank(reordered, where, health.__getitem__, want)
    assert ids(shuffled.ranked) == ids(first.ranked)  # config order plays no part
    assert [c.standing for c in shuffled.ranked] == [c.standing for c in first.ranked]


@PROPERTY
@given(scenarios(equal_weights=True, spread=1.0))
def test_first_choice_is_nearest_with_equal_weights(
        case: tuple[Service, Location, dict[str, Status], Want]) -> None:
    svc, where, health, want = case
    decision = rank(svc, where, health.__getitem__, want)
    if not decision.ranked:
        return
    origin = where.point or svc.default_location

    def figure(t: Target) -> float:
        if origin is None:
            km = 0.0
        else:
            km = svc.anycast_km if t.location is None else distance_km(origin, t.location)
        differs = where.country and t.country and where.country != t.country
        return km + (svc.cross_border_km if differs else 0.0)

    best = min(figure(c.target) for c in decision.ranked)
    assert figure(decision.ranked[0].target) == pytest.approx(best, abs=1e-6)
    costs = [c.cost for c in decision.ranked]
    assert costs[0] == pytest.approx(min(costs))
    tail = [c.cost for c in decision.ranked if c.standing is Standing.BY_COST]
    assert tail == sorted(tail)


@PROPERTY
@given(scenarios())
def test_every_target_is_ranked_or_excluded_exactly_once(
        case: tuple[Service, Location, dict[str, Status], Want]) -> None:
    svc, where, health, want = case
    decision = rank(svc, where, health.__getitem__, want)
    seen = Counter(ids(decision.ranked) + ids(decision.excluded))
    assert seen == Counter(t.id for t in svc.targets)
    assert all(c.excluded is not None for c in decision.excluded)
    assert all(c.excluded is None and c.standing is not None for c in decision.ranked)
    rows = rows_of(decision)
    assert [r["id"] for r in rows] == ids(decision.ranked) + ids(decision.excluded)


@PROPERTY
@given(scenarios(), st.data())
def test_a_stage_orders_as_rank_does(case: tuple[Service, Location, dict[str, Status], Want],
                                     data: st.DataObject) -> None:
    """What a new place is ranked with on the HTTP face (``scoring.line_up`` then
    ``Lineup.order``, the same walk as rank()'s) gives rank()'s order exactly, or None
    where rank() hashed on the network or found nothing usable: latency figures,
    weights, borders, rules and all."""
    svc, where, health, want = case
    waits = {t.id: data.draw(st.sampled_from([None, 5, 40, 41, 300])) for t in svc.targets}
    decision = rank(svc, where, health.__getitem__, want, latency=waits.__getitem__)
    staged = scoring.line_up(svc, steering.whom(where), health.__getitem__, want,
                             latency=waits.__getitem__)
    if staged.degraded or not staged.taking_part:
        assert staged.order(staged.costs(where.point)) is None
        assert decision.degraded or not decision.ranked
        return
    assert not decision.degraded
    order = staged.order(staged.costs(where.point))
    if decision.hashed:
        assert order is None
    else:
        assert order == tuple(ids(decision.ranked))


def networks(count: int) -> list[Location]:
    """``count`` distinct client /24 networks, all in Tokyo."""
    return [client("tokyo", "JP", f"{10 + i // 65536}.{i // 256 % 256}.{i % 256}.0/24")
            for i in range(count)]


def test_spread_shares_co_located_targets_across_networks() -> None:
    svc = service(target("a", "frankfurt"), target("b", "frankfurt"), spread=1.5)
    firsts = Counter(first_id(svc, where) for where in networks(200))
    assert set(firsts) == {"a", "b"}
    assert min(firsts.values()) > 60


def test_spread_is_stable_per_network() -> None:
    svc = service(target("a", "frankfurt"), target("b", "frankfurt"), target("c", "frankfurt"),
                  spread=1.5)
    for where in networks(50):
        one = ids(rank(svc, where, always_up, Want.ANY).ranked)
        same = Location.of(where.network, CITY["tokyo"], "JP")
        assert ids(rank(svc, same, always_up, Want.ANY).ranked) == one


@pytest.mark.parametrize(("heavy", "light", "low", "high"), [
    (300, 100, 0.70, 0.80),  # weighted rendezvous: P(heavy first) = 300 / 400
    (100, 100, 0.45, 0.55),
])
def test_weighted_rendezvous_honours_weights(heavy: int, light: int, low: float,
                                             high: float) -> None:
    # Both anycast: equal distance, so cost = 1000 / (weight / 100); spread covers both.
    svc = service(target("heavy", None, weight=heavy), target("light", None, weight=light),
                  spread=4.0)
    firsts = Counter(first_id(svc, where) for where in networks(2000))
    share = firsts["heavy"] / 2000
    assert low < share < high


def test_removing_a_target_only_moves_its_own_networks() -> None:
    """Rendezvous hashing: networks that did not pick the removed target keep their pick."""
    three = service(target("a", "frankfurt"), target("b", "frankfurt"), target("c", "frankfurt"),
                    spread=1.5)
    two = service(target("a", "frankfurt"), target("b", "frankfurt"), spread=1.5)
    moved = 0
    for where in networks(300):
        before, after = first_id(three, where), first_id(two, where)
        if before != "c":
            assert after == before
        else:
            moved += 1
    assert moved > 50


def test_a_decision_says_whether_it_hashed_on_the_network() -> None:
    """What the redirector's per-place sharing relies on: without a hash, two networks at
    one place get the same ranking; with one, they may not."""
    nearest = service(target("tyo", "tokyo"), target("yok", "yokohama"), target("bj", "beijing"))
    spread = replace(nearest, spread=1.5)
    here = [client("osaka", "JP", f"203.0.{i}.0/24") for i in range(64)]
    plain = [rank(nearest, c, always_up, Want.ANY) for c in here]
    assert not any(d.hashed for d in plain)
    assert len({ids(d.ranked)[0] for d in plain}) == 1
    hashed = [rank(spread, c, always_up, Want.ANY) for c in here]
    assert all(d.hashed for d in hashed)
    assert {ids(d.ranked)[0] for d in hashed} == {"tyo", "yok"}  # networks spread
    # The hash shows even when an all-down fallback takes the standings over.
    down = rank(replace(spread, on_all_down=OnAllDown.ALL), here[0],
                states(tyo=Status.DOWN, yok=Status.DOWN, bj=Status.DOWN), Want.ANY)
    assert down.degraded and down.hashed


@pytest.mark.parametrize("spread_km", [0.0, 800.0])
def test_the_head_walked_nearest_first_is_the_head_of_the_whole_ranking(spread_km) -> None:
    """With many targets, a DNS answer ranks only the targets near the client
    (``Lineup.costs(head=...)``, a k-d tree walk): its first places are the whole
    ranking's, whatever the weights, the anycast and down targets and the spread."""
    import random

    rnd = random.Random(28)
    many = [target(f"m{n}", Point(rnd.uniform(-60, 70), rnd.uniform(-180, 180)),
                   weight=rnd.choice((50, 100, 100, 200, 400))) for n in range(300)]
    many += [target("any1", None), target("any2", None, weight=300)]
    svc = service(*many, answers=3, spread_km=spread_km, anycast_km=3000.0)
    down = states(**{f"m{n}": Status.DOWN for n in range(0, 300, 7)})
    lineup = scoring.line_up(svc, steering.Whom(None), down, Want.IPV4)
    assert lineup.located is not None  # walked nearest first
    for n in range(300):
        here = client(Point(rnd.uniform(-89, 89), rnd.uniform(-180, 180)),
                      network=f"198.18.{n % 256}.{n // 256}/32")
        whole = steering.decision(lineup, here)
        head = steering.decision(lineup, here, head=3)
        assert ids(head.ranked) == ids(whole.ranked)[:3]
        assert head.hashed == whole.hashed
        assert [c.cost for c in head.ranked] == [c.cost for c in whole.ranked[:3]]
