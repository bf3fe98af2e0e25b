"""Decisions under the autonomy policy: L1 waits (decision.pending), approve applies
(route.planned), reject; L3 applies; L2 applies inside its guardrails and flags outside."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from cartage.routing.v1 import decision_pb2, route_plan_pb2
from cartage.routing.v1 import routing_service_pb2 as pb
from tests.integration.routing.conftest import RoutingClient, routing_events, shipment
from tests.support import eventually, raises_rpc, reason

Plan = route_plan_pb2.RoutePlan
Decision = decision_pb2.Decision
INITIAL = decision_pb2.DECISION_DOMAIN_INITIAL_PLAN
NORTH_DEPOT, SOUTH_DEPOT = (52.60, 13.40), (52.44, 13.40)


def shipments() -> list[pb.Shipment]:
    """Two near the north depot, two near the south one: each truck serves its own area."""
    return [shipment("n0", 52.61, 13.38), shipment("n1", 52.62, 13.42),
            shipment("s0", 52.43, 13.38), shipment("s1", 52.42, 13.42)]


async def two_depots(routing: RoutingClient) -> None:
    await routing.vehicle("north", depot=NORTH_DEPOT)
    await routing.vehicle("south", depot=SOUTH_DEPOT)


async def events(routing: RoutingClient, nats_url: str, subject: str, count: int = 1):
    async def published():
        found = [e for s, e in await routing_events(nats_url, routing.client_id) if s == subject]
        return found if len(found) >= count else None

    return await eventually(published)


async def test_default_policy_is_l1_everywhere(routing: RoutingClient) -> None:
    policy = await routing.GetAutonomyPolicy(pb.GetAutonomyPolicyRequest(name="autonomyPolicy"))
    # one entry per decision domain of the contract (UNSPECIFIED aside), in order
    assert [d.domain for d in policy.domains] == sorted(
        v for v in decision_pb2.DecisionDomain.values() if v)
    assert {d.level for d in policy.domains} == {decision_pb2.AUTONOMY_LEVEL_L1}
    assert {(d.max_moved_share, d.max_cost_increase) for d in policy.domains} == {(0.1, 0.05)}


async def test_l1_waits_then_approve_applies(routing: RoutingClient, nats_url: str) -> None:
    await two_depots(routing)
    plan = await routing.planned(shipments=shipments())
    assert plan.state == Plan.STATE_PROPOSED and plan.decision
    decision = await routing.GetDecision(pb.GetDecisionRequest(name=plan.decision))
    assert decision.state == Decision.STATE_PENDING and not decision.flagged
    assert decision.level == decision_pb2.AUTONOMY_LEVEL_L1 and decision.domain == INITIAL
    assert decision.proposed_plan == plan.name and not decision.previous_plan
    assert decision.inputs.trigger == "PlanRoutes"
    assert sorted(decision.diff.added) == ["n0", "n1", "s0", "s1"]
    pending = await events(routing, nats_url, "decision.pending")
    assert pending[0].decision.name == decision.name

    approved = await routing.ApproveDecision(pb.ApproveDecisionRequest(name=decision.name))
    assert approved.state == Decision.STATE_APPLIED
    assert approved.decided_by == routing.client_id and approved.HasField("decide_time")
    active = await routing.GetRoutePlan(pb.GetRoutePlanRequest(name=plan.name))
    assert active.state == Plan.STATE_ACTIVE
    planned = await events(routing, nats_url, "route.planned")
    assert planned[0].route_plan.name == plan.name
    assert planned[0].route_plan.state == Plan.STATE_ACTIVE
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION) as caught:
        await routing.ApproveDecision(pb.ApproveDecisionRequest(name=decision.name))
    assert reason(caught[0]) == "DECISION_NOT_PENDING"
    listed = await routing.ListDecisions(pb.ListDecisionsRequest(filter="state = APPLIED"))
    assert [d.name for d in listed.decisions] == [decision.name]


async def test_reject_keeps_things_as_they_are(routing: RoutingClient) -> None:
    await two_depots(routing)
    plan = await routing.planned(shipments=shipments())
    rejected = await routing.RejectDecision(pb.RejectDecisionRequest(
        name=plan.decision, reason="drivers unavailable"))
    assert rejected.state == Decision.STATE_REJECTED
    assert rejected.reject_reason == "drivers unavailable"
    assert rejected.decided_by == routing.client_id
    after = await routing.GetRoutePlan(pb.GetRoutePlanRequest(name=plan.name))
    assert after.state == Plan.STATE_REJECTED
    assert not (await routing.ListRoutePlans(pb.ListRoutePlansRequest(
        filter="state = ACTIVE"))).route_plans


async def test_a_newer_decision_supersedes_a_pending_one(routing: RoutingClient) -> None:
    await two_depots(routing)
    first = await routing.planned(shipments=shipments())
    second = await routing.planned(shipments=shipments()[:2])
    old = await routing.GetDecision(pb.GetDecisionRequest(name=first.decision))
    assert old.state == Decision.STATE_SUPERSEDED
    assert (await routing.GetRoutePlan(pb.GetRoutePlanRequest(name=first.name))).state == \
        Plan.STATE_SUPERSEDED
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION):
        await routing.ApproveDecision(pb.ApproveDecisionRequest(name=first.decision))
    pending = await routing.ListDecisions(pb.ListDecisionsRequest(filter="state = PENDING"))
    assert [d.name for d in pending.decisions] == [second.decision]


async def test_l3_applies_at_once(routing: RoutingClient, nats_url: str) -> None:
    await routing.set_policy(INITIAL, decision_pb2.AUTONOMY_LEVEL_L3)
    await two_depots(routing)
    plan = await routing.planned(shipments=shipments())
    assert plan.state == Plan.STATE_ACTIVE
    decision = await routing.GetDecision(pb.GetDecisionRequest(name=plan.decision))
    assert decision.state == Decision.STATE_APPLIED and decision.decided_by == "autonomy/L3"
    assert (await events(routing, nats_url, "route.planned"))[0].route_plan.name == plan.name
    # A second plan replaces the first: route.updated carries the decision and its diff.
    second = await routing.planned(shipments=shipments())
    assert second.state == Plan.STATE_ACTIVE
    assert (await routing.GetRoutePlan(pb.GetRoutePlanRequest(name=plan.name))).state == \
        Plan.STATE_SUPERSEDED
    updated = (await events(routing, nats_url, "route.updated"))[0]
    assert updated.route_plan.name == second.name
    assert updated.decision.previous_plan == plan.name
    assert updated.decision.diff.stops_compared == 4 and updated.decision.diff.stops_moved == 0


async def test_l2_applies_inside_the_guardrails_and_flags_outside(routing: RoutingClient
                                                                  ) -> None:
    await routing.set_policy(INITIAL, decision_pb2.AUTONOMY_LEVEL_L3)
    await two_depots(routing)
    first = await routing.planned(shipments=shipments())
    policy = await routing.GetAutonomyPolicy(pb.GetAutonomyPolicyRequest(name="autonomyPolicy"))
    updated = await routing.UpdateAutonomyPolicy(pb.UpdateAutonomyPolicyRequest(
        autonomy_policy=decision_pb2.AutonomyPolicy(etag=policy.etag, domains=[
            decision_pb2.DomainPolicy(domain=INITIAL, level=decision_pb2.AUTONOMY_LEVEL_L2,
                                      max_moved_share=0.25)]),
        update_mask=field_mask_pb2.FieldMask(paths=["domains"])))
    entry = next(d for d in updated.domains if d.domain == INITIAL)
    assert entry.max_moved_share == 0.25 and entry.max_cost_increase == 0.05
    with raises_rpc(grpc.StatusCode.ABORTED):  # the etag moved on
        await routing.UpdateAutonomyPolicy(pb.UpdateAutonomyPolicyRequest(
            autonomy_policy=decision_pb2.AutonomyPolicy(etag=policy.etag, domains=[
                decision_pb2.DomainPolicy(domain=INITIAL,
                                          level=decision_pb2.AUTONOMY_LEVEL_L1)])))

    # Inside: the same request gives the same assignment.
    same = await routing.planned(shipments=shipments())
    same_decision = await routing.GetDecision(pb.GetDecisionRequest(name=same.decision))
    assert same.state == Plan.STATE_ACTIVE
    assert same_decision.decided_by == "autonomy/L2" and not same_decision.flagged
    assert same_decision.previous_plan == first.name

    # Outside: the north truck is not in the request, so its stops move to the south truck.
    moved = await routing.planned(shipments=shipments(), vehicles=["vehicles/south"])
    decision = await routing.GetDecision(pb.GetDecisionRequest(name=moved.decision))
    assert moved.state == Plan.STATE_PROPOSED
    assert decision.state == Decision.STATE_PENDING and decision.flagged
    assert decision.diff.stops_moved == 2 and decision.diff.stops_compared == 4
    assert decision.diff.moved == ["n0", "n1"]
    assert decision.flag_reasons[0] == "moved 50.0 % of stops (limit 25.0 %)"
