"""Live replanning on tiny instances whose right answer can be stated by hand.

Distances and times are rounded Euclidean (1 unit = 1 m = 1 s, see conftest). The base day:
vehicle v1 serves A, B, C on the x axis, v2 serves D, E, F on the y axis, each stop takes 5 s,
so v1 is at A 10-15, B 25-30, C 40-45 and v2 at D, E, F at the same times.
"""

import dataclasses
import threading

import pytest

from services.routing.domain.autonomy import Domain, plan_cost
from services.routing.domain.replanning import Change, replan
from services.routing.solver.base import assemble
from services.routing.solver.feasibility import check
from services.routing.solver.freeze import Tracked
from services.routing.solver.interface import referee
from services.routing.solver.matrix import TravelMatrix
from services.routing.solver.model import (
    Break,
    Stop,
    StopKind,
    TimeWindow,
    UnassignedReason,
    Vehicle,
)

PTS = [(0, 0), (10, 0), (20, 0), (30, 0), (0, 10), (0, 20), (0, 30)]
NAMES = ("A", "B", "C", "D", "E", "F")


def _base(mk, extra_pts=(), extra_stops=(), vehicles=None):
    stops = [Stop(n, i + 1, (1,), service_s=5) for i, n in enumerate(NAMES)]
    fleet = vehicles or [Vehicle("v1", 0, 0, (10,)), Vehicle("v2", 0, 0, (10,))]
    return mk([*PTS, *extra_pts], [*stops, *extra_stops], fleet)


def _plan(problem, seqs):
    sol = referee(problem, assemble(problem, seqs, "hand", 0.0))
    assert sol.feasible, sol.violations
    return sol


def _without(problem, *ids):
    return dataclasses.replace(problem, stops=tuple(s for s in problem.stops if s.id not in ids))


def _accounted(problem, sol):
    """Every stop of the problem is routed or unassigned, exactly once."""
    routed = [sid for r in sol.routes for sid in r.stop_ids]
    listed = [u.stop_id for u in sol.unassigned]
    return sorted(routed + listed) == sorted(s.id for s in problem.stops)


@pytest.fixture
def day(mk):
    p = _base(mk)
    return p, _plan(p, {"v1": ["A", "B", "C"], "v2": ["D", "E", "F"]})


def test_completed_and_next_stops_keep_vehicle_position_and_times(day):
    p, prev = day
    now = 27  # A and D done; B and E in progress
    out = replan(_without(p, "F"), prev, now, Change(Domain.CANCELLATION, frozenset({"F"})), 2)
    sol = out.solution
    assert out.fixed == {"A", "B", "D", "E"}
    for vid, done, nxt in (("v1", "A", "B"), ("v2", "D", "E")):
        before, after = prev.route_of(vid), sol.route_of(vid)
        assert after.stop_ids[:2] == [done, nxt]
        assert after.visits[:2] == before.visits[:2]  # same arrival, start, departure
        assert after.start_time == before.start_time
    assert check(_without(p, "F"), sol) == []


def test_milestones_not_planned_times_decide_what_is_completed(day):
    """With tracking data the milestones decide: at 27 the plan has A and D done, but only A
    is recorded (B arrived at): v2 has not even reached D, so D is open and v2 goes on from its
    depot now, late; v1 serves B as planned."""
    p, prev = day
    tracked = Tracked(completed=frozenset({"A"}), arrived=frozenset({"B"}))
    out = replan(p, prev, 27, Change(Domain.DELAY), 2, tracked=tracked)
    assert out.fixed == {"A", "B", "D"}  # A completed, v1 at B, D pinned as v2's next stop
    d = next(x for x in out.solution.route_of("v2").visits if x.stop_id == "D")
    assert d.arrival >= 27 + 10  # leaves the depot at 27, 10 s away
    assert out.solution.route_of("v1").visits[:2] == prev.route_of("v1").visits[:2]
    # Without tracking data the planned times decide (the old rule): D is done.
    assert replan(p, prev, 27, Change(Domain.DELAY), 2).fixed == {"A", "B", "D", "E"}


def test_a_stop_recorded_done_before_its_planned_time_is_completed(day):
    p, prev = day
    tracked = Tracked(completed=frozenset({"A", "B", "C"}))
    out = replan(p, prev, 12, Change(Domain.MANUAL_REPLAN), 2, tracked=tracked)
    assert {"A", "B", "C"} <= out.fixed  # planned to leave C at 45, recorded done by 12
    assert out.solution.route_of("v1").stop_ids == ["A", "B", "C"]


