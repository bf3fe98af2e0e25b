"""Domain changes as contract events (`cartage.order.v1` *Event messages) for the outbox, and
the routing service's plan events this service follows (decoded into the domain's ActivePlan)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from cartage.order.v1 import events_pb2, order_pb2
from cartage.routing.v1 import events_pb2 as routing_events
from cartage.tracking.v1 import events_pb2 as tracking_events
from services.kit.clock import set_timestamp
from services.kit.events import catalog
from services.kit.uow import OutgoingEvent
from services.kit.wire import embedded
from services.order.conversion import order_bytes
from services.order.domain.model import ActivePlan, Order, ShipmentMilestone, State

# routing's events that say a plan became the fleet's active plan
PLAN_SUBJECTS = ("route.planned", "route.updated")
# the tracking service's event that moves an order's goods
MILESTONE_RECORDED = "milestone.recorded"


def _outgoing(event: Any, order: Order) -> OutgoingEvent:
    """The event with the order's serialized bytes spliced in as its `order` field
    (`kit.wire`), stamped with the order's update time."""
    return catalog().outgoing(
        event, order.update_time,
        extra=embedded(event.DESCRIPTOR.fields_by_name["order"], order_bytes(order)))


class OrderEvents:
    def created(self, order: Order) -> OutgoingEvent:
        return _outgoing(events_pb2.OrderCreatedEvent(), order)

    def updated(self, order: Order, paths: list[str]) -> OutgoingEvent:
        event = events_pb2.OrderUpdatedEvent(update_mask=field_mask_pb2.FieldMask(paths=paths))
        return _outgoing(event, order)

    def released(self, order: Order) -> OutgoingEvent:
        return _outgoing(events_pb2.OrderReleasedEvent(), order)

    def cancelled(self, order: Order, previous: State) -> OutgoingEvent:
        event = events_pb2.OrderCancelledEvent(
            previous_state=order_pb2.Order.State.ValueType(previous))
        return _outgoing(event, order)

    def in_transit(self, order: Order, milestone: ShipmentMilestone) -> OutgoingEvent:
        event = events_pb2.OrderInTransitEvent(milestone=milestone.milestone)
        set_timestamp(event.milestone_time, milestone.event_time)
        return _outgoing(event, order)

    def completed(self, order: Order, milestone: ShipmentMilestone) -> OutgoingEvent:
        event = events_pb2.OrderCompletedEvent(milestone=milestone.milestone)
        set_timestamp(event.milestone_time, milestone.event_time)
        return _outgoing(event, order)


def shipment_milestone(event: Message | None) -> ShipmentMilestone | None:
    """The milestone of a milestone.recorded event; None for any other event."""
    if not isinstance(event, tracking_events.MilestoneRecordedEvent):
        return None
    milestone = event.milestone
    return ShipmentMilestone(
        client_id=event.client_id, order_id=event.order.removeprefix("orders/"),
        milestone=milestone.name, stop_id=milestone.stop_id, type=int(milestone.type),
        event_time=milestone.event_time.ToDatetime(tzinfo=UTC))


def active_plan(event: Message | None) -> ActivePlan | None:
    """The orders a route.planned / route.updated event plans and leaves out; None for any
    other event."""
    if not isinstance(event, routing_events.RoutePlannedEvent | routing_events.RouteUpdatedEvent):
        return None
    plan = event.route_plan

    def order_ids(shipments: Any) -> frozenset[str]:
        return frozenset(s.removeprefix("orders/") for s in shipments if s.startswith("orders/"))

    left_out = [u.shipment for u in plan.unassigned]
    if isinstance(event, routing_events.RouteUpdatedEvent):
        # and what the replaced plan had but this one has not
        left_out += event.decision.diff.removed
    return ActivePlan(
        client_id=event.client_id,
        planned=order_ids(stop.shipment for route in plan.routes for stop in route.stops),
        unassigned=order_ids(left_out),
    )
