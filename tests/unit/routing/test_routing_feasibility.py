"""The checker must catch each violation type on hand-made solutions."""

import dataclasses

import pytest

from services.routing.solver.base import assemble
from services.routing.solver.feasibility import ViolationKind, check, evaluate
from services.routing.solver.model import (
    Break,
    PlannedBreak,
    Solution,
    Stop,
    StopKind,
    TimeWindow,
    Unassigned,
    UnassignedReason,
    Vehicle,
)
from services.routing.solver.schedule import schedule_route

tw = TimeWindow
PTS = [(0, 0), (10, 0), (20, 0), (30, 0)]


def kinds(problem, solution):
    return {v.kind for v in check(problem, solution)}


def plan(problem, seqs):
    return assemble(problem, seqs, "hand", 0.0)


def test_feasible_plan_has_no_violations_and_recomputed_distance(line4):
    sol = plan(line4, {"v1": ["A", "B", "C"]})
    ev = evaluate(line4, sol)
    assert ev.violations == ()
    assert ev.distance == 60 and ev.vehicles_used == 1
    assert [v.start for v in sol.routes[0].visits] == [10, 20, 30]
    assert [v.load_after for v in sol.routes[0].visits] == [(6,), (3,), (0,)]


def test_capacity_in_every_dimension(mk):
    p = mk(PTS, [Stop("A", 1, (3, 9)), Stop("B", 2, (3, 2))],
           [Vehicle("v1", 0, 0, (10, 10))])
    found = check(p, plan(p, {"v1": ["A", "B"]}))
    assert [v.kind for v in found] == [ViolationKind.CAPACITY]  # volume 11 > 10, weight fine


def test_time_window_any_of_several(mk):
    p = mk(PTS, [Stop("A", 1, windows=(tw(0, 5), tw(50, 60)))], [Vehicle("v1", 0, 0, ())])
    ok = plan(p, {"v1": ["A"]})
    assert check(p, ok) == [] and ok.routes[0].visits[0].start == 50  # waits for window 2
    assert ok.routes[0].start_time == 40  # leaves late instead of waiting at the door
    r = ok.routes[0]
    late = dataclasses.replace(r.visits[0], start=61, departure=61)  # window 2 closed
    bad = dataclasses.replace(ok, routes=(dataclasses.replace(r, visits=(late,), end_time=71),))
    assert kinds(p, bad) == {ViolationKind.TIME_WINDOW}
    # Reporting the old return time with the later departure is caught too.
    stale = dataclasses.replace(ok, routes=(dataclasses.replace(r, visits=(late,)),))
    assert kinds(p, stale) == {ViolationKind.TIME_WINDOW, ViolationKind.TRAVEL_TIME}


def test_travel_and_service_time(line4):
    sol = plan(line4, {"v1": ["A", "B", "C"]})
    r = sol.routes[0]
    fast = dataclasses.replace(r.visits[1], arrival=12, start=12, departure=12)
    assert ViolationKind.TRAVEL_TIME in kinds(
        line4, dataclasses.replace(sol, routes=(dataclasses.replace(
            r, visits=(r.visits[0], fast, r.visits[2])),)))
    p = dataclasses.replace(line4, stops=tuple(
        dataclasses.replace(s, service_s=5) for s in line4.stops))
    sol = plan(p, {"v1": ["A"]})
    r = sol.routes[0]
    rushed = dataclasses.replace(r.visits[0], departure=r.visits[0].start + 1)
    bad = dataclasses.replace(sol, routes=(dataclasses.replace(r, visits=(rushed,)),),
                              unassigned=tuple(Unassigned(s, UnassignedReason.FLEET_EXHAUSTED)
                                               for s in ("B", "C")))
    assert kinds(p, bad) == {ViolationKind.SERVICE_TIME}


