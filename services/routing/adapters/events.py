"""Events in and out of the routing service.

Out: `route.planned`, `route.updated`, `decision.pending` and `vehicle.status_changed`
(`cartage.routing.v1` *Event messages), written to the outbox in the transaction of the change
and relayed to the ROUTING stream.
In: the order service's `order.*` events from its ORDER stream (see services/order/app.py and
adapters/events.py there) and our own `vehicle.status_changed`, which telematics integrations
may publish too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from cartage.order.v1 import events_pb2 as order_events
from cartage.routing.v1 import events_pb2, vehicle_pb2
from cartage.tracking.v1 import events_pb2 as tracking_events
from cartage.tracking.v1 import tracking_pb2
from services.kit.events import catalog
from services.kit.uow import OutgoingEvent
from services.routing.conversion import decision_to_proto, plan_to_proto, vehicle_to_proto
from services.routing.domain.incoming import (
    LateRisk,
    MilestoneRecorded,
    OrderChanged,
    VehicleStatusChanged,
)
from services.routing.domain.model import Decision, RoutePlan, Vehicle, VehicleStatus

VEHICLE_STATUS_CHANGED = "vehicle.status_changed"
# The order service's events routing replans on (their classes come from the registry).
ORDER_SUBJECTS = ("order.created", "order.updated", "order.released", "order.cancelled")
# The tracking service's events: what happened at the stops, and late risks.
TRACKING_SUBJECTS = ("milestone.recorded", "exception.raised")


def _outgoing(event: Any, client_id: str, when: datetime) -> OutgoingEvent:
    return catalog().outgoing(event, when, client_id=client_id)


class RoutingEvents:
    """The use cases' `ports.Events`: each event from the domain objects it is about."""

    def route_planned(self, plan: RoutePlan, when: datetime) -> OutgoingEvent:
        return _outgoing(events_pb2.RoutePlannedEvent(route_plan=plan_to_proto(plan)),
                         plan.client_id, when)

    def route_updated(self, plan: RoutePlan, decision: Decision, when: datetime
                      ) -> OutgoingEvent:
        event = events_pb2.RouteUpdatedEvent(route_plan=plan_to_proto(plan),
                                             decision=decision_to_proto(decision))
        return _outgoing(event, plan.client_id, when)

    def decision_pending(self, decision: Decision, when: datetime) -> OutgoingEvent:
        return _outgoing(events_pb2.DecisionPendingEvent(decision=decision_to_proto(decision)),
                         decision.client_id, when)

    def vehicle_status_changed(self, vehicle: Vehicle, previous: VehicleStatus, reason: str,
                               when: datetime) -> OutgoingEvent:
        event = events_pb2.VehicleStatusChangedEvent(
            vehicle=vehicle_to_proto(vehicle),
            previous_status=vehicle_pb2.Vehicle.Status.ValueType(previous), reason=reason)
        return _outgoing(event, vehicle.client_id, when)


def decode_order_event(msg: Msg) -> OrderChanged | None:
    """An order event (by its event-type header); None for a type this service does not read."""
    event = catalog().decode(msg)
    if not isinstance(event, order_events.OrderCreatedEvent | order_events.OrderUpdatedEvent
                      | order_events.OrderReleasedEvent | order_events.OrderCancelledEvent):
        return None
    subject = catalog().of(event).subject
    changed = (tuple(event.update_mask.paths)
               if isinstance(event, order_events.OrderUpdatedEvent) else ())
    return OrderChanged(subject, event.order, event.event_id, changed)


def decode_vehicle_event(msg: Msg) -> VehicleStatusChanged | None:
    event = catalog().decode(msg)
    if not isinstance(event, events_pb2.VehicleStatusChangedEvent):
        return None
    known = {int(s) for s in VehicleStatus}
    status = VehicleStatus(event.vehicle.status) if event.vehicle.status in known else None
    return VehicleStatusChanged(event.client_id, event.vehicle.name, status, event.reason,
                                event.event_id)


def _time(message: Any, field: str) -> datetime | None:
    return message.__getattribute__(field).ToDatetime(tzinfo=UTC) if message.HasField(field) \
        else None


def decode_tracking_event(msg: Msg) -> MilestoneRecorded | LateRisk | None:
    """A milestone, or a late-risk exception; None for anything else (other exceptions: a
    damaged or refused load is no reason to move stops)."""
    event = catalog().decode(msg)
    if isinstance(event, tracking_events.MilestoneRecordedEvent):
        m = event.milestone
        return MilestoneRecorded(event.client_id, event.order, m.stop_id, int(m.type),
                                 m.event_time.ToDatetime(tzinfo=UTC), event.event_id)
    if (isinstance(event, tracking_events.ExceptionRaisedEvent)
            and event.reason == tracking_pb2.EXCEPTION_REASON_LATE_RISK):
        return LateRisk(event.client_id, event.order, event.stop_id, event.vehicle,
                        _time(event, "eta"), _time(event, "window_end_time"), event.event_id)
    return None
