"""Domain changes as contract events (`cartage.order.v1` *Event messages) for the outbox, and
the routing service's plan events this service follows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from google.protobuf import field_mask_pb2
from nats.aio.msg import Msg

from cartage.order.v1 import events_pb2, order_pb2
from cartage.routing.v1 import events_pb2 as routing_events
from services.kit.uow import OutgoingEvent
from services.kit.wire import embedded
from services.order.api.converters import order_bytes, set_timestamp
from services.order.domain.model import Order, State


def _outgoing(subject: str, event: Any, order: Order) -> OutgoingEvent:
    """Stamp the event with a fresh id (also its JetStream Nats-Msg-Id) and the order's update
    time, and splice in the order's serialized bytes as its `order` field (`kit.wire`)."""
    event.event_id = os.urandom(16).hex()
    set_timestamp(event.event_time, order.update_time)
    descriptor = event.DESCRIPTOR
    return OutgoingEvent(
        subject=subject,
        event_type=descriptor.full_name,
        payload=event.SerializeToString()
        + embedded(descriptor.fields_by_name["order"], order_bytes(order)),
        event_id=event.event_id,
    )


class OrderEvents:
    def created(self, order: Order) -> OutgoingEvent:
        return _outgoing("order.created", events_pb2.OrderCreatedEvent(), order)

    def updated(self, order: Order, paths: list[str]) -> OutgoingEvent:
        event = events_pb2.OrderUpdatedEvent(update_mask=field_mask_pb2.FieldMask(paths=paths))
        return _outgoing("order.updated", event, order)

    def released(self, order: Order) -> OutgoingEvent:
        return _outgoing("order.released", events_pb2.OrderReleasedEvent(), order)

    def cancelled(self, order: Order, previous: State) -> OutgoingEvent:
        event = events_pb2.OrderCancelledEvent(
            previous_state=order_pb2.Order.State.ValueType(previous))
        return _outgoing("order.cancelled", event, order)


# The routing service's ROUTING stream: a plan became the fleet's active plan.
ROUTING_STREAM = "ROUTING"
PLAN_EVENTS: dict[str, Any] = {
    "route.planned": routing_events.RoutePlannedEvent,
    "route.updated": routing_events.RouteUpdatedEvent,
}


@dataclass(frozen=True)
class ActivePlan:
    """Which of a client's orders the new active plan serves and which it leaves out, including
    those only the plan it replaced had (ids, not names; ad-hoc shipments are skipped)."""

    client_id: str
    planned: frozenset[str]
    unassigned: frozenset[str]


def decode_plan_event(msg: Msg) -> ActivePlan | None:
    kind = PLAN_EVENTS.get(msg.subject)
    if kind is None:
        return None
    event = kind.FromString(msg.data)
    plan = event.route_plan

    def order_ids(shipments: Any) -> frozenset[str]:
        return frozenset(s.removeprefix("orders/") for s in shipments if s.startswith("orders/"))

    left_out = [u.shipment for u in plan.unassigned]
    if msg.subject == "route.updated":  # and what the replaced plan had but this one has not
        left_out += event.decision.diff.removed
    return ActivePlan(
        client_id=event.client_id,
        planned=order_ids(stop.shipment for route in plan.routes for stop in route.stops),
        unassigned=order_ids(left_out),
    )
