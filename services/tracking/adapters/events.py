"""Tracking's events for the outbox (`cartage.tracking.v1` *Event messages), and the other
services' events it follows, decoded for the read models."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from cartage.order.v1 import events_pb2 as order_events
from cartage.routing.v1 import events_pb2 as routing_events
from cartage.routing.v1 import route_plan_pb2
from cartage.tracking.v1 import events_pb2
from services.kit.clock import set_timestamp, to_datetime
from services.kit.events import catalog
from services.kit.uow import OutgoingEvent
from services.tracking.conversion import VEHICLES, milestone_to_proto
from services.tracking.domain.geofencing import Happening, Occurrence
from services.tracking.domain.shipment import DELIVERY, PICKUP, Milestone
from services.tracking.use_cases.plans import PlannedVisit
from services.tracking.use_cases.ports import RouteStopRow, StoredMilestone

ORDER_SUBJECTS = ("order.created", "order.updated", "order.released", "order.cancelled")
PLAN_SUBJECTS = ("route.planned", "route.updated", "vehicle.status_changed")
LATE_RISK = 6  # ExceptionReason LATE_RISK


def _stamp(target: Any, moment: datetime | None) -> None:
    if moment is not None:
        set_timestamp(target, moment)


class TrackingEvents:
    def milestone_recorded(self, client_id: str, order_id: str, stored: StoredMilestone,
                           state: int) -> OutgoingEvent:
        event = events_pb2.MilestoneRecordedEvent(
            order=f"orders/{order_id}", milestone=milestone_to_proto(order_id, stored),
            state=state)
        return catalog().outgoing(event, stored.record_time, client_id=client_id)

    def eta_updated(self, client_id: str, row: RouteStopRow, now: datetime) -> OutgoingEvent:
        event = events_pb2.EtaUpdatedEvent(order=f"orders/{row.stop.order_id}",
                                           stop_id=row.stop.stop_id,
                                           vehicle=VEHICLES + row.vehicle_id)
        _stamp(event.eta, row.eta)
        return catalog().outgoing(event, now, client_id=client_id)

    def late_risk(self, client_id: str, row: RouteStopRow, now: datetime) -> OutgoingEvent:
        event = events_pb2.ExceptionRaisedEvent(order=f"orders/{row.stop.order_id}",
                                                stop_id=row.stop.stop_id, reason=LATE_RISK,
                                                vehicle=VEHICLES + row.vehicle_id)
        _stamp(event.eta, row.eta)
        _stamp(event.window_end_time, row.stop.window_end)
        return catalog().outgoing(event, now, client_id=client_id)

    def exception(self, client_id: str, order_id: str, milestone: Milestone, vehicle: str,
                  now: datetime) -> OutgoingEvent:
        event = events_pb2.ExceptionRaisedEvent(
            order=f"orders/{order_id}", stop_id=milestone.stop_id,
            reason=milestone.exception_reason, vehicle=VEHICLES + vehicle if vehicle else "")
        return catalog().outgoing(event, now, client_id=client_id)

    def geofence(self, client_id: str, o: Occurrence, free_time_s: float, now: datetime
                 ) -> OutgoingEvent:
        visit = events_pb2.GeofenceVisit(
            geofence=f"geofences/{o.fence.id}", vehicle=VEHICLES + o.vehicle,
            order=f"orders/{o.fence.order_id}" if o.fence.order_id else "",
            stop_id=o.fence.stop_id)
        _stamp(visit.position_time, o.time)
        _stamp(visit.enter_time, o.enter_time)
        visit.location.latitude, visit.location.longitude = o.lat, o.lng
        free = timedelta(seconds=free_time_s)
        event: Message
        if o.what == Happening.ENTERED:
            event = events_pb2.GeofenceEnteredEvent(visit=visit)
        elif o.what == Happening.EXITED:
            event = events_pb2.GeofenceExitedEvent(visit=visit)
            event.dwell_duration.FromTimedelta(o.duration)
        elif o.what == Happening.DWELLED:
            event = events_pb2.GeofenceDwelledEvent(visit=visit)
            event.dwell_duration.FromTimedelta(o.duration)
        elif o.what == Happening.DETENTION_STARTED:
            event = events_pb2.DetentionStartedEvent(visit=visit)
            event.free_time.FromTimedelta(free)
            return catalog().outgoing(event, o.time, client_id=client_id)
        else:
            event = events_pb2.DetentionEndedEvent(visit=visit)
            event.billable_duration.FromTimedelta(o.duration)
            event.free_time.FromTimedelta(free)
            return catalog().outgoing(event, o.time, client_id=client_id)
        return catalog().outgoing(event, now, client_id=client_id)


def order_of(event: Message | None) -> tuple[str, str, bytes] | None:
    """(client, order id, Order bytes) of an order event; None for any other event."""
    kinds = (order_events.OrderCreatedEvent, order_events.OrderUpdatedEvent,
             order_events.OrderReleasedEvent, order_events.OrderCancelledEvent)
    if not isinstance(event, kinds):
        return None
    order = event.order
    return order.client_id, order.name.removeprefix("orders/"), order.SerializeToString()


def plan_of(event: Message | None) -> tuple[str, list[str], list[PlannedVisit]] | None:
    """(client, vehicles, visits in route order) of a route.planned / route.updated."""
    if not isinstance(event, routing_events.RoutePlannedEvent | routing_events.RouteUpdatedEvent):
        return None
    vehicles, visits = [], []
    for route in event.route_plan.routes:
        vehicle = route.vehicle.removeprefix(VEHICLES)
        vehicles.append(vehicle)
        for stop in route.stops:
            if not stop.shipment.startswith("orders/"):
                continue  # an ad-hoc what-if shipment has no tracking record
            kind = PICKUP if stop.kind == route_plan_pb2.RouteStop.KIND_PICKUP else DELIVERY
            service = (to_datetime(stop.departure_time) - to_datetime(stop.service_start_time)
                       if stop.HasField("departure_time") and stop.HasField(
                           "service_start_time") else timedelta(0))
            visits.append(PlannedVisit(vehicle, stop.shipment.removeprefix("orders/"), kind,
                                       stop.location.latitude, stop.location.longitude,
                                       service))
    return event.client_id, vehicles, visits


def vehicle_of(event: Message | None) -> tuple[str, str] | None:
    if not isinstance(event, routing_events.VehicleStatusChangedEvent):
        return None
    return event.client_id, event.vehicle.name.removeprefix(VEHICLES)
