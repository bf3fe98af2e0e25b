"""Autonomy levels and plan diffs on hand-made plans."""

import dataclasses

import pytest

from services.routing.domain.autonomy import (
    Domain,
    DomainPolicy,
    Level,
    PlanDiff,
    Policy,
    decide,
    diff_plans,
    plan_cost,
)
from services.routing.solver.base import assemble
from services.routing.solver.model import Stop, StopKind, Unassigned, UnassignedReason, Vehicle

# Depot at 0; shipments on the x axis. orders/b has a pickup (at 5) and a delivery (at 25).
PTS = [(0, 0), (10, 0), (20, 0), (30, 0), (40, 0), (5, 0), (25, 0)]
STOPS = [
    Stop("orders/a", 1),
    Stop("orders/c", 2),
    Stop("orders/d", 3),
    Stop("orders/e", 4),
    Stop("orders/b#pickup", 5, kind=StopKind.PICKUP, pair="orders/b#delivery"),
    Stop("orders/b#delivery", 6, kind=StopKind.DELIVERY, pair="orders/b#pickup"),
]
FLEET = [
    Vehicle("v1", 0, 0, (), fixed_cost=10.0, cost_per_km=2.0),
    Vehicle("v2", 0, 0, (), fixed_cost=10.0, cost_per_km=2.0, cost_per_hour=36.0),
]


@pytest.fixture
def plans(mk):
    p = mk(PTS, STOPS, FLEET)
    before = dataclasses.replace(p, stops=tuple(s for s in STOPS if s.id != "orders/e"))
    old = assemble(before, {"v1": ["orders/a", "orders/b#pickup", "orders/b#delivery"],
                       "v2": ["orders/c", "orders/d"]}, "hand", 0)
    # orders/d is cancelled, orders/e is new, orders/b moves to v2.
    new = assemble(p, {"v1": ["orders/a"],
                       "v2": ["orders/b#pickup", "orders/c", "orders/b#delivery", "orders/e"]},
                   "hand", 0)
    new = dataclasses.replace(new, unassigned=())  # orders/d is gone from the new problem
    return p, old, new


def test_diff_counts_moved_added_removed_shipments_and_cost(plans):
    p, old, new = plans
    d = diff_plans(old, new, vehicles=p.vehicles)
    # Compared: a, b#pickup, b#delivery, c (d is gone); both halves of orders/b changed vehicle.
    assert (d.stops_compared, d.stops_moved, d.moved_share) == (4, 2, 0.5)
    assert (d.added, d.removed, d.moved) == (("orders/e",), ("orders/d",), ("orders/b",))
    # Old: v1 drives 60 m, v2 60 m in 60 s; new: v1 20 m, v2 80 m in 80 s. v1 pays 2 per km,
    # v2 also 36 per hour (0.01 per second); both 10 per route.
    old_cost = (10 + 0.060 * 2) + (10 + 0.060 * 2 + 60 * 0.01)
    new_cost = (10 + 0.020 * 2) + (10 + 0.080 * 2 + 80 * 0.01)
    assert plan_cost(old, p.vehicles) == pytest.approx(old_cost)
    assert d.cost_delta == pytest.approx(new_cost - old_cost)
    assert d.cost_change_ratio == pytest.approx((new_cost - old_cost) / old_cost)
    assert d.distance_delta_m == 100 - 120


def test_diff_leaves_fixed_stops_out_and_counts_a_lost_stop_as_moved(plans):
    p, old, new = plans
    d = diff_plans(old, new, vehicles=p.vehicles, fixed={"orders/a", "orders/c"})
    assert (d.stops_compared, d.stops_moved) == (2, 2)
    dropped = dataclasses.replace(
        old, routes=old.routes[:1],
        unassigned=(Unassigned("orders/c", UnassignedReason.FLEET_EXHAUSTED),
                    Unassigned("orders/d", UnassignedReason.FLEET_EXHAUSTED)))
    d = diff_plans(old, dropped, vehicles=p.vehicles)
    assert (d.stops_compared, d.stops_moved, d.moved) == (5, 2, ("orders/c", "orders/d"))
    assert d.removed == () and d.added == ()