def test_cancellation_frees_the_stop_and_moves_nothing_else(day):
    p, prev = day
    problem = _without(p, "B")
    out = replan(problem, prev, 12, Change(Domain.CANCELLATION, frozenset({"B"})), 2)
    assert out.feasible and out.method == "removal" and out.moved == 0
    assert out.solution.sequences() == {"v1": ["A", "C"], "v2": ["D", "E", "F"]}
    # C is now reached straight from A: 10 m after A's departure at 15.
    assert out.solution.route_of("v1").visits[1].arrival == 35
    assert check(problem, out.solution) == []
    assert out.solution.cost == pytest.approx(plan_cost(out.solution, problem.vehicles))


@pytest.mark.parametrize(("now", "kept", "orphans"), [
    (27, ["A", "B"], {"C"}),  # v1 is serving B when it breaks down: B is finished
    (22, ["A"], {"B", "C"}),  # v1 is driving to B: B is re-allocated too
])
def test_breakdown_reallocates_every_open_stop_and_moves_no_other(day, now, kept, orphans):
    p, prev = day
    out = replan(p, prev, now, Change(Domain.BREAKDOWN, broken=frozenset({"v1"})), 2)
    sol = out.solution
    assert out.feasible and out.moved == 0 and not sol.unassigned
    assert sol.route_of("v1").stop_ids == kept
    v2 = sol.route_of("v2").stop_ids
    assert v2[:2] == ["D", "E"]  # done and next stop first, as before
    assert set(v2) == {"D", "E", "F"} | orphans
    assert [x for x in v2 if x in {"D", "E", "F"}] == ["D", "E", "F"]  # v2's own order kept
    assert _accounted(p, sol)
    # The broken vehicle's truncated route is history; everything else passes the checker.
    assert [v for v in check(p, sol) if v.vehicle_id != "v1"] == []


def test_urgent_insertion_places_a_pair_on_one_vehicle_pickup_first_and_a_visit(mk):
    pair = [
        Stop("orders/u#pickup", 7, (2,), kind=StopKind.PICKUP, pair="orders/u#delivery"),
        Stop("orders/u#delivery", 8, (2,), kind=StopKind.DELIVERY, pair="orders/u#pickup"),
        Stop("orders/x", 9, (1,)),
    ]
    p = _base(mk)
    prev = _plan(p, {"v1": ["A", "B", "C"], "v2": ["D", "E", "F"]})
    problem = _base(mk, [(25, 2), (35, 2), (2, 25)], pair)
    added = frozenset({"orders/u", "orders/x"})
    out = replan(problem, prev, 12, Change(Domain.URGENT_INSERTION, added=added), 2)
    seqs = out.solution.sequences()
    assert out.feasible and out.moved == 0 and not out.solution.unassigned
    v1 = seqs["v1"]
    assert v1[0] == "A"  # next stop stays first
    assert v1.index("orders/u#pickup") < v1.index("orders/u#delivery")  # same vehicle
    assert "orders/x" in seqs["v2"]  # near E and F on the y axis
    assert [x for x in v1 if len(x) == 1] == ["A", "B", "C"]
    assert check(problem, out.solution) == []


def test_a_vehicle_already_driving_keeps_its_departure_when_it_gets_a_late_stop(mk, day):
    # At 5 s both vehicles are on their way to their first stop. The new stop opens at 300 s:
    # waiting for it must not pretend the vehicle left its depot later than it did.
    _, prev = day
    late = Stop("orders/late", 7, (1,), windows=(TimeWindow(300, 400),))
    problem = _base(mk, [(35, 0)], [late])
    out = replan(problem, prev, 5, Change(Domain.URGENT_INSERTION,
                                          added=frozenset({late.id})), 2)
    route = out.solution.route_of("v1")
    assert route.stop_ids[0] == "A" and "orders/late" in route.stop_ids
    a_now, a_before = route.visits[0], prev.route_of("v1").visits[0]
    assert route.start_time == 0
    assert (a_now.arrival, a_now.start, a_now.departure) == (10, 10, 15) == (
        a_before.arrival, a_before.start, a_before.departure)
    assert route.visits[route.stop_ids.index("orders/late")].start == 300
    assert check(problem, out.solution) == []


