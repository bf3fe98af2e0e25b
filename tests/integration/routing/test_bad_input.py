"""Bad planning requests (issue §5) are INVALID_ARGUMENT with field violations, and nothing is
stored for them."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2

from cartage.routing.v1 import decision_pb2, route_plan_pb2, vehicle_pb2
from cartage.routing.v1 import routing_service_pb2 as pb
from tests.integration.routing.conftest import DAY, RoutingClient, shipment, window
from tests.support import raises_rpc, violations


async def refused(routing: RoutingClient, **request) -> dict[str, str]:
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await routing.plan(**request)
    return violations(caught[0])


async def no_plans(routing: RoutingClient) -> bool:
    return not (await routing.ListRoutePlans(pb.ListRoutePlansRequest())).route_plans


async def test_time_window_ending_before_it_starts(routing: RoutingClient) -> None:
    await routing.vehicle("a")
    late = shipment("late", 52.5, 13.4, windows=((DAY + 12 * 3600, DAY + 9 * 3600),))
    found = await refused(routing, shipments=[late])
    assert found == {"shipments[0].delivery.time_windows[0].end_time": "must be after start_time"}
    assert await no_plans(routing)


async def no_vehicle_available(routing: RoutingClient, **request: Any) -> str:
    """A question of state, not of the request: FAILED_PRECONDITION (issue 13)."""
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION) as caught:
        await routing.plan(**request)
    assert "AVAILABLE" in caught[0].details()
    return str(caught[0].details())


async def test_zero_vehicles(routing: RoutingClient) -> None:
    await no_vehicle_available(routing, shipments=[shipment("one", 52.5, 13.4)])
    # Vehicles that exist but are not available do not count either.
    await routing.vehicle("broken")
    await routing.SetVehicleStatus(pb.SetVehicleStatusRequest(
        name="vehicles/broken", status=vehicle_pb2.Vehicle.STATUS_BROKEN_DOWN))
    await no_vehicle_available(routing, shipments=[shipment("one", 52.5, 13.4)])
    assert await no_plans(routing)


async def test_a_capacity_dimension_a_vehicle_lacks(routing: RoutingClient) -> None:
    await routing.vehicle("weighs")  # declares WEIGHT_KG only
    bulky = shipment("bulky", 52.5, 13.4)
    bulky.demands.add(dimension=vehicle_pb2.DIMENSION_VOLUME_M3, amount=2.5)
    found = await refused(routing, shipments=[bulky])
    assert found == {"shipments[0].demands[1].dimension":
                     "demands VOLUME_M3, which vehicles/weighs does not declare"}
    assert await no_plans(routing)


async def test_coordinates_out_of_range(routing: RoutingClient) -> None:
    await routing.vehicle("a")
    found = await refused(routing, shipments=[shipment("north-pole-plus", 91.0, 13.4),
                                              shipment("dateline-plus", 52.5, 181.0)])
    assert set(found) == {"shipments[0].delivery.location.latitude",
                          "shipments[1].delivery.location.longitude"}
    assert await no_plans(routing)


async def test_twenty_thousand_shipments_are_refused_before_any_work(
        routing: RoutingClient) -> None:
    await routing.vehicle("a")
    one = shipment("s", 52.5, 13.4)
    request = pb.PlanRoutesRequest(time_limit=duration_pb2.Duration(seconds=2))
    for i in range(20_000):
        item = request.shipments.add()
        item.CopyFrom(one)
        item.id = f"s{i}"
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await routing.PlanRoutes(request)
    found = violations(caught[0])
    assert found == {"shipments": "at most 5,000 shipments per request (got 20,000)"}
    assert await no_plans(routing)


async def test_everything_else_that_is_checked(routing: RoutingClient) -> None:
    await routing.vehicle("a")
    twin = shipment("twin", 52.5, 13.4)
    overlapping = shipment("ov", 52.5, 13.4, windows=((DAY, DAY + 7200), (DAY + 3600, DAY + 9000)))
    found = await refused(
        routing,
        shipments=[twin, twin, shipment("p", 52.5, 13.4, priority=7), overlapping,
                   shipment("hash#id", 52.5, 13.4)],
        vehicles=["vehicles/a", "trucks/b"],
        orders=["orders/nope"],
        time_limit=duration_pb2.Duration(seconds=301),
        objective=route_plan_pb2.ObjectiveWeights(distance=-1),
    )
    assert set(found) == {
        "shipments[1].id", "shipments[2].priority", "shipments[3].delivery.time_windows[1]",
        "shipments[4].id", "vehicles[1]", "orders[0]", "time_limit", "objective.distance"}
    assert "at most 300 s" in found["time_limit"]
    found = await refused(routing, shipments=[shipment("x", 52.5, 13.4)],
                          time_limit=duration_pb2.Duration(seconds=0))
    assert set(found) == {"time_limit"}


async def test_unknown_names_are_reported_per_field(routing: RoutingClient) -> None:
    await routing.vehicle("a")
    found = await refused(routing, shipments=[shipment("x", 52.5, 13.4)],
                          vehicles=["vehicles/a", "vehicles/ghost"])
    assert found == {"vehicles[1]": "unknown vehicle vehicles/ghost"}
    found = await refused(routing, orders=["orders/" + "0" * 32])
    assert found == {"orders[0]": f"unknown order orders/{'0' * 32}"}
    # No orders waiting and no shipments given: a question of state, not a bad argument.
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION) as caught:
        await routing.plan()
    assert "no released own-fleet order waits" in caught[0].details()
    assert await no_plans(routing)


async def test_bad_policy_and_incident(routing: RoutingClient) -> None:
    policy = decision_pb2.AutonomyPolicy(domains=[
        decision_pb2.DomainPolicy(domain=decision_pb2.DECISION_DOMAIN_TRAFFIC,
                                  level=decision_pb2.AUTONOMY_LEVEL_L2, max_moved_share=1.5),
        decision_pb2.DomainPolicy(domain=decision_pb2.DECISION_DOMAIN_TRAFFIC),
        decision_pb2.DomainPolicy(level=decision_pb2.AUTONOMY_LEVEL_L3,
                                  max_cost_increase=-0.1)])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await routing.UpdateAutonomyPolicy(pb.UpdateAutonomyPolicyRequest(
            autonomy_policy=policy))
    assert set(violations(caught[0])) == {
        "autonomy_policy.domains[0].max_moved_share", "autonomy_policy.domains[1].domain",
        "autonomy_policy.domains[1].level", "autonomy_policy.domains[2].domain",
        "autonomy_policy.domains[2].max_cost_increase"}
    incident = decision_pb2.TrafficIncident(
        area=decision_pb2.Area(latitude=-91, longitude=13.4, radius_meters=0),
        slowdown_factor=0.5, start_time=window(DAY, DAY).start_time,
        end_time=window(DAY, DAY - 60).end_time)
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await routing.ReportTrafficIncident(pb.ReportTrafficIncidentRequest(
            traffic_incident=incident))
    assert set(violations(caught[0])) == {
        "traffic_incident.area.latitude", "traffic_incident.area.radius_meters",
        "traffic_incident.slowdown_factor", "traffic_incident.end_time"}
