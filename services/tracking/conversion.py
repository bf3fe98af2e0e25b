"""Contract messages to and from the domain. Pure functions, no I/O; the api and the adapters
use them, the use cases get the few they need as codecs from the composition root."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from google.type import latlng_pb2

from cartage.order.v1 import order_pb2
from cartage.tracking.v1 import tracking_pb2, tracking_service_pb2
from cartage.type.v1 import stop_pb2
from services.kit.clock import set_timestamp, to_datetime
from services.tracking.domain.eta import PlannedStop
from services.tracking.domain.geofencing import Fence
from services.tracking.domain.positions import Fix
from services.tracking.domain.shipment import DELIVERY, PICKUP, Milestone, Type
from services.tracking.use_cases.ports import Codecs, LinkRow, OrderStops, StoredMilestone
from services.tracking.use_cases.positions import Outcome
from services.tracking.use_cases.views import TrackingView

VEHICLES = "vehicles/"
SHARED_PATH = "/v1/sharedTracking/"
ETA_TOLERANCE = timedelta(minutes=15)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(stamp: timestamp_pb2.Timestamp) -> datetime:
    # exact, and cheaper than Timestamp.ToDatetime (this runs for every position)
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def fix_from_proto(p: tracking_pb2.Position) -> Fix:
    return Fix(p.vehicle.removeprefix(VEHICLES), _time(p.time), p.location.latitude,
               p.location.longitude, p.accuracy_meters, p.speed_mps, p.heading_degrees)


def position_to_proto(fix: Fix) -> tracking_pb2.Position:
    message = tracking_pb2.Position(
        vehicle=VEHICLES + fix.vehicle,
        location=latlng_pb2.LatLng(latitude=fix.lat, longitude=fix.lng),
        accuracy_meters=fix.accuracy, speed_mps=fix.speed, heading_degrees=fix.heading)
    set_timestamp(message.time, fix.time)
    return message


def outcome_to_proto(outcome: Outcome) -> tracking_service_pb2.RecordPositionsResponse:
    return tracking_service_pb2.RecordPositionsResponse(
        accepted=outcome.accepted, duplicates=outcome.duplicates, late=outcome.late,
        refusals=[tracking_pb2.PositionRefusal(index=r.index, reason=int(r.reason),
                                               description=r.description)
                  for r in outcome.refused])


def milestone_from_proto(m: tracking_pb2.Milestone) -> tuple[Milestone, bytes]:
    body = tracking_pb2.Milestone(note=m.note, vehicle=m.vehicle)
    if m.HasField("location"):
        body.location.CopyFrom(m.location)
    return (Milestone(m.stop_id, Type(m.type), to_datetime(m.event_time), m.exception_reason,
                      m.source), body.SerializeToString())


def milestone_to_proto(order_id: str, stored: StoredMilestone) -> tracking_pb2.Milestone:
    message = tracking_pb2.Milestone.FromString(stored.body)
    m = stored.milestone
    message.name = f"orders/{order_id}/milestones/{stored.id}"
    message.stop_id = m.stop_id
    message.type = int(m.type)
    message.exception_reason = m.exception_reason
    message.source = m.source
    set_timestamp(message.event_time, m.event_time)
    set_timestamp(message.record_time, stored.record_time)
    return message


def milestone_body(vehicle: str, lat: float, lng: float) -> bytes:
    return tracking_pb2.Milestone(
        vehicle=VEHICLES + vehicle, location=latlng_pb2.LatLng(latitude=lat, longitude=lng),
    ).SerializeToString()


def _planned(order_id: str, stop_id: str, stop: stop_pb2.Stop) -> PlannedStop:
    windows = list(stop.time_windows)
    return PlannedStop(
        order_id, stop_id, stop.location.latitude, stop.location.longitude,
        timedelta(seconds=stop.service_duration.seconds),
        to_datetime(windows[0].start_time) if windows else None,
        max((to_datetime(w.end_time) for w in windows), default=None))


def order_stops(body: bytes) -> OrderStops | None:
    order = order_pb2.Order.FromString(body)
    if not order.HasField("pickup") or not order.HasField("delivery"):
        return None
    order_id = order.name.removeprefix("orders/")
    return OrderStops(_planned(order_id, PICKUP, order.pickup),
                      _planned(order_id, DELIVERY, order.delivery),
                      order.pickup.address.locality, order.delivery.address.locality)


def stop_fence_body(fence: Fence) -> bytes:
    return tracking_pb2.Geofence(
        display_name=f"orders/{fence.order_id} {fence.stop_id}").SerializeToString()


CODECS = Codecs(milestone_body=milestone_body, order_stops=order_stops)


def fence_to_proto(fence: Fence, create_time: datetime, body: bytes) -> tracking_pb2.Geofence:
    message = tracking_pb2.Geofence.FromString(body)
    message.name = f"geofences/{fence.id}"
    message.origin = fence.origin
    message.dwell_time.FromTimedelta(fence.dwell)
    if fence.origin == 2:
        message.order = f"orders/{fence.order_id}"
        message.stop_id = fence.stop_id
    set_timestamp(message.create_time, create_time)
    return message


def tracking_to_proto(view: TrackingView) -> tracking_pb2.Tracking:
    row = view.row
    message = tracking_pb2.Tracking(
        name=f"orders/{row.order_id}/tracking", state=row.state,
        vehicle=VEHICLES + row.vehicle_id if row.vehicle_id else "",
        milestone_count=row.milestone_count, exceptions=list(row.exceptions))
    if row.state_time is not None:
        set_timestamp(message.state_time, row.state_time)
    set_timestamp(message.update_time, row.update_time)
    route = {r.stop.stop_id: r for r in view.route}
    for stop_id in (PICKUP, DELIVERY):
        stop = message.stops.add(stop_id=stop_id)
        own = [s.milestone for s in view.milestones if s.milestone.stop_id == stop_id]
        ranked = [m for m in own if m.type != Type.EXCEPTION]
        if ranked:
            stop.last_milestone = int(max(ranked, key=lambda m: (_rank(m.type), m.event_time))
                                      .type)
        arrivals = [m.event_time for m in own if m.type == Type.ARRIVED]
        departures = [m.event_time for m in own if m.type == Type.DEPARTED]
        if arrivals:
            set_timestamp(stop.arrival_time, min(arrivals))
        if departures:
            set_timestamp(stop.departure_time, min(departures))
        planned = route.get(stop_id)
        if planned is not None and planned.eta is not None and not ranked:  # not reached yet
            set_timestamp(stop.eta, planned.eta)
            stop.late_risk = planned.late_risk
        if view.stops is not None:
            known = view.stops.pickup if stop_id == PICKUP else view.stops.delivery
            if known.window_end is not None:
                set_timestamp(stop.window_end_time, known.window_end)
            stop.locality = (view.stops.pickup_locality if stop_id == PICKUP
                             else view.stops.delivery_locality)
    if view.last_position is not None:
        message.last_position.CopyFrom(position_to_proto(view.last_position))
    return message


def _rank(kind: Type) -> int:
    return {Type.ARRIVED: 1, Type.PICKED_UP: 2, Type.DELIVERY_ATTEMPTED: 2, Type.DEPARTED: 3,
            Type.DELIVERED: 4}.get(kind, 0)


def shared_to_proto(view: TrackingView) -> tracking_pb2.SharedTracking:
    """The redacted view: no names, phones, coordinates, prices or vehicle."""
    full = tracking_to_proto(view)
    localities = {s.stop_id: s.locality for s in full.stops}
    message = tracking_pb2.SharedTracking(state=full.state,
                                          delivery_locality=localities.get(DELIVERY, ""))
    delivery = next(s for s in full.stops if s.stop_id == DELIVERY)
    if delivery.HasField("eta"):
        eta = to_datetime(delivery.eta)
        set_timestamp(message.eta_earliest, eta - ETA_TOLERANCE)
        set_timestamp(message.eta_latest, eta + ETA_TOLERANCE)
    for stored in view.milestones:
        m = stored.milestone
        item = message.milestones.add(stop_id=m.stop_id, type=int(m.type),
                                      locality=localities.get(m.stop_id, ""))
        set_timestamp(item.event_time, m.event_time)
    return message


def link_to_proto(link: LinkRow, token: str = "") -> tracking_pb2.TrackingLink:
    message = tracking_pb2.TrackingLink(
        name=f"trackingLinks/{link.id}", order=f"orders/{link.order_id}", token=token,
        path=SHARED_PATH + token if token else "", revoked=link.revoked)
    set_timestamp(message.expire_time, link.expire_time)
    return message
