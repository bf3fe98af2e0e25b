"""The routing aggregates' rules and state machines, the stop-id convention, and how an
operation reads from its plan. No I/O."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from google.rpc import code_pb2, error_details_pb2

from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2
from services.kit.errors import Aborted, FailedPrecondition, InvalidArgument
from services.kit.operations import OperationNames
from services.routing import conversion
from services.routing.api.operations import operation_names, operation_to_proto
from services.routing.domain import autonomy
from services.routing.domain.ids import shipment_of, stop_ids
from services.routing.domain.model import (
    FINAL_PLAN_STATES,
    AutonomyPolicy,
    Decision,
    DecisionDomain,
    DecisionState,
    PlanState,
    RoutePlan,
    Trigger,
    Vehicle,
    VehicleStatus,
)
from services.routing.use_cases import PlanChanges

NOW = datetime(2030, 1, 1, 8, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def test_stop_ids_follow_the_convention() -> None:
    assert stop_ids("orders/abc", True) == ("orders/abc#pickup", "orders/abc#delivery")
    assert stop_ids("S1", False) == ("S1",)
    for stop_id in (*stop_ids("orders/abc", True), "orders/abc"):
        assert shipment_of(stop_id) == "orders/abc"


def test_vehicle_versions_and_etag() -> None:
    vehicle = Vehicle.create("c1", "truck", vehicle_pb2.Vehicle(display_name="x"), NOW)
    assert vehicle.name == "vehicles/truck" and vehicle.status is VehicleStatus.AVAILABLE
    vehicle.check_etag("")  # no etag: no check
    vehicle.check_etag("v1")
    broken = vehicle.set_status(VehicleStatus.BROKEN_DOWN, LATER)
    assert broken.etag == "v2" and broken.update_time == LATER
    with pytest.raises(Aborted):
        broken.check_etag("v1")
    assert broken.set_status(VehicleStatus.AVAILABLE, LATER).status is VehicleStatus.AVAILABLE


def plan(state: PlanState = PlanState.SOLVING) -> RoutePlan:
    return RoutePlan(
        id="p1", client_id="c1", state=state, domain=DecisionDomain.INITIAL_PLAN,
        request=routing_service_pb2.PlanRoutesRequest(), fleet=(), epoch=NOW,
        content=route_plan_pb2.RoutePlan(), trigger=Trigger("PlanRoutes", "", (), ""),
        create_time=NOW, update_time=NOW)


@pytest.mark.parametrize(("start", "target"), [
    (PlanState.SOLVING, PlanState.PROPOSED), (PlanState.SOLVING, PlanState.FAILED),
    (PlanState.SOLVING, PlanState.CANCELLED), (PlanState.PROPOSED, PlanState.ACTIVE),
    (PlanState.PROPOSED, PlanState.REJECTED), (PlanState.PROPOSED, PlanState.SUPERSEDED),
    (PlanState.ACTIVE, PlanState.SUPERSEDED),
])
def test_plan_moves_along_its_lifecycle(start: PlanState, target: PlanState) -> None:
    moved = plan(start).move(target, LATER)
    assert moved.state is target and moved.version == 2 and moved.update_time == LATER


@pytest.mark.parametrize(("start", "target"), [
    (PlanState.SOLVING, PlanState.ACTIVE), (PlanState.ACTIVE, PlanState.PROPOSED),
    (PlanState.ACTIVE, PlanState.REJECTED), (PlanState.SUPERSEDED, PlanState.ACTIVE),
    (PlanState.FAILED, PlanState.PROPOSED), (PlanState.REJECTED, PlanState.ACTIVE),
])
def test_plan_refuses_other_moves(start: PlanState, target: PlanState) -> None:
    with pytest.raises(FailedPrecondition) as raised:
        plan(start).move(target, LATER)
    assert raised.value.reason == "INVALID_STATE_TRANSITION"


def test_a_watch_ends_only_where_no_change_can_follow() -> None:
    assert FINAL_PLAN_STATES == {PlanState.SUPERSEDED, PlanState.REJECTED, PlanState.CANCELLED,
                                 PlanState.FAILED}
    assert not plan(PlanState.PROPOSED).final and not plan(PlanState.ACTIVE).final


def decision() -> Decision:
    return Decision("d1", "c1", DecisionState.PENDING, DecisionDomain.BREAKDOWN, 1, "p2", "p1",
                    decision_pb2.Decision(flagged=True), NOW)


def test_a_decision_is_decided_once() -> None:
    applied = decision().apply("autonomy/L3", LATER)
    assert applied.state is DecisionState.APPLIED and applied.decide_time == LATER
    assert applied.content.decided_by == "autonomy/L3" and applied.content.flagged
    rejected = decision().reject("client-1", "too many changes", LATER)
    assert rejected.content.reject_reason == "too many changes"
    for done in (applied, rejected, decision().supersede(LATER)):
        with pytest.raises(FailedPrecondition) as raised:
            done.apply("client-1", LATER)
        assert raised.value.reason == "DECISION_NOT_PENDING"


def test_policy_update_replaces_only_the_named_domains() -> None:
    policy = AutonomyPolicy("c1")
    assert policy.etag == "v0"
    l3 = decision_pb2.DomainPolicy(domain=decision_pb2.DECISION_DOMAIN_BREAKDOWN,
                                   level=decision_pb2.AUTONOMY_LEVEL_L3)
    l2 = decision_pb2.DomainPolicy(domain=decision_pb2.DECISION_DOMAIN_TRAFFIC,
                                   level=decision_pb2.AUTONOMY_LEVEL_L2, max_moved_share=0.3)
    first = policy.replace_domains([l3, l2], NOW)
    second = first.replace_domains([decision_pb2.DomainPolicy(
        domain=decision_pb2.DECISION_DOMAIN_TRAFFIC, level=decision_pb2.AUTONOMY_LEVEL_L1)], LATER)
    assert second.etag == "v2"
    assert second.for_domain(DecisionDomain.BREAKDOWN).level is autonomy.Level.L3
    traffic = second.for_domain(DecisionDomain.TRAFFIC)
    assert traffic == autonomy.DomainPolicy(autonomy.Level.L1, 0.1, 0.05)
    assert first.for_domain(DecisionDomain.TRAFFIC) == autonomy.DomainPolicy(
        autonomy.Level.L2, 0.3, 0.05)
    assert first.for_domain(DecisionDomain.INITIAL_PLAN).level is autonomy.Level.L1
    with pytest.raises(Aborted):
        second.check_etag("v1")
    shown = conversion.policy_to_proto(second)
    assert len(shown.domains) == len(DecisionDomain) == 7 and shown.etag == "v2"


def test_domains_match_the_autonomy_module() -> None:
    for domain in DecisionDomain:
        assert autonomy.Domain[domain.name].value == domain.name
        assert decision_pb2.DecisionDomain.Value(f"DECISION_DOMAIN_{domain.name}") == domain


def test_an_operation_shows_its_plan() -> None:
    solving = plan()
    name = operation_names().name("op1")
    operation = operation_to_proto(name, solving)
    assert operation.name == "operations/routing/op1" and not operation.done
    metadata = routing_service_pb2.PlanRoutesMetadata()
    assert operation.metadata.Unpack(metadata) and metadata.route_plan == "routePlans/p1"
    proposed = operation_to_proto(name, solving.move(PlanState.PROPOSED, LATER))
    shown = route_plan_pb2.RoutePlan()
    assert proposed.done and proposed.response.Unpack(shown)
    assert shown.state == route_plan_pb2.RoutePlan.STATE_PROPOSED

    cancelled = operation_to_proto(name, solving.move(PlanState.CANCELLED, LATER))
    assert cancelled.done and cancelled.error.code == code_pb2.CANCELLED
    failed_plan = solving.move(PlanState.FAILED, LATER, content=route_plan_pb2.RoutePlan(
        violations=["capacity: vehicle=a"]))
    failed = operation_to_proto(name, failed_plan)
    assert failed.error.code == code_pb2.FAILED_PRECONDITION
    assert "capacity: vehicle=a" in failed.error.message
    info = error_details_pb2.ErrorInfo()
    assert failed.error.details[0].Unpack(info) and info.reason == "NO_FEASIBLE_PLAN"


def test_a_trigger_is_stored_and_shown_as_the_contracts_decision_inputs() -> None:
    trigger = Trigger("ReplanRoutes", "req-1", ("routePlans/p1",), "the depot moved")
    message = conversion.trigger_to_proto(trigger)
    assert (message.trigger, message.trigger_id, list(message.subjects), message.summary) == (
        "ReplanRoutes", "req-1", ["routePlans/p1"], "the depot moved")
    stored = decision_pb2.DecisionInputs.FromString(message.SerializeToString())
    assert conversion.trigger_from_proto(stored) == trigger


def test_operation_names_carry_the_service_and_old_names_still_parse() -> None:
    names = operation_names()
    hex_id = "ab" * 16
    assert names.name(hex_id) == f"operations/routing/{hex_id}"
    assert names.parse_one(f"operations/routing/{hex_id}") == hex_id
    assert names.parse_one(f"operations/{hex_id}") == hex_id  # issued before names had it
    for wrong in (f"operations/order/{hex_id}", "operations/routing/xyz", f"routing/{hex_id}",
                  "operations/routing/", ""):
        with pytest.raises(InvalidArgument):
            names.parse_one(wrong)
    strict = OperationNames("order")
    with pytest.raises(InvalidArgument):
        strict.parse_one(f"operations/{hex_id}")


async def test_plan_changes_wake_waiters_and_forget_them() -> None:
    changes = PlanChanges()
    waiter = asyncio.create_task(changes.wait("p1", 30))
    await asyncio.sleep(0)
    changes.changed(["p1"])
    await asyncio.wait_for(waiter, 5)
    await changes.wait("p2", 0.01)  # a timeout simply returns
    assert not changes._events
