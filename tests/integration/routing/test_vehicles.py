"""Vehicle CRUD through the real routing service: validation, pages, etags, tenancy, and the
`vehicle.status_changed` event on NATS."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from cartage.routing.v1 import routing_service_pb2 as pb
from cartage.routing.v1 import vehicle_pb2
from tests.integration.routing.conftest import (
    DAY,
    RoutingClient,
    make_vehicle,
    routing_events,
    window,
)
from tests.support import eventually, raises_rpc, reason, violations


async def test_create_get_update_delete(routing: RoutingClient) -> None:
    created = await routing.vehicle("truck-1", weight=1200, skills=("tail-lift",))
    assert created.name == "vehicles/truck-1"
    assert created.status == vehicle_pb2.Vehicle.STATUS_AVAILABLE
    assert created.etag == "v1" and created.HasField("create_time")
    assert await routing.GetVehicle(pb.GetVehicleRequest(name=created.name)) == created

    patch = vehicle_pb2.Vehicle(name=created.name, etag=created.etag, display_name="Berlin 7",
                                skills=["refrigerated"])
    updated = await routing.UpdateVehicle(pb.UpdateVehicleRequest(
        vehicle=patch, update_mask=field_mask_pb2.FieldMask(paths=["display_name", "skills"])))
    assert updated.display_name == "Berlin 7" and list(updated.skills) == ["refrigerated"]
    assert updated.capacities == created.capacities and updated.etag == "v2"

    await routing.DeleteVehicle(pb.DeleteVehicleRequest(name=created.name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await routing.GetVehicle(pb.GetVehicleRequest(name=created.name))


async def test_duplicate_id_is_already_exists(routing: RoutingClient) -> None:
    await routing.vehicle("twice")
    with raises_rpc(grpc.StatusCode.ALREADY_EXISTS) as caught:
        await routing.vehicle("twice")
    assert reason(caught[0]) == "VEHICLE_EXISTS"


async def test_list_pages_and_filters_by_status(routing: RoutingClient) -> None:
    for i in range(5):
        await routing.vehicle(f"car-{i}")
    await routing.SetVehicleStatus(pb.SetVehicleStatusRequest(
        name="vehicles/car-3", status=vehicle_pb2.Vehicle.STATUS_OFF_DUTY))
    names, token = [], ""
    while True:
        page = await routing.ListVehicles(pb.ListVehiclesRequest(page_size=2, page_token=token))
        assert len(page.vehicles) <= 2
        names += [v.name for v in page.vehicles]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"vehicles/car-{i}" for i in range(5)]
    available = await routing.ListVehicles(pb.ListVehiclesRequest(filter="status = AVAILABLE"))
    assert [v.name for v in available.vehicles] == [
        f"vehicles/car-{i}" for i in (0, 1, 2, 4)]
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await routing.ListVehicles(pb.ListVehiclesRequest(filter="status = PARKED"))
    assert "filter" in violations(caught[0])


async def test_stale_etag_is_aborted(routing: RoutingClient) -> None:
    created = await routing.vehicle("etag-1")
    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    await routing.UpdateVehicle(pb.UpdateVehicleRequest(vehicle=vehicle_pb2.Vehicle(
        name=created.name, etag="v1", display_name="first"), update_mask=mask))
    with raises_rpc(grpc.StatusCode.ABORTED) as caught:
        await routing.UpdateVehicle(pb.UpdateVehicleRequest(vehicle=vehicle_pb2.Vehicle(
            name=created.name, etag="v1", display_name="second"), update_mask=mask))
    assert reason(caught[0]) == "ETAG_MISMATCH"
    current = await routing.GetVehicle(pb.GetVehicleRequest(name=created.name))
    assert current.display_name == "first"


async def test_another_client_sees_nothing(routing: RoutingClient, routing_channel) -> None:
    created = await routing.vehicle("mine")
    other = RoutingClient(routing_channel)
    for call in (
        other.GetVehicle(pb.GetVehicleRequest(name=created.name)),
        other.DeleteVehicle(pb.DeleteVehicleRequest(name=created.name)),
        other.SetVehicleStatus(pb.SetVehicleStatusRequest(
            name=created.name, status=vehicle_pb2.Vehicle.STATUS_BROKEN_DOWN)),
        other.UpdateVehicle(pb.UpdateVehicleRequest(
            vehicle=vehicle_pb2.Vehicle(name=created.name, display_name="stolen"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]))),
    ):
        with raises_rpc(grpc.StatusCode.NOT_FOUND):
            await call
    assert not (await other.ListVehicles(pb.ListVehiclesRequest())).vehicles
    # The other client may use the same id for a vehicle of its own.
    assert (await other.vehicle("mine")).name == "vehicles/mine"
    mine = await routing.GetVehicle(pb.GetVehicleRequest(name=created.name))
    assert mine.status == vehicle_pb2.Vehicle.STATUS_AVAILABLE and mine.display_name == "truck"


async def test_no_identity_is_unauthenticated(routing_channel) -> None:
    from cartage.routing.v1 import routing_service_pb2_grpc

    stub = routing_service_pb2_grpc.RoutingServiceStub(routing_channel)
    with raises_rpc(grpc.StatusCode.UNAUTHENTICATED):
        await stub.GetVehicle(pb.GetVehicleRequest(name="vehicles/x"))


async def test_every_bad_field_is_reported(routing: RoutingClient) -> None:
    vehicle = make_vehicle(
        start=DAY + 18 * 3600, end=DAY + 6 * 3600,  # shift ends before it starts
        depot=(95.0, 13.4),  # latitude out of range
        breaks=[vehicle_pb2.Break(window=window(DAY + 30 * 3600, DAY + 31 * 3600),
                                  duration=duration_pb2.Duration(seconds=1800))])
    vehicle.capacities.add(dimension=vehicle_pb2.DIMENSION_VOLUME_M3, amount=-1)
    vehicle.capacities.add(dimension=vehicle_pb2.DIMENSION_WEIGHT_KG, amount=5)
    vehicle.capacities.add(dimension=vehicle_pb2.DIMENSION_UNSPECIFIED, amount=5)
    vehicle.end_depot.location.latitude = 52.5
    vehicle.end_depot.location.longitude = 200
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await routing.CreateVehicle(pb.CreateVehicleRequest(vehicle_id="Bad_ID",
                                                            vehicle=vehicle))
    found = violations(caught[0])
    assert set(found) == {
        "vehicle_id",
        "vehicle.shift.end_time",
        "vehicle.start_depot.location.latitude",
        "vehicle.end_depot.location.longitude",
        "vehicle.capacities[1].amount",
        "vehicle.capacities[2].dimension",
        "vehicle.capacities[3].dimension",
    }, found
    assert "appears twice" in found["vehicle.capacities[2].dimension"]


async def test_break_checks_against_the_shift(routing: RoutingClient) -> None:
    outside = vehicle_pb2.Break(window=window(DAY + 21 * 3600, DAY + 22 * 3600),
                                duration=duration_pb2.Duration(seconds=600))
    too_long = vehicle_pb2.Break(window=window(DAY + 12 * 3600, DAY + 12 * 3600 + 600),
                                 duration=duration_pb2.Duration(seconds=1800))
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await routing.CreateVehicle(pb.CreateVehicleRequest(
            vehicle_id="breaks", vehicle=make_vehicle(breaks=[outside, too_long])))
    found = violations(caught[0])
    assert set(found) == {"vehicle.breaks[0].window", "vehicle.breaks[1].duration"}
    assert "inside the shift" in found["vehicle.breaks[0].window"]
    assert "longer than its window" in found["vehicle.breaks[1].duration"]


async def test_status_change_is_published_once(routing: RoutingClient, nats_url: str) -> None:
    created = await routing.vehicle("status-1")
    request = pb.SetVehicleStatusRequest(name=created.name,
                                         status=vehicle_pb2.Vehicle.STATUS_BROKEN_DOWN,
                                         reason="engine failure on A15")
    changed = await routing.SetVehicleStatus(request)
    again = await routing.SetVehicleStatus(request)  # no change: no second event
    assert changed.status == again.status == vehicle_pb2.Vehicle.STATUS_BROKEN_DOWN
    assert changed.etag == again.etag == "v2"

    async def published():
        return [e for s, e in await routing_events(nats_url, routing.client_id)
                if s == "vehicle.status_changed"]

    events = await eventually(published)
    assert len(events) == 1
    event = events[0]
    assert event.vehicle.name == created.name and event.reason == "engine failure on A15"
    assert event.previous_status == vehicle_pb2.Vehicle.STATUS_AVAILABLE
    assert event.vehicle.status == vehicle_pb2.Vehicle.STATUS_BROKEN_DOWN
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await routing.SetVehicleStatus(pb.SetVehicleStatusRequest(name=created.name))
    assert "status" in violations(caught[0])
