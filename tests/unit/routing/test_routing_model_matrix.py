import numpy as np
import pytest

from services.routing.solver.matrix import (
    UNREACHABLE,
    EuclideanProvider,
    HaversineProvider,
    OsrmTableProvider,
    SpeedProfile,
    TrafficIncident,
    haversine_m,
)
from services.routing.solver.model import (
    Location,
    Stop,
    StopKind,
    TimeWindow,
    Vehicle,
)

tw = TimeWindow


def test_problem_rejects_inconsistent_input(mk):
    build = mk
    v = Vehicle("v", 0, 0, (10,))
    with pytest.raises(ValueError, match="duplicate stop"):
        build([(0, 0), (1, 0)], [Stop("a", 1), Stop("a", 1)], [v])
    with pytest.raises(ValueError, match="dims"):
        build([(0, 0), (1, 0)], [Stop("a", 1, (1, 2))], [v])
    with pytest.raises(ValueError, match="overlap"):
        Stop("a", 1, windows=(tw(0, 10), tw(5, 20)))
    with pytest.raises(ValueError, match="pair"):
        Stop("p", 1, kind=StopKind.PICKUP)
    with pytest.raises(ValueError, match="matching partner"):
        build([(0, 0), (1, 0)], [Stop("p", 1, (1,), kind=StopKind.PICKUP, pair="x")], [v])


def test_priority_maps_to_increasing_drop_penalty_and_required_dominates():
    low = Stop("a", 1, required=False, priority=0)
    high = Stop("b", 1, required=False, priority=3)
    req = Stop("c", 1)
    assert low.drop_penalty < high.drop_penalty < req.drop_penalty


def test_required_penalty_grows_with_priority_and_sums_stay_inside_int64():
    required = [Stop("r", 1, priority=p).drop_penalty for p in range(21)]
    assert all(a < b for a, b in zip(required, required[1:], strict=False))
    optional = [Stop("o", 1, required=False, priority=p).drop_penalty for p in range(14)]
    assert max(optional) < required[0]
    # Solvers scale penalties by a cost factor of at most 1,000: 10^4 stops of the highest
    # priority leave three quarters of int64 for the route costs.
    assert 10**4 * required[-1] * 1000 < 2**63 // 4


@pytest.mark.parametrize("required", [True, False])
def test_a_pair_carries_the_penalty_of_one_shipment(required):
    plain = Stop("s", 1, required=required, priority=2)
    pick = Stop("p", 1, required=required, priority=2, kind=StopKind.PICKUP, pair="d")
    drop = Stop("d", 2, required=required, priority=2, kind=StopKind.DELIVERY, pair="p")
    assert pick.drop_penalty + drop.drop_penalty == plain.drop_penalty


def test_multi_dimensional_problem_builds(mk):
    build = mk
    p = build([(0, 0), (3, 4)], [Stop("a", 1, (5, 2, 1))],
              [Vehicle("v", 0, None, (10, 5, 3), skills=frozenset({"fridge"}))])
    assert p.dimensions == 3 and p.matrix.dist(0, 1) == 5


def test_euclidean_dimacs_truncates_to_one_decimal():
    m = EuclideanProvider(scale=10, rounding="floor").build([Location(0, 0), Location(1, 1)])
    assert m.dist(0, 1) == 14  # sqrt(2) = 1.414 -> 1.4, stored x10
    assert m.time(0, 1) == 14
    # Exact decimals must not lose a unit to floating point: 3-4-5 triangle scaled by 0.1.
    m = EuclideanProvider(scale=10, rounding="floor").build([Location(0, 0), Location(0.3, 0.4)])
    assert m.dist(0, 1) == 5


def test_haversine_provider_uses_road_factor_and_speed_profile():
    paris, london = Location.latlng(48.8566, 2.3522), Location.latlng(51.5074, -0.1278)
    assert haversine_m(paris, london) == pytest.approx(343_500, rel=0.005)
    prov = HaversineProvider(road_factor=1.2, speed=SpeedProfile(((0, 90.0), (8, 30.0))))
    night = prov.build([paris, london], depart_at=3 * 3600)
    rush = prov.build([paris, london], depart_at=9 * 3600)
    assert night.dist(0, 1) == pytest.approx(1.2 * 343_500, rel=0.005)
    assert rush.time(0, 1) == pytest.approx(3 * night.time(0, 1), rel=0.001)


def test_incident_slows_only_legs_through_its_area_during_its_span():
    a, b = Location.latlng(52.0, 4.0), Location.latlng(52.0, 4.2)  # west-east leg
    c = Location.latlng(52.3, 4.0)  # north of a, far from the incident
    inc = TrafficIncident(Location.latlng(52.0, 4.1), 1000, 3.0, start=0, end=3600)
    prov = HaversineProvider(speed=SpeedProfile(((0, 50.0),)), incidents=(inc,))
    during = prov.build([a, b, c], depart_at=100)
    after = prov.build([a, b, c], depart_at=4000)
    assert during.time(0, 1) == pytest.approx(3 * after.time(0, 1), abs=1)
    assert during.time(0, 2) == after.time(0, 2)
    assert during.dist(0, 1) == after.dist(0, 1)  # slower, not longer


def test_osrm_request_url_and_canned_response():
    prov = OsrmTableProvider("http://osrm:5000/")
    locs = [Location.latlng(52.1, 4.3), Location.latlng(52.2, 4.4)]
    assert prov.request_url(locs) == (
        "http://osrm:5000/table/v1/driving/4.300000,52.100000;4.400000,52.200000"
        "?annotations=distance,duration"
    )
    resp = {"code": "Ok", "durations": [[0, 612.4], [None, 0]],
            "distances": [[0, 9120.6], [9050, 0]]}
    m = OsrmTableProvider.parse(resp, 2)
    assert (m.time(0, 1), m.dist(0, 1), m.time(1, 0)) == (612, 9121, UNREACHABLE)
    assert OsrmTableProvider("u", fetch=lambda url: resp).build(locs).dist(1, 0) == 9050
    with pytest.raises(ValueError, match="NoRoute"):
        OsrmTableProvider.parse({"code": "NoRoute"}, 2)


def test_matrix_is_read_only():
    m = EuclideanProvider().build([Location(0, 0), Location(1, 0)])
    with pytest.raises(ValueError):
        m.distance[0, 1] = 0
    assert isinstance(m.distance, np.ndarray)


def test_time_window_validation():
    with pytest.raises(ValueError):
        TimeWindow(10, 5)
