"""Milestones, the tracking record, geofences (manual and around the plan's stops), ETAs,
WatchTracking and tracking links on the real service, Postgres and JetStream."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
from google.protobuf import duration_pb2, struct_pb2
from google.type import latlng_pb2

from cartage.tracking.v1 import tracking_pb2, tracking_service_pb2
from tests.integration.tracking.conftest import (
    NOW,
    TrackingClient,
    known_vehicle,
    position,
    publish_plan,
    ts,
)
from tests.support import eventually, raises_rpc, reason, stream_events, violations

pb = tracking_service_pb2
S = tracking_pb2.ShipmentState
M_PER_DEG = 111_320.0
PICKUP, DELIVERY = (52.52, 13.40), (52.40, 13.05)

def milestone(stop_id: str, kind: int, minutes_ago: float = 10, **fields: object
              ) -> tracking_pb2.Milestone:
    return tracking_pb2.Milestone(stop_id=stop_id, type=kind,
                                  event_time=ts(NOW - timedelta(minutes=minutes_ago)),
                                  source=tracking_pb2.MILESTONE_SOURCE_DRIVER_APP, **fields)

async def record(client: TrackingClient, order_id: str, m: tracking_pb2.Milestone
                 ) -> tracking_pb2.Milestone:
    return await client.RecordMilestone(pb.RecordMilestoneRequest(parent=f"orders/{order_id}",
                                                                  milestone=m))

async def tracking_events(stack, subject: str, order_id: str) -> list:
    events = await stream_events(stack.nats_url, "TRACKING")
    return [e for s, e, _ in events if s == subject
            and (getattr(e, "order", "") == f"orders/{order_id}"
                 or getattr(getattr(e, "visit", None), "order", "") == f"orders/{order_id}")]

async def test_milestones_make_a_monotonic_state_and_events(tracking, stack) -> None:
    order_id = await tracking.tracked_order()
    assert (await tracking.tracking(order_id)).state == S.SHIPMENT_STATE_PENDING
    picked = await record(tracking, order_id, milestone("pickup",
                                                         tracking_pb2.MILESTONE_TYPE_PICKED_UP))
    assert (await tracking.tracking(order_id)).state == S.SHIPMENT_STATE_IN_TRANSIT
    # a duplicate is the same milestone and publishes nothing
    again = await record(tracking, order_id, milestone("pickup",
                                                        tracking_pb2.MILESTONE_TYPE_PICKED_UP))
    assert again.name == picked.name
    # an older milestone arriving late does not move the state back
    await record(tracking, order_id, milestone("pickup", tracking_pb2.MILESTONE_TYPE_ARRIVED,
                                               minutes_ago=30))
    record_ = await tracking.tracking(order_id)
    assert record_.state == S.SHIPMENT_STATE_IN_TRANSIT and record_.milestone_count == 2
    await record(tracking, order_id, milestone(
        "delivery", tracking_pb2.MILESTONE_TYPE_EXCEPTION, minutes_ago=5,
        exception_reason=tracking_pb2.EXCEPTION_REASON_DELAYED))
    await record(tracking, order_id, milestone("delivery",
                                               tracking_pb2.MILESTONE_TYPE_DELIVERED, 1))
    record_ = await tracking.tracking(order_id)
    assert record_.state == S.SHIPMENT_STATE_DELIVERED
    assert list(record_.exceptions) == [tracking_pb2.EXCEPTION_REASON_DELAYED]
    pickup = next(s for s in record_.stops if s.stop_id == "pickup")
    assert pickup.last_milestone == tracking_pb2.MILESTONE_TYPE_PICKED_UP
    assert pickup.locality == "Berlin"

    recorded = await eventually(
        lambda: tracking_events(stack, "milestone.recorded", order_id),
        until=lambda events: len(events) == 4)
    assert [e.milestone.type for e in recorded] == [
        tracking_pb2.MILESTONE_TYPE_PICKED_UP, tracking_pb2.MILESTONE_TYPE_ARRIVED,
        tracking_pb2.MILESTONE_TYPE_EXCEPTION, tracking_pb2.MILESTONE_TYPE_DELIVERED]
    assert recorded[0].milestone.stop_id == "pickup" and recorded[0].client_id == \
        tracking.client_id
    assert recorded[-1].state == S.SHIPMENT_STATE_DELIVERED
    raised = await eventually(lambda: tracking_events(stack, "exception.raised", order_id))
    assert raised[0].reason == tracking_pb2.EXCEPTION_REASON_DELAYED

    # pages in event-time order
    first = await tracking.ListMilestones(pb.ListMilestonesRequest(
        parent=f"orders/{order_id}", page_size=3))
    assert len(first.milestones) == 3 and first.next_page_token
    rest = await tracking.ListMilestones(pb.ListMilestonesRequest(
        parent=f"orders/{order_id}", page_size=3, page_token=first.next_page_token))
    assert [m.type for m in [*first.milestones, *rest.milestones]] == [
        tracking_pb2.MILESTONE_TYPE_ARRIVED, tracking_pb2.MILESTONE_TYPE_PICKED_UP,
        tracking_pb2.MILESTONE_TYPE_EXCEPTION, tracking_pb2.MILESTONE_TYPE_DELIVERED]
    assert not rest.next_page_token

async def test_bad_milestones_get_field_violations(tracking) -> None:
    order_id = await tracking.tracked_order()
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await record(tracking, order_id, tracking_pb2.Milestone(
            stop_id="dock", type=99, event_time=ts(NOW + timedelta(hours=1)),
            note="x" * 1001, location=latlng_pb2.LatLng(latitude=95)))
    found = violations(caught[0])
    assert set(found) >= {"milestone.stop_id", "milestone.type", "milestone.source",
                          "milestone.event_time", "milestone.note",
                          "milestone.location.latitude"}
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await record(tracking, order_id, milestone("pickup",
                                                   tracking_pb2.MILESTONE_TYPE_DELIVERED))
    assert "milestone.type" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await record(tracking, order_id, milestone("pickup",
                                                   tracking_pb2.MILESTONE_TYPE_EXCEPTION))
    assert "milestone.exception_reason" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await record(tracking, uuid.uuid4().hex, milestone(
            "pickup", tracking_pb2.MILESTONE_TYPE_ARRIVED))

def square(lat: float, lng: float, side: float, vertices_per_side: int = 1) -> list:
    corners = [(lng, lat), (lng + side, lat), (lng + side, lat + side), (lng, lat + side)]
    ring = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        for k in range(vertices_per_side):
            f = k / vertices_per_side
            ring.append([x0 + (x1 - x0) * f, y0 + (y1 - y0) * f])
    return [*ring, ring[0]]

def geojson(ring: list) -> struct_pb2.Struct:
    shape = struct_pb2.Struct()
    shape.update({"type": "Polygon", "coordinates": [ring]})
    return shape

async def test_geofences_are_validated_and_fire_enter_dwell_exit(tracking, stack) -> None:
    order_id = await tracking.tracked_order()
    truck = f"truck-{uuid.uuid4().hex[:8]}"
    await publish_plan(stack.nats_url, tracking.client_id, {truck: [
        (order_id, "pickup", *PICKUP, 900), (order_id, "delivery", *DELIVERY, 900)]})
    await known_vehicle(tracking, truck, 10.0, 10.0)
    bowtie = [[13.0, 50.0], [13.1, 50.1], [13.1, 50.0], [13.0, 50.1], [13.0, 50.0]]
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await tracking.CreateGeofence(pb.CreateGeofenceRequest(geofence=tracking_pb2.Geofence(
            geojson=geojson(bowtie))))
    assert "Self-intersection" in violations(caught[0])["geofence.geojson.coordinates"]
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await tracking.CreateGeofence(pb.CreateGeofenceRequest(geofence=tracking_pb2.Geofence(
            geojson=geojson(square(50, 13, 0.1, 25_000)))))  # 100,000 vertices
    assert "at most 10000" in violations(caught[0])["geofence.geojson.coordinates"]
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await tracking.CreateGeofence(pb.CreateGeofenceRequest(geofence=tracking_pb2.Geofence(
            circle=tracking_pb2.Circle(center=latlng_pb2.LatLng(latitude=50), radius_meters=0))))
    assert "geofence.circle.radius_meters" in violations(caught[0])

    fence = await tracking.CreateGeofence(pb.CreateGeofenceRequest(geofence=tracking_pb2.Geofence(
        display_name="yard", geojson=geojson(square(50.0, 13.0, 0.01)),
        dwell_time=duration_pb2.Duration(seconds=120))))
    assert fence.origin == tracking_pb2.Geofence.ORIGIN_MANUAL
    got = await tracking.GetGeofence(pb.GetGeofenceRequest(name=fence.name))
    assert got.display_name == "yard" and got.geojson == fence.geojson
    listed = await tracking.ListGeofences(pb.ListGeofencesRequest(page_size=1000))
    names = {g.name for g in listed.geofences}
    assert fence.name in names and len(names) == 3  # the plan's two stop fences too

    t = NOW - timedelta(minutes=20)
    centre = (50.005, 13.005)
    path = [(50.03, 13.005)] + [centre] * 6 + [(50.04, 13.005)]
    await tracking.batch(*[position(truck, t + timedelta(minutes=i), lat, lng)
                           for i, (lat, lng) in enumerate(path)])
    events = await eventually(lambda: _visits(stack, fence.name), until=lambda e: len(e) == 3)
    assert [s for s, _ in events] == ["geofence.entered", "geofence.dwelled", "geofence.exited"]
    exited = events[-1][1]
    assert exited.dwell_duration.seconds == 6 * 60

    await tracking.DeleteGeofence(pb.DeleteGeofenceRequest(name=fence.name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await tracking.GetGeofence(pb.GetGeofenceRequest(name=fence.name))
    stop_fence = next(g for g in listed.geofences if g.origin == tracking_pb2.Geofence.ORIGIN_STOP)
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION):
        await tracking.DeleteGeofence(pb.DeleteGeofenceRequest(name=stop_fence.name))

async def _visits(stack, fence: str) -> list:
    return [(s, e) for s, e, _ in await stream_events(stack.nats_url, "TRACKING")
            if hasattr(e, "visit") and e.visit.geofence == fence]

async def test_the_plan_gives_etas_stop_fences_record_arrived(tracking, stack) -> None:
    order_id = await tracking.tracked_order()
    truck = f"truck-{uuid.uuid4().hex[:8]}"
    await publish_plan(stack.nats_url, tracking.client_id, {truck: [
        (order_id, "pickup", *PICKUP, 900), (order_id, "delivery", *DELIVERY, 900)]})
    await known_vehicle(tracking, truck, 10.0, 10.0)
    # 10 km north of the pickup
    north = PICKUP[0] + 10_000 / M_PER_DEG
    await tracking.batch(position(truck, NOW - timedelta(minutes=20), north, PICKUP[1]))
    record_ = await tracking.tracking(order_id)
    pickup = next(s for s in record_.stops if s.stop_id == "pickup")
    eta = pickup.eta.ToDatetime().replace(tzinfo=NOW.tzinfo)
    # 10 km x road factor 1.3 at 50 km/h = 15.6 min
    expected = NOW - timedelta(minutes=20) + timedelta(minutes=15.6)
    assert abs((eta - expected).total_seconds()) < 20
    updated = await eventually(lambda: tracking_events(stack, "eta.updated", order_id),
                               until=lambda e: len(e) >= 2)
    assert {e.stop_id for e in updated} == {"pickup", "delivery"}
    # the sample order's windows are in 2030 and so not late; the vehicle reaches the pickup
    result = await tracking.batch(position(truck, NOW - timedelta(minutes=1), *PICKUP))
    assert result.accepted == 1, result
    record_ = await tracking.tracking(order_id)
    assert record_.state == S.SHIPMENT_STATE_AT_PICKUP
    arrived = (await tracking.ListMilestones(pb.ListMilestonesRequest(
        parent=f"orders/{order_id}"))).milestones
    assert [(m.type, m.source, m.vehicle) for m in arrived] == [
        (tracking_pb2.MILESTONE_TYPE_ARRIVED, tracking_pb2.MILESTONE_SOURCE_GEOFENCE,
         f"vehicles/{truck}")]
    entered = await eventually(lambda: tracking_events(stack, "geofence.entered", order_id))
    assert entered[0].visit.stop_id == "pickup"

async def test_a_late_eta_raises_a_late_risk(tracking, stack) -> None:
    from tests.support import sample_order

    order = sample_order()
    for w in order.delivery.time_windows:
        w.start_time.CopyFrom(ts(NOW - timedelta(hours=2)))
        w.end_time.CopyFrom(ts(NOW - timedelta(hours=1)))
    for w in order.pickup.time_windows:
        w.start_time.CopyFrom(ts(NOW - timedelta(hours=4)))
        w.end_time.CopyFrom(ts(NOW - timedelta(hours=3)))
    order_id = await tracking.tracked_order(order)
    truck = f"truck-{uuid.uuid4().hex[:8]}"
    await publish_plan(stack.nats_url, tracking.client_id, {truck: [
        (order_id, "delivery", *DELIVERY, 600)]})
    await known_vehicle(tracking, truck, 10.0, 10.0)
    await tracking.batch(position(truck, NOW - timedelta(minutes=1), 52.30, 13.05))
    raised = await eventually(lambda: tracking_events(stack, "exception.raised", order_id))
    assert raised[0].reason == tracking_pb2.EXCEPTION_REASON_LATE_RISK
    assert raised[0].window_end_time.seconds == int((NOW - timedelta(hours=1)).timestamp())
    record_ = await tracking.tracking(order_id)
    assert next(s for s in record_.stops if s.stop_id == "delivery").late_risk

async def test_watch_streams_changes(tracking) -> None:
    order_id = await tracking.tracked_order()
    call = tracking.stub.WatchTracking(pb.WatchTrackingRequest(
        name=f"orders/{order_id}/tracking"), metadata=tracking.metadata, timeout=30)
    first = await call.read()
    assert first.state == S.SHIPMENT_STATE_PENDING
    await record(tracking, order_id, milestone("pickup", tracking_pb2.MILESTONE_TYPE_PICKED_UP))
    second = await asyncio.wait_for(call.read(), 10)
    assert second.state == S.SHIPMENT_STATE_IN_TRANSIT and second.milestone_count == 1
    call.cancel()
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):
        async for _ in tracking.stub.WatchTracking(pb.WatchTrackingRequest(name="orders/x"),
                                                   metadata=tracking.metadata, timeout=10):
            pass

async def test_tracking_links_show_a_redacted_view_until_revoked(tracking) -> None:
    order_id = await tracking.tracked_order()
    await record(tracking, order_id, milestone("pickup", tracking_pb2.MILESTONE_TYPE_PICKED_UP))
    link = await tracking.CreateTrackingLink(pb.CreateTrackingLinkRequest(
        parent=f"orders/{order_id}", ttl=duration_pb2.Duration(seconds=3600)))
    assert link.path == f"/v1/sharedTracking/{link.token}"
    anonymous = tracking.stub.GetSharedTracking  # no caller identity at all
    shared = await anonymous(pb.GetSharedTrackingRequest(token=link.token), timeout=10)
    assert shared.state == S.SHIPMENT_STATE_IN_TRANSIT
    assert shared.delivery_locality == "Berlin"
    assert [(m.stop_id, m.locality) for m in shared.milestones] == [("pickup", "Berlin")]
    text = str(shared)
    assert "Acme" not in text and "latitude" not in text and "vehicles/" not in text
    forged = link.token[:-2] + ("AA" if not link.token.endswith("AA") else "BB")
    for token in (forged, "nonsense", link.token.replace(".", "x")):
        with raises_rpc(grpc.StatusCode.NOT_FOUND) as caught:
            await anonymous(pb.GetSharedTrackingRequest(token=token), timeout=10)
        assert reason(caught[0]) == "TRACKING_LINK_NOT_FOUND"
    await tracking.RevokeTrackingLink(pb.RevokeTrackingLinkRequest(name=link.name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await anonymous(pb.GetSharedTrackingRequest(token=link.token), timeout=10)
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await tracking.CreateTrackingLink(pb.CreateTrackingLinkRequest(
            parent=f"orders/{order_id}", ttl=duration_pb2.Duration(seconds=1)))
    assert "ttl" in violations(caught[0])
