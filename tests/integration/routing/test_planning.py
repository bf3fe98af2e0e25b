"""PlanRoutes end to end: the operation, the solved plan on small instances whose right answer
is known, unassigned reasons, progress on WatchRoutePlan, cancellation, GeoJSON."""

from __future__ import annotations

import json

import grpc
from google.longrunning import operations_proto_pb2 as ops
from google.protobuf import duration_pb2
from google.rpc import code_pb2

from cartage.routing.v1 import decision_pb2, route_plan_pb2
from cartage.routing.v1 import routing_service_pb2 as pb
from tests.integration.routing.conftest import (
    DAY,
    RoutingClient,
    shipment,
    stop,
)
from tests.support import raises_rpc, reason

NORTH = [(52.60, 13.39), (52.61, 13.41)]
SOUTH = [(52.44, 13.39), (52.43, 13.41)]
RouteStop = route_plan_pb2.RouteStop
Reason = route_plan_pb2.UnassignedShipment.Reason


def by_vehicle(plan: route_plan_pb2.RoutePlan) -> dict[str, list[str]]:
    return {r.vehicle: [s.shipment for s in r.stops] for r in plan.routes}


async def test_capacity_splits_the_fleet_by_area(routing: RoutingClient) -> None:
    """Two trucks of 1,000 kg, four shipments of 400 kg, two north and two south of the
    depot: the only good plan sends one truck north and one south."""
    await routing.vehicle("a")
    await routing.vehicle("b")
    shipments = [shipment(f"n{i}", *p, weight=400) for i, p in enumerate(NORTH)] + [
        shipment(f"s{i}", *p, weight=400) for i, p in enumerate(SOUTH)]
    operation = await routing.plan(shipments=shipments)
    assert operation.name.startswith("operations/routing/") and not operation.done
    metadata = pb.PlanRoutesMetadata()
    operation.metadata.Unpack(metadata)
    assert metadata.shipments == 4 and metadata.vehicles == 2
    assert metadata.route_plan.startswith("routePlans/")

    plan = await routing.planned(shipments=shipments)
    assert plan.state == route_plan_pb2.RoutePlan.STATE_PROPOSED  # L1: waits for a person
    assert not plan.unassigned and not plan.violations
    areas = sorted(sorted(s[0] for s in stops) for stops in by_vehicle(plan).values())
    assert areas == [["n", "n"], ["s", "s"]]
    assert plan.totals.vehicles_used == 2 and plan.totals.shipments_planned == 4
    assert plan.solver.startswith("portfolio/")
    for route in plan.routes:
        loads = [s.load_after[0].amount for s in route.stops]
        assert loads == [400.0, 0.0]  # 800 kg leave the depot, 400 kg per drop
        assert route.stops[0].load_after[0].dimension == 1  # WEIGHT_KG
        for s in route.stops:
            assert DAY + 8 * 3600 <= s.service_start_time.seconds <= DAY + 18 * 3600
            assert s.departure_time.seconds == s.service_start_time.seconds + 300
        assert route.distance_meters > sum(s.distance_meters for s in route.stops)  # way back
    assert plan.totals.distance_meters == sum(r.distance_meters for r in plan.routes)


async def test_pickup_comes_before_delivery_on_one_vehicle(routing: RoutingClient) -> None:
    await routing.vehicle("a")
    await routing.vehicle("b")
    pair = shipment("p1", 52.45, 13.30, pickup=stop(52.58, 13.50,
                                                    (DAY + 8 * 3600, DAY + 12 * 3600)))
    plan = await routing.planned(shipments=[pair, shipment("x", 52.50, 13.45)])
    stops = [(r.vehicle, s.kind) for r in plan.routes for s in r.stops if s.shipment == "p1"]
    assert [kind for _, kind in stops] == [RouteStop.KIND_PICKUP, RouteStop.KIND_DELIVERY]
    assert stops[0][0] == stops[1][0]


async def test_unassigned_shipments_come_with_the_reason(routing: RoutingClient) -> None:
    await routing.vehicle("a", skills=("tail-lift",))
    await routing.vehicle("b")
    plan = await routing.planned(shipments=[
        shipment("ok", 52.50, 13.45),
        shipment("hazmat", 52.50, 13.35, required_skills=["hazmat"]),
        shipment("heavy", 52.55, 13.45, weight=5000),
    ])
    assert by_vehicle(plan) and [s for stops in by_vehicle(plan).values() for s in stops] == ["ok"]
    reasons = {u.shipment: (u.reason, u.detail) for u in plan.unassigned}
    assert reasons["hazmat"][0] == Reason.REASON_NO_VEHICLE_WITH_SKILL
    assert reasons["hazmat"][1] == "needs skill hazmat; no vehicle of the plan has it"
    assert reasons["heavy"][0] == Reason.REASON_CAPACITY
    assert "5,000 kg" in reasons["heavy"][1] and "1,000 kg" in reasons["heavy"][1]
    assert plan.totals.shipments_unassigned == 2