def test_shift_max_duration_and_max_distance(mk):
    stops = [Stop("A", 3)]
    for veh, expected in (
        (Vehicle("v1", 0, 0, (), shift=tw(0, 50)), ViolationKind.SHIFT),
        (Vehicle("v1", 0, 0, (), max_duration_s=50), ViolationKind.MAX_DURATION),
        (Vehicle("v1", 0, 0, (), max_distance_m=50), ViolationKind.MAX_DISTANCE),
    ):
        p = mk(PTS, stops, [veh])
        assert kinds(p, plan(p, {"v1": ["A"]})) == {expected}


def test_skill(mk):
    p = mk(PTS, [Stop("A", 1, skills=frozenset({"adr"}))], [Vehicle("v1", 0, 0, ())])
    assert kinds(p, plan(p, {"v1": ["A"]})) == {ViolationKind.SKILL}


def test_pickup_delivery_precedence_and_pairing(mk):
    stops = [Stop("P", 1, (2,), kind=StopKind.PICKUP, pair="D"),
             Stop("D", 2, (2,), kind=StopKind.DELIVERY, pair="P")]
    vs = [Vehicle("v1", 0, 0, (5,)), Vehicle("v2", 0, 0, (5,))]
    p = mk(PTS, stops, vs)
    assert check(p, plan(p, {"v1": ["P", "D"]})) == []
    assert kinds(p, plan(p, {"v1": ["D", "P"]})) == {ViolationKind.PRECEDENCE}
    assert ViolationKind.PAIRING in kinds(p, plan(p, {"v1": ["P"], "v2": ["D"]}))


def test_coverage_duplicates_unknown_and_pinned(line4):
    partial = plan(line4, {"v1": ["A", "B"]})
    assert check(line4, partial) == [] and [u.stop_id for u in partial.unassigned] == ["C"]
    forgot = dataclasses.replace(partial, unassigned=())
    assert kinds(line4, forgot) == {ViolationKind.MISSING}
    sol = plan(line4, {"v1": ["A", "B", "C"]})
    twice = dataclasses.replace(sol, unassigned=(Unassigned("A", UnassignedReason.CAPACITY),))
    assert kinds(line4, twice) == {ViolationKind.DUPLICATE}
    r = sol.routes[0]
    ghost = dataclasses.replace(r, vehicle_id="v9")
    assert ViolationKind.UNKNOWN in kinds(line4, dataclasses.replace(sol, routes=(ghost,)))
    pinned = dataclasses.replace(line4, vehicles=(dataclasses.replace(
        line4.vehicles[0], fixed_prefix=("C",)),))
    assert kinds(pinned, plan(pinned, {"v1": ["A", "B", "C"]})) == {ViolationKind.FIXED_PREFIX}


def test_breaks_must_be_planned_in_window_and_fit_a_leg(mk):
    brk = Break(tw(15, 40), 10)
    p = mk(PTS, [Stop("A", 1, service_s=5), Stop("B", 3, service_s=5)],
           [Vehicle("v1", 0, 0, (), breaks=(brk,))])
    good = plan(p, {"v1": ["A", "B"]})
    assert check(p, good) == [], check(p, good)
    assert good.routes[0].breaks == (PlannedBreak(15, 10),)
    r = good.routes[0]
    for planned in ((), (PlannedBreak(50, 10),), (PlannedBreak(10, 10),)):
        bad = dataclasses.replace(good, routes=(dataclasses.replace(r, breaks=planned),))
        assert kinds(p, bad) == {ViolationKind.BREAK}, planned


def test_evaluate_cost_uses_vehicle_rates(mk):
    p = mk(PTS, [Stop("A", 3)],
           [Vehicle("v1", 0, 0, (), fixed_cost=100, cost_per_km=2.0, cost_per_hour=36.0)])
    sol = Solution((schedule_route(p, p.vehicles[0], ["A"]),))
    # 60 m at 2/km + 60 s at 36/h + fixed 100
    assert evaluate(p, sol).cost == pytest.approx(100 + 0.12 + 0.6)