@pytest.mark.parametrize(("extra", "reason"), [
    (Stop("orders/heavy", 7, (11,)), UnassignedReason.CAPACITY),
    (Stop("orders/cold", 7, (1,), skills=frozenset({"refrigerated"})),
     UnassignedReason.NO_VEHICLE_WITH_SKILL),
])
def test_a_shipment_that_cannot_fit_is_unassigned_with_its_reason(mk, day, extra, reason):
    _, prev = day
    problem = _base(mk, [(15, 5)], [extra])
    out = replan(problem, prev, 12, Change(Domain.URGENT_INSERTION, added=frozenset({extra.id})),
                 2)
    assert out.feasible and out.moved == 0
    assert [(u.stop_id, u.reason) for u in out.solution.unassigned] == [(extra.id, reason)]
    assert out.solution.sequences() == prev.sequences()
    assert check(problem, out.solution) == []


def _slow(problem, legs, factor):
    """The problem with travel times of the given (from, to) location legs multiplied."""
    dur = problem.matrix.duration.copy()
    for a, b in legs:
        dur[a, b] *= factor
    return dataclasses.replace(
        problem, matrix=TravelMatrix(problem.matrix.distance.copy(), dur))


def test_traffic_on_one_leg_resequences_that_route_only(mk):
    # v1: P first, then A and B; by distance P, A, B is best (48 m against 54 m). Driving time
    # costs 1 per second. v2 drives D, F, E round a square - 48 m where D, E, F is 40 m - but
    # its legs are not affected, so its order stays.
    pts = [(0, 0), (10, 0), (20, 0), (10, 10), (-10, 0), (-10, -10), (0, -10)]
    stops = [Stop(n, i + 1, (1,)) for i, n in enumerate(["P", "A", "B", "D", "E", "F"])]
    fleet = [Vehicle(v, 0, 0, (10,), cost_per_hour=3600.0) for v in ("v1", "v2")]
    p = mk(pts, stops, fleet)
    prev = _plan(p, {"v1": ["P", "A", "B"], "v2": ["D", "F", "E"]})
    jammed = _slow(p, [(1, 2)], 6)  # P -> A now takes 60 s instead of 10 s
    out = replan(jammed, prev, 0, Change(Domain.TRAFFIC), 2)
    assert out.feasible and out.method == "resequence" and out.moved == 0
    assert out.solution.sequences() == {"v1": ["P", "B", "A"], "v2": ["D", "F", "E"]}
    assert check(jammed, out.solution) == []


@pytest.mark.parametrize("spare", [True, False])
def test_traffic_stop_that_no_longer_fits_moves_or_is_unassigned(mk, spare):
    # v1 has done P and drives to Q (pinned); X must be served by t = 60. The jam makes every
    # way into X from v1's side slow; a spare vehicle parked at (0, 30) can still make it.
    pts = [(0, 0), (10, 0), (30, 0), (20, 0), (0, 30)]
    stops = [Stop("P", 1), Stop("Q", 2), Stop("X", 3, windows=(TimeWindow(0, 60),))]
    fleet = [Vehicle("v1", 0, 0, (10,))]
    if spare:
        fleet.append(Vehicle("v2", 4, 4, (10,)))
    p = mk(pts, stops, fleet)
    prev = _plan(p, {"v1": ["P", "Q", "X"]})
    jammed = _slow(p, [(a, 3) for a in (0, 1, 2)], 10)
    out = replan(jammed, prev, 10, Change(Domain.TRAFFIC), 2)
    assert out.feasible
    assert out.solution.route_of("v1").stop_ids == ["P", "Q"]
    if spare:
        assert out.solution.route_of("v2").stop_ids == ["X"] and not out.solution.unassigned
    else:
        assert [(u.stop_id, u.reason) for u in out.solution.unassigned] == [
            ("X", UnassignedReason.TIME_WINDOW_UNREACHABLE)]
    assert out.moved == 1  # X lost its place on v1
    assert check(jammed, out.solution) == []


