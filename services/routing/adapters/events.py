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
from cartage.routing.v1 import decision_pb2, events_pb2, route_plan_pb2, vehicle_pb2
from services.kit.uow import OutgoingEvent
from services.routing.api.converters import set_timestamp

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
    def route_planned(self, client_id: str, plan: route_plan_pb2.RoutePlan,
                      when: datetime) -> OutgoingEvent:
        return _outgoing("route.planned", events_pb2.RoutePlannedEvent(route_plan=plan),
                         client_id, when)

    def route_updated(self, client_id: str, plan: route_plan_pb2.RoutePlan,
                      decision: decision_pb2.Decision, when: datetime) -> OutgoingEvent:
        event = events_pb2.RouteUpdatedEvent(route_plan=plan, decision=decision)
        return _outgoing("route.updated", event, client_id, when)

    def decision_pending(self, client_id: str, decision: decision_pb2.Decision,
                         when: datetime) -> OutgoingEvent:
        return _outgoing("decision.pending", events_pb2.DecisionPendingEvent(decision=decision),
                         client_id, when)

    def vehicle_status_changed(self, client_id: str, vehicle: vehicle_pb2.Vehicle,
                               previous: int, reason: str, when: datetime) -> OutgoingEvent:
        event = events_pb2.VehicleStatusChangedEvent(
            vehicle=vehicle, previous_status=vehicle_pb2.Vehicle.Status.ValueType(previous),
            reason=reason)
        return _outgoing(VEHICLE_STATUS_CHANGED, event, client_id, when)


def decode_order_event(msg: Msg) -> tuple[str, Any] | None:
    """(subject, event) of an order event; None for a subject this service does not read."""
    kind = ORDER_EVENTS.get(msg.subject)
    return None if kind is None else (msg.subject, kind.FromString(msg.data))


def decode_vehicle_event(msg: Msg) -> events_pb2.VehicleStatusChangedEvent:
    return events_pb2.VehicleStatusChangedEvent.FromString(msg.data)
