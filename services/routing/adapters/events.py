"""Events in and out of the routing service.

Out: `route.planned`, `route.updated`, `decision.pending` and `vehicle.status_changed`
(`cartage.routing.v1` *Event messages), written to the outbox in the transaction of the change
and relayed to the ROUTING stream.
In: the order service's `order.*` events from its ORDER stream (see services/order/app.py and
adapters/events.py there) and our own `vehicle.status_changed`, which telematics integrations
may publish too.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg

from cartage.order.v1 import events_pb2 as order_events
from cartage.routing.v1 import events_pb2, vehicle_pb2
from services.kit.uow import OutgoingEvent
from services.routing.conversion import (
    decision_to_proto,
    plan_to_proto,
    set_timestamp,
    vehicle_to_proto,
)
from services.routing.domain.incoming import OrderChanged, VehicleStatusChanged
from services.routing.domain.model import Decision, RoutePlan, Vehicle, VehicleStatus

STREAM = "ROUTING"
SUBJECTS = ("route.>", "decision.>", "vehicle.>")
VEHICLE_STATUS_CHANGED = "vehicle.status_changed"
ORDER_STREAM = "ORDER"
ORDER_EVENTS: dict[str, Any] = {
    "order.created": order_events.OrderCreatedEvent,
    "order.updated": order_events.OrderUpdatedEvent,
    "order.released": order_events.OrderReleasedEvent,
    "order.cancelled": order_events.OrderCancelledEvent,
}


def _outgoing(subject: str, event: Any, client_id: str, when: datetime) -> OutgoingEvent:
    """Stamp the event with a fresh id (also its JetStream Nats-Msg-Id), time and owner."""
    event.event_id = os.urandom(16).hex()
    event.client_id = client_id
    set_timestamp(event.event_time, when)
    return OutgoingEvent(subject=subject, event_type=event.DESCRIPTOR.full_name,
                         payload=event.SerializeToString(), event_id=event.event_id)


class RoutingEvents:
    """The use cases' `ports.Events`: each event from the domain objects it is about."""

    def route_planned(self, plan: RoutePlan, when: datetime) -> OutgoingEvent:
        return _outgoing("route.planned", events_pb2.RoutePlannedEvent(
            route_plan=plan_to_proto(plan)), plan.client_id, when)

    def route_updated(self, plan: RoutePlan, decision: Decision, when: datetime
                      ) -> OutgoingEvent:
        event = events_pb2.RouteUpdatedEvent(route_plan=plan_to_proto(plan),
                                             decision=decision_to_proto(decision))
        return _outgoing("route.updated", event, plan.client_id, when)

    def decision_pending(self, decision: Decision, when: datetime) -> OutgoingEvent:
        return _outgoing("decision.pending", events_pb2.DecisionPendingEvent(
            decision=decision_to_proto(decision)), decision.client_id, when)

    def vehicle_status_changed(self, vehicle: Vehicle, previous: VehicleStatus, reason: str,
                               when: datetime) -> OutgoingEvent:
        event = events_pb2.VehicleStatusChangedEvent(
            vehicle=vehicle_to_proto(vehicle),
            previous_status=vehicle_pb2.Vehicle.Status.ValueType(previous), reason=reason)
        return _outgoing(VEHICLE_STATUS_CHANGED, event, vehicle.client_id, when)


def decode_order_event(msg: Msg) -> OrderChanged | None:
    """An order event; None for a subject this service does not read."""
    kind = ORDER_EVENTS.get(msg.subject)
    if kind is None:
        return None
    event = kind.FromString(msg.data)
    changed = tuple(event.update_mask.paths) if msg.subject == "order.updated" else ()
    return OrderChanged(msg.subject, event.order, event.event_id, changed)


def decode_vehicle_event(msg: Msg) -> VehicleStatusChanged:
    event = events_pb2.VehicleStatusChangedEvent.FromString(msg.data)
    known = {int(s) for s in VehicleStatus}
    status = VehicleStatus(event.vehicle.status) if event.vehicle.status in known else None
    return VehicleStatusChanged(event.client_id, event.vehicle.name, status, event.reason,
                                event.event_id)