def test_diff_without_vehicles_compares_the_stamped_costs(plans):
    _, old, new = plans
    d = diff_plans(dataclasses.replace(old, cost=200.0), dataclasses.replace(new, cost=210.0))
    assert (d.cost_delta, d.cost_change_ratio) == (10.0, 0.05)


def test_diff_with_no_previous_plan_compares_nothing(plans):
    p, _, new = plans
    d = diff_plans(None, new, vehicles=p.vehicles)
    assert (d.stops_compared, d.stops_moved, d.moved_share, d.cost_change_ratio) == (0, 0, 0, 0)
    assert d.added == ("orders/a", "orders/b", "orders/c", "orders/e")
    assert d.removed == d.moved == ()


def test_plan_cost_needs_every_vehicle(plans):
    p, old, _ = plans
    with pytest.raises(ValueError, match="v2"):
        plan_cost(old, p.vehicles[:1])


def _diff(moved_share=0.0, ratio=0.0):
    compared = 100
    return PlanDiff(round(moved_share * compared), compared, moved_share, (), (), (),
                    ratio * 1000, ratio, 0.0)


def test_l1_always_waits_without_a_flag():
    v = decide(DomainPolicy(Level.L1), _diff())
    assert (v.apply, v.flagged, v.reasons, v.decided_by) == (False, False, (), None)


def test_l3_always_applies():
    v = decide(DomainPolicy(Level.L3), _diff(moved_share=0.9, ratio=0.5))
    assert (v.apply, v.flagged, v.decided_by) == (True, False, "autonomy/L3")


@pytest.mark.parametrize(("share", "ratio"), [(0.0, 0.0), (0.10, 0.05), (0.05, -0.3)])
def test_l2_applies_inside_the_guardrails(share, ratio):
    v = decide(DomainPolicy(Level.L2), _diff(share, ratio))
    assert (v.apply, v.flagged, v.reasons, v.decided_by) == (True, False, (), "autonomy/L2")


@pytest.mark.parametrize(("share", "ratio", "reasons"), [
    (0.18, 0.0, ("moved 18.0 % of stops (limit 10.0 %)",)),
    (0.0, 0.075, ("cost up 7.5 % (limit 5.0 %)",)),
    (0.5, 0.2, ("moved 50.0 % of stops (limit 10.0 %)", "cost up 20.0 % (limit 5.0 %)")),
])
def test_l2_outside_a_guardrail_waits_flagged_with_one_reason_each(share, ratio, reasons):
    v = decide(DomainPolicy(Level.L2), _diff(share, ratio))
    assert (v.apply, v.flagged, v.reasons, v.decided_by) == (False, True, reasons, None)


def test_l2_uses_the_domains_own_limits():
    tight = DomainPolicy(Level.L2, max_moved_share=0.0, max_cost_increase=0.0)
    assert decide(tight, _diff(0.01, 0.0)).flagged
    assert decide(tight, _diff(0.0, 0.001)).flagged
    assert decide(tight, _diff(0.0, 0.0)).apply


def test_policy_defaults_to_l1_per_domain_and_rejects_bad_limits():
    policy = Policy({Domain.BREAKDOWN: DomainPolicy(Level.L3)})
    assert policy.for_domain(Domain.BREAKDOWN).level is Level.L3
    assert policy.for_domain(Domain.TRAFFIC) == DomainPolicy(Level.L1, 0.10, 0.05)
    assert [d.value for d in Domain] == ["INITIAL_PLAN", "CANCELLATION", "BREAKDOWN", "TRAFFIC",
                                         "URGENT_INSERTION", "MANUAL_REPLAN", "DELAY"]
    for bad in ({"max_moved_share": 1.5}, {"max_moved_share": float("nan")},
                {"max_cost_increase": float("inf")}):
        with pytest.raises(ValueError):
            DomainPolicy(Level.L2, **bad)
