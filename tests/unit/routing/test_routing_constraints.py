"""Each constraint on a tiny instance whose right answer is known, through both backends."""

import pytest

from services.routing.solver import (
    Break,
    ORToolsSolver,
    PyVRPSolver,
    Stop,
    StopKind,
    TimeWindow,
    UnassignedReason,
    Vehicle,
    check,
    referee,
    solve,
)

tw = TimeWindow
LIMIT = 0.4
BOTH = [PyVRPSolver(), ORToolsSolver()]


def run(problem, solver=None, limit=LIMIT):
    if solver is None:
        sol = solve(problem, limit)
    else:
        sol = referee(problem, solver.solve(problem, limit))
    assert sol.feasible, sol.violations
    assert check(problem, sol) == []
    return sol


def routes(sol):
    return {r.vehicle_id: r.stop_ids for r in sol.routes}


@pytest.mark.parametrize("solver", BOTH, ids=lambda s: s.name)
def test_capacity_forces_two_vehicles(mk, solver):
    p = mk([(0, 0), (10, 0), (-10, 0)], [Stop("A", 1, (6,)), Stop("B", 2, (6,))],
           [Vehicle("v1", 0, 0, (10,)), Vehicle("v2", 0, 0, (10,))])
    assert sorted(routes(run(p, solver)).values()) == [["A"], ["B"]]


@pytest.mark.parametrize("solver", BOTH, ids=lambda s: s.name)
def test_time_window_forces_order(mk, solver):
    # By distance A (x=10) comes first, but B (x=20) must be served before t=30.
    p = mk([(0, 0), (10, 0), (20, 0)],
           [Stop("A", 1, windows=(tw(100, 110),)), Stop("B", 2, windows=(tw(0, 30),))],
           [Vehicle("v1", 0, 0, ())])
    sol = run(p, solver)
    assert routes(sol) == {"v1": ["B", "A"]}
    assert sol.routes[0].visits[1].start >= 100


def test_two_windows_only_second_reachable(mk):
    p = mk([(0, 0), (50, 0)], [Stop("A", 1, windows=(tw(0, 10), tw(100, 120)))],
           [Vehicle("v1", 0, 0, ())])
    sol = run(p)
    assert sol.solver == "portfolio/ortools"  # PyVRP cannot model two windows
    assert 100 <= sol.routes[0].visits[0].start <= 120


def test_skill_only_one_vehicle_has(mk):
    # v2 is far away, so only the skill requirement can send A to it.
    p = mk([(0, 0), (100, 0), (10, 0), (-10, 0)],
           [Stop("A", 2, skills=frozenset({"fridge"})), Stop("B", 3)],
           [Vehicle("v1", 0, 0, ()), Vehicle("v2", 1, 1, (), skills=frozenset({"fridge"}))])
    assert routes(run(p)) == {"v1": ["B"], "v2": ["A"]}


def test_pickup_before_delivery_on_one_vehicle(mk):
    p = mk([(0, 0), (30, 0), (10, 0)],
           [Stop("P", 1, (5,), kind=StopKind.PICKUP, pair="D"),
            Stop("D", 2, (5,), kind=StopKind.DELIVERY, pair="P")],
           [Vehicle("v1", 0, 0, (5,)), Vehicle("v2", 0, 0, (5,))])
    sol = run(p)
    assert list(routes(sol).values()) == [["P", "D"]]
    assert [v.load_after for v in sol.routes[0].visits] == [(5,), (0,)]


def test_break_is_planned_inside_its_window(mk):
    p = mk([(0, 0), (10, 0), (30, 0)],
           [Stop("A", 1, service_s=5), Stop("B", 2, service_s=5, windows=(tw(0, 100),))],
           [Vehicle("v1", 0, 0, (), breaks=(Break(tw(20, 40), 15),))])
    sol = run(p)
    (b,) = sol.routes[0].breaks
    assert 20 <= b.start <= 25 and b.duration_s == 15
    assert sol.routes[0].end_time >= 60 + 10 + 15  # travel + service + break