async def test_a_full_fleet_leaves_out_the_lower_priority_shipment(routing: RoutingClient
                                                                   ) -> None:
    """One truck of 1,000 kg and two required shipments of 600 kg: the one of higher priority
    goes although it is the farther (costlier) one; the other is unassigned, fleet exhausted."""
    await routing.vehicle("a")
    plan = await routing.planned(shipments=[
        shipment("near-low", 52.53, 13.41, weight=600, priority=1),
        shipment("far-high", 52.60, 13.50, weight=600, priority=3),
    ])
    assert list(by_vehicle(plan).values()) == [["far-high"]]
    assert [(u.shipment, u.reason) for u in plan.unassigned] == [
        ("near-low", Reason.REASON_FLEET_EXHAUSTED)]


async def test_progress_is_streamed_until_the_plan_is_proposed(routing: RoutingClient) -> None:
    await routing.vehicle("a", weight=5000)
    await routing.vehicle("b", weight=5000)
    many = [shipment(f"s{i}", 52.40 + (i % 7) * 0.03, 13.20 + (i // 7) * 0.05, weight=50)
            for i in range(40)]
    operation = await routing.plan(shipments=many, time_limit=duration_pb2.Duration(seconds=3))
    metadata = pb.PlanRoutesMetadata()
    operation.metadata.Unpack(metadata)
    seen = []
    async for version in routing.watch(metadata.route_plan):
        seen.append(version)
        if version.state != route_plan_pb2.RoutePlan.STATE_SOLVING:
            break
    assert seen[0].state == route_plan_pb2.RoutePlan.STATE_SOLVING
    solving = [v for v in seen if v.state == route_plan_pb2.RoutePlan.STATE_SOLVING]
    assert any(v.progress.best_cost > 0 and v.progress.solver for v in solving), solving
    assert seen[-1].state == route_plan_pb2.RoutePlan.STATE_PROPOSED
    assert seen[-1].totals.shipments_planned == 40
    done = await routing.wait(operation)
    assert done.metadata.Unpack(metadata) and metadata.progress.best_cost > 0


async def test_cancel_keeps_the_best_plan_or_cancels(routing: RoutingClient) -> None:
    """A client's jobs run one at a time: cancelling the running one keeps its best plan so
    far, cancelling the queued one ends it before it starts."""
    await routing.vehicle("a", weight=5000)
    many = [shipment(f"s{i}", 52.40 + (i % 6) * 0.03, 13.20 + (i // 6) * 0.05, weight=50)
            for i in range(30)]
    limit = duration_pb2.Duration(seconds=3)
    running = await routing.plan(shipments=many, time_limit=limit)
    queued = await routing.plan(shipments=many[:5], time_limit=limit)
    metadata = pb.PlanRoutesMetadata()
    running.metadata.Unpack(metadata)
    async for version in routing.watch(metadata.route_plan):
        if version.progress.best_cost > 0:
            break  # the solver has a plan
    await routing.CancelOperation(ops.CancelOperationRequest(name=running.name))
    await routing.CancelOperation(ops.CancelOperationRequest(name=queued.name))

    kept = await routing.wait(running)
    plan = route_plan_pb2.RoutePlan()
    kept.response.Unpack(plan)
    assert plan.state == route_plan_pb2.RoutePlan.STATE_PROPOSED
    assert plan.totals.shipments_planned == 30
    assert plan.solve_duration.ToTimedelta().total_seconds() < 3  # stopped early

    cancelled = await routing.wait(queued)
    assert cancelled.error.code == code_pb2.CANCELLED
    queued.metadata.Unpack(metadata)
    gone = await routing.GetRoutePlan(pb.GetRoutePlanRequest(name=metadata.route_plan))
    assert gone.state == route_plan_pb2.RoutePlan.STATE_CANCELLED and not gone.routes
    # Cancelling a finished operation changes nothing.
    await routing.CancelOperation(ops.CancelOperationRequest(name=running.name))
    assert (await routing.GetOperation(ops.GetOperationRequest(name=running.name))) == kept


async def test_export_is_geojson(routing: RoutingClient) -> None:
    await routing.vehicle("a")
    plan = await routing.planned(shipments=[
        shipment("n0", *NORTH[0]), shipment("n1", *NORTH[1]),
        shipment("far", 52.5, 13.4, required_skills=["crane"])])
    body = await routing.ExportRoutePlan(pb.ExportRoutePlanRequest(name=plan.name))
    assert body.content_type == "application/geo+json"
    collection = json.loads(body.data)
    assert collection["type"] == "FeatureCollection"
    lines = [f for f in collection["features"] if f["geometry"] and
             f["geometry"]["type"] == "LineString"]
    assert len(lines) == 1
    coordinates = lines[0]["geometry"]["coordinates"]
    assert coordinates[0] == coordinates[-1] == [13.40, 52.52]  # [lng, lat], depot both ends
    points = [f["properties"] for f in collection["features"]
              if f["properties"].get("kind") == "delivery"]
    assert sorted(p["shipment"] for p in points) == ["n0", "n1"]
    assert [p["sequence"] for p in points] == [1, 2]
    assert all(p["vehicle"] == "vehicles/a" and p["arrival"].endswith("Z") and
               p["fixed"] is False for p in points)
    unassigned = [f for f in collection["features"] if f["properties"]["kind"] == "unassigned"]
    assert unassigned[0]["properties"]["reason"] == "NO_VEHICLE_WITH_SKILL"
    assert unassigned[0]["geometry"]["coordinates"] == [13.4, 52.5]


async def test_operations_list_get_delete_and_tenancy(routing: RoutingClient,
                                                      routing_channel) -> None:
    await routing.vehicle("a")
    first = await routing.wait(await routing.plan(shipments=[shipment("one", 52.5, 13.45)]))
    second = await routing.plan(shipments=[shipment("two", 52.5, 13.45)], request_id="r-2")
    again = await routing.plan(shipments=[shipment("two", 52.5, 13.45)], request_id="r-2")
    assert again.name == second.name  # the same request_id returns the same operation
    listed = await routing.ListOperations(ops.ListOperationsRequest(name="operations",
                                                                    page_size=1))
    assert [o.name for o in listed.operations] == [second.name]
    rest = await routing.ListOperations(ops.ListOperationsRequest(
        name="operations", page_size=1, page_token=listed.next_page_token))
    assert [o.name for o in rest.operations] == [first.name] and not rest.next_page_token
    finished = await routing.ListOperations(ops.ListOperationsRequest(filter="done = true"))
    assert first.name in [o.name for o in finished.operations]
    other = RoutingClient(routing_channel)
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await other.GetOperation(ops.GetOperationRequest(name=first.name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await other.CancelOperation(ops.CancelOperationRequest(name=second.name))
    assert not (await other.ListOperations(ops.ListOperationsRequest())).operations
    await routing.wait(second)
    # Names issued before they carried the service still work; another service's do not.
    old_name = first.name.replace("operations/routing/", "operations/")
    assert (await routing.GetOperation(ops.GetOperationRequest(name=old_name))).name == first.name
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):
        await routing.GetOperation(ops.GetOperationRequest(
            name=first.name.replace("/routing/", "/order/")))
    await routing.DeleteOperation(ops.DeleteOperationRequest(name=old_name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await routing.GetOperation(ops.GetOperationRequest(name=first.name))


async def test_a_vehicle_in_the_active_plan_cannot_be_deleted(routing: RoutingClient) -> None:
    await routing.set_policy(decision_pb2.DECISION_DOMAIN_INITIAL_PLAN,
                             decision_pb2.AUTONOMY_LEVEL_L3)
    await routing.vehicle("busy")
    await routing.vehicle("idle", depot=(52.0, 13.0))
    plan = await routing.planned(shipments=[shipment("one", 52.52, 13.45)],
                                 vehicles=["vehicles/busy"])
    assert plan.state == route_plan_pb2.RoutePlan.STATE_ACTIVE
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION) as caught:
        await routing.DeleteVehicle(pb.DeleteVehicleRequest(name="vehicles/busy"))
    assert reason(caught[0]) == "VEHICLE_IN_ACTIVE_PLAN"
    await routing.DeleteVehicle(pb.DeleteVehicleRequest(name="vehicles/idle"))



async def test_plans_and_decisions_are_the_callers_own(routing: RoutingClient,
                                                      routing_channel) -> None:
    await routing.vehicle("a")
    plan = await routing.planned(shipments=[shipment("one", 52.5, 13.45)])
    other = RoutingClient(routing_channel)
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await other.GetRoutePlan(pb.GetRoutePlanRequest(name=plan.name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await other.ExportRoutePlan(pb.ExportRoutePlanRequest(name=plan.name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND) as caught:
        async for _ in other.watch(plan.name):
            pass
    assert reason(caught[0]) == "ROUTE_PLAN_NOT_FOUND"  # the stream carries rich errors too
    for call in (other.GetDecision(pb.GetDecisionRequest(name=plan.decision)),
                 other.ApproveDecision(pb.ApproveDecisionRequest(name=plan.decision)),
                 other.RejectDecision(pb.RejectDecisionRequest(name=plan.decision))):
        with raises_rpc(grpc.StatusCode.NOT_FOUND):
            await call
    assert not (await other.ListRoutePlans(pb.ListRoutePlansRequest())).route_plans
    assert not (await other.ListDecisions(pb.ListDecisionsRequest())).decisions
    mine = await routing.ListRoutePlans(pb.ListRoutePlansRequest(filter="state = PROPOSED"))
    assert [p.name for p in mine.route_plans] == [plan.name]


async def test_plans_are_listed_newest_first_in_pages(routing: RoutingClient) -> None:
    await routing.vehicle("a")
    names = [(await routing.planned(shipments=[shipment(f"s{i}", 52.5, 13.45)])).name
             for i in range(3)]
    first = await routing.ListRoutePlans(pb.ListRoutePlansRequest(page_size=2))
    rest = await routing.ListRoutePlans(pb.ListRoutePlansRequest(
        page_size=2, page_token=first.next_page_token))
    assert [p.name for p in [*first.route_plans, *rest.route_plans]] == names[::-1]
    assert not rest.next_page_token
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):  # a token of another query
        await routing.ListRoutePlans(pb.ListRoutePlansRequest(
            filter="state = ACTIVE", page_token=first.next_page_token))