@pytest.mark.parametrize(("threshold", "moved"), [(10.0, 0), (1.0, 1)])
def test_manual_replan_moves_a_stop_only_when_the_saving_beats_the_threshold(
        mk, threshold, moved):
    # S at (50, 0) on v1 costs v1 80 m; v2 already drives to (50, 5) and takes it for +4.75 m.
    # At 100 per km the move saves 7.5.
    pts = [(0, 0), (10, 0), (50, 0), (50, 5)]
    stops = [Stop("A", 1, (1,)), Stop("S", 2, (1,)), Stop("B", 3, (1,))]
    fleet = [Vehicle(v, 0, 0, (10,), cost_per_km=100.0) for v in ("v1", "v2")]
    p = mk(pts, stops, fleet)
    prev = _plan(p, {"v1": ["A", "S"], "v2": ["B"]})
    out = replan(p, prev, 0, Change(Domain.MANUAL_REPLAN), 1.0, move_threshold=threshold)
    assert out.feasible and out.moved == moved
    expected = {"v1": ["A"], "v2": ["B", "S"]} if moved else {"v1": ["A", "S"], "v2": ["B"]}
    assert out.solution.sequences() == expected
    assert check(p, out.solution) == []


def test_goods_picked_up_stay_on_board_even_when_another_vehicle_is_cheaper(mk):
    # v2 has picked up orders/p at (0, 5) and must deliver it far out at (0, 60); v3 works at
    # (0, 65) and would take the delivery almost for free - but the goods are on v2's truck.
    extra = [
        Stop("orders/p#pickup", 7, (3,), kind=StopKind.PICKUP, pair="orders/p#delivery"),
        Stop("orders/p#delivery", 8, (3,), kind=StopKind.DELIVERY, pair="orders/p#pickup"),
        Stop("G", 9, (1,)),
    ]
    fleet = [Vehicle("v1", 0, 0, (10,)), Vehicle("v2", 0, 0, (10,)), Vehicle("v3", 10, 10, (10,))]
    p = _base(mk, [(0, 5), (0, 60), (0, 65), (0, 70)], extra, fleet)
    prev = _plan(p, {"v1": ["A", "B", "C"], "v2": ["orders/p#pickup", "D", "orders/p#delivery",
                                                   "E", "F"], "v3": ["G"]})
    now = prev.route_of("v2").visits[0].departure  # v2 has just left the pickup
    out = replan(p, prev, now, Change(Domain.MANUAL_REPLAN), 1.0, move_threshold=0.0)
    assert out.feasible and not out.solution.unassigned
    assert "orders/p#delivery" in out.solution.route_of("v2").stop_ids
    assert check(p, out.solution) == []


def test_a_break_already_taken_stays_in_the_day_and_is_not_planned_again(mk):
    fleet = [Vehicle("v1", 0, 0, (10,), breaks=(Break(TimeWindow(15, 40), 5),)),
             Vehicle("v2", 0, 0, (10,))]
    p = _base(mk, vehicles=fleet)
    prev = _plan(p, {"v1": ["A", "B", "C"], "v2": ["D", "E", "F"]})
    taken = prev.route_of("v1").breaks
    assert len(taken) == 1 and taken[0].start < 35
    problem = _without(p, "F")
    out = replan(problem, prev, 35, Change(Domain.CANCELLATION, frozenset({"F"})), 2)
    assert out.feasible and out.solution.route_of("v1").breaks == taken
    assert check(problem, out.solution) == []


def test_a_cancelled_run_still_accounts_for_every_stop(day, mk):
    _, prev = day
    problem = _base(mk, [(15, 5)], [Stop("orders/n", 7, (1,))])
    cancel = threading.Event()
    cancel.set()
    out = replan(problem, prev, 12, Change(Domain.MANUAL_REPLAN), 2, cancel=cancel)
    assert _accounted(problem, out.solution)
    assert "cancelled: best plan so far" in out.solution.notes
    assert out.feasible  # the previous routes, re-timed, are still valid


def test_progress_is_reported_and_unknown_kinds_are_refused(day):
    p, prev = day
    seen = []
    replan(p, prev, 12, Change(Domain.CANCELLATION), 1, on_progress=seen.append)
    assert seen and seen[0].solver == "replan/removal"
    # At 12 s both vehicles are at their first stop: what is left is 2 x 50 m at 1 per km.
    assert seen[0].best_cost == pytest.approx(0.10)
    with pytest.raises(ValueError):
        replan(p, prev, 12, Change(Domain.INITIAL_PLAN), 1)