@pytest.mark.parametrize("solver", BOTH, ids=lambda s: s.name)
def test_max_distance_splits_route(mk, solver):
    p = mk([(0, 0), (40, 0), (0, 40)], [Stop("A", 1), Stop("B", 2)],
           [Vehicle(v, 0, 0, (), max_distance_m=100) for v in ("v1", "v2")])
    sol = run(p, solver)
    assert sorted(routes(sol).values()) == [["A"], ["B"]]
    assert sol.distance == 160


@pytest.mark.parametrize("solver", BOTH, ids=lambda s: s.name)
def test_open_route_has_no_return_leg(mk, solver):
    p = mk([(0, 0), (10, 0), (20, 0)], [Stop("A", 1), Stop("B", 2)], [Vehicle("v1", 0, None, ())])
    sol = run(p, solver)
    assert routes(sol) == {"v1": ["A", "B"]} and sol.distance == 20


@pytest.mark.parametrize("solver", BOTH, ids=lambda s: s.name)
def test_two_depots_serve_their_own_side(mk, solver):
    p = mk([(0, 0), (100, 0), (5, 0), (95, 0), (8, 0)],
           [Stop("W", 2), Stop("E", 3), Stop("W2", 4)],
           [Vehicle("west", 0, 0, ()), Vehicle("east", 1, 1, ())])
    assert routes(run(p, solver)) in (
        {"west": ["W", "W2"], "east": ["E"]}, {"west": ["W2", "W"], "east": ["E"]})


@pytest.mark.parametrize("solver", BOTH, ids=lambda s: s.name)
def test_low_priority_stop_is_the_one_dropped(mk, solver):
    p = mk([(0, 0), (10, 0), (11, 0), (12, 0)],
           [Stop("mid", 1, (5,), required=False, priority=1),
            Stop("low", 2, (5,), required=False, priority=0),
            Stop("high", 3, (5,), required=False, priority=2)],
           [Vehicle("v1", 0, 0, (10,))])
    sol = run(p, solver)
    assert [(u.stop_id, u.reason) for u in sol.unassigned] == [
        ("low", UnassignedReason.DROPPED_FOR_COST)]



# PyVRP, tried first by the portfolio, warns that it finds no feasible plan: that is expected.
@pytest.mark.filterwarnings("ignore::pyvrp.exceptions.PenaltyBoundWarning")
@pytest.mark.parametrize("solver", [None, ORToolsSolver()], ids=["portfolio", "ortools"])
@pytest.mark.parametrize("first", ["low", "high"])
def test_full_fleet_leaves_out_the_lower_priority_required_stop(mk, solver, first):
    """One vehicle has room for one of two required stops that differ only in priority: the
    higher priority is served, whichever stop comes first, and the other is FLEET_EXHAUSTED.
    The portfolio gets there through OR-Tools: PyVRP cannot leave a required stop out."""
    stops = {"low": Stop("low", 1, (6,), priority=1), "high": Stop("high", 1, (6,), priority=3)}
    order = [first, *(name for name in stops if name != first)]
    p = mk([(0, 0), (10, 0)], [stops[name] for name in order], [Vehicle("v1", 0, 0, (10,))])
    sol = run(p, solver)
    assert routes(sol) == {"v1": ["high"]}
    assert [(u.stop_id, u.reason) for u in sol.unassigned] == [
        ("low", UnassignedReason.FLEET_EXHAUSTED)]
    if solver is None:
        assert sol.solver == "portfolio/ortools"



def test_a_pair_weighs_as_one_shipment_when_the_fleet_is_full(mk):
    """A pickup-and-delivery pair is one shipment, not two: the vehicle has time for either
    the plain stop of priority 2 or the pair of priority 1, and the pair is left out."""
    p = mk([(0, 0), (40, 0), (-40, 0), (-42, 0)],
           [Stop("plain", 1, (1,), priority=2),
            Stop("pick", 2, (1,), priority=1, kind=StopKind.PICKUP, pair="drop"),
            Stop("drop", 3, (1,), priority=1, kind=StopKind.DELIVERY, pair="pick")],
           [Vehicle("v1", 0, 0, (10,), shift=tw(0, 100))])
    sol = run(p)
    assert routes(sol) == {"v1": ["plain"]}
    assert {u.stop_id: u.reason for u in sol.unassigned} == {
        "pick": UnassignedReason.FLEET_EXHAUSTED, "drop": UnassignedReason.FLEET_EXHAUSTED}


