"""Live replanning through real NATS: the order service's events (cancel, urgent release,
update), a breakdown via SetVehicleStatus, a traffic incident and ReplanRoutes each end in a
decision of their domain; completed stops stay where they were."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import field_mask_pb2

from cartage.order.v1 import order_pb2
from cartage.order.v1 import order_service_pb2 as order_pb
from cartage.routing.v1 import decision_pb2, route_plan_pb2, vehicle_pb2
from cartage.routing.v1 import routing_service_pb2 as pb
from tests.integration.routing.conftest import RoutingClient, routing_events, shipment
from tests.support import OrderClient, eventually, raises_rpc, reason, sample_order

Plan = route_plan_pb2.RoutePlan
Decision = decision_pb2.Decision
D = decision_pb2
L1, L3 = decision_pb2.AUTONOMY_LEVEL_L1, decision_pb2.AUTONOMY_LEVEL_L3


@pytest.fixture
async def orders(order_address: str, routing: RoutingClient):
    async with grpc.aio.insecure_channel(order_address) as channel:
        yield OrderClient(channel, routing.client_id)


async def released(orders: OrderClient, **overrides) -> order_pb2.Order:
    created = await orders.create(sample_order(**overrides))
    return await orders.ReleaseOrder(order_pb.ReleaseOrderRequest(name=created.name))


async def decisions(routing: RoutingClient, domain: int) -> list[decision_pb2.Decision]:
    listed = await routing.ListDecisions(pb.ListDecisionsRequest(
        filter=f"domain = {D.DecisionDomain.Name(domain)}"))
    return list(listed.decisions)


async def decided(routing: RoutingClient, domain: int, state: int | None = None
                  ) -> decision_pb2.Decision:
    """Wait for the first decision of `domain` (in `state`, when given)."""
    async def found():
        return [d for d in await decisions(routing, domain) if state in (None, d.state)]

    return (await eventually(found, seconds=60, interval=0.3))[0]


async def active_plan(routing: RoutingClient) -> route_plan_pb2.RoutePlan:
    listed = await routing.ListRoutePlans(pb.ListRoutePlansRequest(filter="state = ACTIVE"))
    assert len(listed.route_plans) == 1
    return listed.route_plans[0]


def placement(plan: route_plan_pb2.RoutePlan) -> dict[tuple[str, int], str]:
    return {(s.shipment, s.kind): r.vehicle for r in plan.routes for s in r.stops}


async def plan_orders(routing: RoutingClient, names: list[str]) -> route_plan_pb2.RoutePlan:
    """PlanRoutes once the routing read model has the orders (their events take a moment:
    unknown yet, or known from order.created while order.released is still on its way)."""
    async def attempt():
        try:
            return await routing.planned(orders=names)
        except grpc.aio.AioRpcError as error:
            behind = error.code() == grpc.StatusCode.FAILED_PRECONDITION and (
                "is CREATED" in (error.details() or ""))
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT and not behind:
                raise
            return None

    return await eventually(attempt, seconds=30, interval=0.3)


async def test_order_events_replan_the_active_plan(routing: RoutingClient,
                                                   orders: OrderClient, nats_url: str) -> None:
    for domain in (D.DECISION_DOMAIN_INITIAL_PLAN, D.DECISION_DOMAIN_CANCELLATION):
        await routing.set_policy(domain, L3)
    await routing.vehicle("a", weight=2000, skills=("tail_lift",))
    await routing.vehicle("b", weight=2000, skills=("tail_lift",), depot=(52.45, 13.10))
    first = [await released(orders) for _ in range(3)]
    plan = await plan_orders(routing, [o.name for o in first])
    assert plan.state == Plan.STATE_ACTIVE and plan.totals.shipments_planned == 3
    kinds = [s.kind for r in plan.routes for s in r.stops]
    assert kinds.count(route_plan_pb2.RouteStop.KIND_PICKUP) == 3
    before = placement(plan)

    # Cancelling an order of the active plan frees its stops and moves no other stop.
    gone = first[1]
    await orders.CancelOrder(order_pb.CancelOrderRequest(name=gone.name, reason="no longer needed"))
    cancellation = await decided(routing, D.DECISION_DOMAIN_CANCELLATION)
    assert cancellation.state == Decision.STATE_APPLIED
    assert cancellation.decided_by == "autonomy/L3"
    assert cancellation.inputs.trigger == "order.cancelled"
    assert list(cancellation.inputs.subjects) == [gone.name]
    assert list(cancellation.diff.removed) == [gone.name] and cancellation.diff.stops_moved == 0
    after = await active_plan(routing)
    assert after.name == cancellation.proposed_plan and after.previous_plan == plan.name
    assert gone.name not in {s for s, _ in placement(after)}
    assert all(before[key] == vehicle for key, vehicle in placement(after).items())

    async def updated():
        return [e for s, e in await routing_events(nats_url, routing.client_id)
                if s == "route.updated"]

    event = (await eventually(updated))[0]
    assert event.route_plan.name == after.name and event.decision.name == cancellation.name

    # An urgent order released while a plan is active is inserted (L1: it waits for approval).
    urgent = await released(orders, priority=order_pb2.PRIORITY_URGENT)
    insertion = await decided(routing, D.DECISION_DOMAIN_URGENT_INSERTION)
    assert insertion.state == Decision.STATE_PENDING
    assert list(insertion.diff.added) == [urgent.name]
    proposed = await routing.GetRoutePlan(pb.GetRoutePlanRequest(name=insertion.proposed_plan))
    assert urgent.name in {s for s, _ in placement(proposed)}
    assert (await active_plan(routing)).name == after.name
    # A released order that is not urgent waits for the next PlanRoutes.
    await released(orders)

    # Changing an order of the active plan replans it as well.
    kept = first[0]
    current = await orders.GetOrder(order_pb.GetOrderRequest(name=kept.name))
    change = order_pb2.Order(name=kept.name, etag=current.etag, notes="call ahead")
    await orders.UpdateOrder(order_pb.UpdateOrderRequest(
        order=change, update_mask=field_mask_pb2.FieldMask(paths=["notes"])))
    manual = await decided(routing, D.DECISION_DOMAIN_MANUAL_REPLAN)
    assert manual.inputs.trigger == "order.updated" and "notes" in manual.inputs.summary
    # The newer decision superseded the pending insertion, and kept its urgent order.
    assert (await routing.GetDecision(pb.GetDecisionRequest(name=insertion.name))).state == \
        Decision.STATE_SUPERSEDED
    replanned = await routing.GetRoutePlan(pb.GetRoutePlanRequest(name=manual.proposed_plan))
    assert urgent.name in {s for s, _ in placement(replanned)}
    assert len(await decisions(routing, D.DECISION_DOMAIN_URGENT_INSERTION)) == 1


async def test_breakdown_reallocates_open_stops_and_keeps_completed_ones(
        routing: RoutingClient, nats_url: str) -> None:
    for domain in (D.DECISION_DOMAIN_INITIAL_PLAN, D.DECISION_DOMAIN_BREAKDOWN):
        await routing.set_policy(domain, L3)
    now = int(time.time())
    start, end = now - 3 * 3600, now + 6 * 3600
    for name in ("a", "b"):
        await routing.vehicle(name, start=start, end=end)
    # Four stops due early in the shift (done by now), two due later (still open); at most
    # three 300 kg stops fit a truck, so both trucks work.
    early = [shipment(f"early{i}", 52.50 + 0.01 * i, 13.35 + 0.02 * i, weight=300,
                      windows=((start + 1800, start + 5400),)) for i in range(4)]
    late = [shipment(f"late{i}", 52.55 - 0.02 * i, 13.45, weight=300,
                     windows=((now + 3600, now + 7200),)) for i in range(2)]
    plan = await routing.planned(shipments=early + late)
    assert plan.state == Plan.STATE_ACTIVE and not plan.unassigned
    routes = {r.vehicle: r for r in plan.routes}
    broken = next(v for v, r in routes.items() if any(s.shipment.startswith("late")
                                                      for s in r.stops))
    other = next(v for v in routes if v != broken)
    done = [s for s in routes[broken].stops if s.departure_time.seconds <= now]
    open_ = [s.shipment for s in routes[broken].stops if s.departure_time.seconds > now]
    assert done and open_

    await routing.SetVehicleStatus(pb.SetVehicleStatusRequest(
        name=broken, status=vehicle_pb2.Vehicle.STATUS_BROKEN_DOWN, reason="gearbox"))
    breakdown = await decided(routing, D.DECISION_DOMAIN_BREAKDOWN)
    assert breakdown.state == Decision.STATE_APPLIED
    assert breakdown.inputs.trigger == "vehicle.status_changed"
    assert "gearbox" in breakdown.inputs.summary
    after = await active_plan(routing)
    assert after.name == breakdown.proposed_plan and not after.unassigned
    new_routes = {r.vehicle: r for r in after.routes}
    # The broken truck keeps exactly what it had done, at the same times, marked fixed.
    kept = [s for s in new_routes[broken].stops]
    assert [(s.shipment, s.departure_time) for s in kept] == \
        [(s.shipment, s.departure_time) for s in done]
    assert all(s.fixed for s in kept)
    # Its open stops are now on the other truck; the other truck's own stops stayed.
    moved_to = {s.shipment for s in new_routes[other].stops}
    assert set(open_) <= moved_to
    assert {s.shipment for s in routes[other].stops} <= moved_to
    assert sorted(breakdown.diff.moved) == sorted(open_)


async def test_traffic_incident_on_an_active_route(routing: RoutingClient,
                                                   nats_url: str) -> None:
    await routing.set_policy(D.DECISION_DOMAIN_INITIAL_PLAN, L3)
    await routing.vehicle("a")
    now = int(time.time())
    plan = await routing.planned(shipments=[shipment("n0", 52.60, 13.40),
                                            shipment("n1", 52.62, 13.42)])
    assert plan.state == Plan.STATE_ACTIVE
    # Far away from every leg: recorded, nothing to replan.
    far = await routing.ReportTrafficIncident(pb.ReportTrafficIncidentRequest(
        traffic_incident=D.TrafficIncident(
            area=D.Area(latitude=48.1, longitude=11.6, radius_meters=2000), slowdown_factor=3,
            start_time=plan.routes[0].start_time, end_time=plan.routes[0].end_time,
            description="Munich")))
    assert far.name.startswith("trafficIncidents/")
    # On the way north from the depot, while the route drives there.
    near = await routing.ReportTrafficIncident(pb.ReportTrafficIncidentRequest(
        traffic_incident=D.TrafficIncident(
            area=D.Area(latitude=52.56, longitude=13.40, radius_meters=1500),
            slowdown_factor=2.5, start_time=plan.routes[0].start_time,
            end_time=plan.routes[0].end_time, description="accident on the A114"),
        request_id=f"incident-{now}"))
    traffic = await decided(routing, D.DECISION_DOMAIN_TRAFFIC)
    assert traffic.state == Decision.STATE_PENDING  # L1
    assert list(traffic.inputs.subjects) == [near.name]
    assert traffic.inputs.summary == "accident on the A114"
    assert len(await decisions(routing, D.DECISION_DOMAIN_TRAFFIC)) == 1
    listed = await routing.ListTrafficIncidents(pb.ListTrafficIncidentsRequest())
    assert [i.name for i in listed.traffic_incidents] == [near.name, far.name]

    async def pending():
        return [e for s, e in await routing_events(nats_url, routing.client_id)
                if s == "decision.pending"]

    assert (await eventually(pending))[0].decision.name == traffic.name


async def test_replan_routes_needs_an_active_plan(routing: RoutingClient) -> None:
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION) as caught:
        await routing.ReplanRoutes(pb.ReplanRoutesRequest(reason="why not"))
    assert reason(caught[0]) == "NO_ACTIVE_PLAN"
    await routing.set_policy(D.DECISION_DOMAIN_INITIAL_PLAN, L3)
    await routing.set_policy(D.DECISION_DOMAIN_MANUAL_REPLAN, L3)
    await routing.vehicle("a")
    plan = await routing.planned(shipments=[shipment("n0", 52.60, 13.40)])
    operation = await routing.wait(await routing.ReplanRoutes(pb.ReplanRoutesRequest(
        reason="dispatcher asked")))
    replanned = Plan()
    operation.response.Unpack(replanned)
    assert replanned.state == Plan.STATE_ACTIVE and replanned.previous_plan == plan.name
    decision = await routing.GetDecision(pb.GetDecisionRequest(name=replanned.decision))
    assert decision.domain == D.DECISION_DOMAIN_MANUAL_REPLAN
    assert decision.inputs.summary == "dispatcher asked"
    assert decision.diff.stops_moved == 0 and decision.level == L3


async def test_orders_follow_the_active_plan(routing: RoutingClient, orders: OrderClient) -> None:
    """The order service reads route.planned / route.updated: an order the active plan serves
    is PLANNED, one it leaves out (or that only the replaced plan had) is RELEASED again."""
    await routing.set_policy(D.DECISION_DOMAIN_INITIAL_PLAN, L3)
    await routing.vehicle("a", weight=2000, skills=("tail_lift",))
    fits = await released(orders)
    content = sample_order()
    content.required_skills.append("hazmat")
    hazmat = await orders.ReleaseOrder(order_pb.ReleaseOrderRequest(
        name=(await orders.create(content)).name))
    first = await plan_orders(routing, [fits.name, hazmat.name])
    assert first.state == Plan.STATE_ACTIVE
    assert [u.shipment for u in first.unassigned] == [hazmat.name]

    async def states() -> tuple[int, int]:
        got = [await orders.GetOrder(order_pb.GetOrderRequest(name=o.name))
               for o in (fits, hazmat)]
        return got[0].state, got[1].state

    PLANNED, RELEASED = order_pb2.Order.STATE_PLANNED, order_pb2.Order.STATE_RELEASED
    await eventually(states, seconds=30, until=lambda got: got == (PLANNED, RELEASED))

    # A new plan for the hazmat order alone replaces the first: the roles swap.
    await routing.vehicle("b", weight=2000, skills=("tail_lift", "hazmat"))
    second = await plan_orders(routing, [hazmat.name])
    assert second.state == Plan.STATE_ACTIVE and not second.unassigned
    await eventually(states, seconds=30, until=lambda got: got == (RELEASED, PLANNED))
    # A planned order can still change (routing replans on order.updated).
    changed = await orders.GetOrder(order_pb.GetOrderRequest(name=hazmat.name))
    changed.notes = "use the side gate"
    updated = await orders.UpdateOrder(order_pb.UpdateOrderRequest(
        order=changed, update_mask=field_mask_pb2.FieldMask(paths=["notes"])))
    assert (updated.state, updated.notes) == (PLANNED, "use the side gate")