def test_unassigned_reasons(mk):
    p = mk([(0, 0), (10, 0), (50, 0), (20, 0), (30, 0)],
           [Stop("heavy", 1, (99,)), Stop("late", 2, (1,), windows=(tw(0, 5),)),
            Stop("adr", 3, (1,), skills=frozenset({"adr"})), Stop("ok", 4, (1,))],
           [Vehicle("v1", 0, 0, (10,), skills=frozenset({"fridge"}))])
    sol = run(p)
    assert {u.stop_id: u.reason for u in sol.unassigned} == {
        "heavy": UnassignedReason.CAPACITY,
        "late": UnassignedReason.TIME_WINDOW_UNREACHABLE,
        "adr": UnassignedReason.NO_VEHICLE_WITH_SKILL,
    }
    assert routes(sol) == {"v1": ["ok"]}


def test_shift_too_short_reason(mk):
    p = mk([(0, 0), (40, 0)], [Stop("far", 1, service_s=10)],
           [Vehicle("v1", 0, 0, (), shift=tw(0, 60))])
    (u,) = run(p).unassigned
    assert u.reason is UnassignedReason.SHIFT_TOO_SHORT


def test_pyvrp_says_what_it_cannot_model(mk):
    p = mk([(0, 0), (10, 0), (20, 0)],
           [Stop("P", 1, (1,), kind=StopKind.PICKUP, pair="D"),
            Stop("D", 2, (1,), kind=StopKind.DELIVERY, pair="P", windows=(tw(0, 5), tw(50, 90)))],
           [Vehicle("v1", 0, 0, (5,), breaks=(Break(tw(0, 100), 5),))])
    missing = PyVRPSolver().unsupported(p)
    assert missing == [
        "multiple time windows per stop", "pickup-and-delivery pairs", "driver breaks"]
    with pytest.raises(ValueError, match="cannot model"):
        PyVRPSolver().solve(p, 0.1)


@pytest.mark.parametrize("solver", BOTH, ids=lambda s: s.name)
def test_second_capacity_dimension_binds(mk, solver):
    # Weight would fit one truck; volume does not.
    p = mk([(0, 0), (10, 0), (11, 0)], [Stop("A", 1, (1, 6)), Stop("B", 2, (1, 6))],
           [Vehicle("v1", 0, 0, (100, 10)), Vehicle("v2", 0, 0, (100, 10))])
    assert sorted(routes(run(p, solver)).values()) == [["A"], ["B"]]


def test_onboard_load_with_pairs_and_plain_deliveries(mk):
    # X's goods leave the depot on board (3 of 5); picking P up first would carry 6.
    p = mk([(0, 0), (10, 0), (20, 0), (30, 0)],
           [Stop("P", 1, (3,), kind=StopKind.PICKUP, pair="D"), Stop("X", 2, (3,)),
            Stop("D", 3, (3,), kind=StopKind.DELIVERY, pair="P")],
           [Vehicle("v1", 0, 0, (5,))])
    sol = run(p)
    assert routes(sol) == {"v1": ["X", "P", "D"]}
    assert [v.load_after for v in sol.routes[0].visits] == [(0,), (3,), (0,)]


def test_ortools_keeps_pinned_first_visit(line4):
    import dataclasses

    p = dataclasses.replace(line4, vehicles=(
        dataclasses.replace(line4.vehicles[0], fixed_prefix=("C",)),))
    sol = run(p, ORToolsSolver())
    assert routes(sol)["v1"][0] == "C" and sorted(routes(sol)["v1"]) == ["A", "B", "C"]
