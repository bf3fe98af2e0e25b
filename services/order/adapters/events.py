"""Domain changes as contract events (`cartage.order.v1` *Event messages) for the outbox."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from google.protobuf import field_mask_pb2

from cartage.order.v1 import events_pb2, order_pb2
from services.kit.uow import OutgoingEvent
from services.order.api.converters import order_to_proto, set_timestamp
from services.order.domain.model import Order, State


def _outgoing(subject: str, event: Any, when: datetime) -> OutgoingEvent:
    """Stamp the event with a fresh id (also its JetStream Nats-Msg-Id) and time."""
    event.event_id = os.urandom(16).hex()
    set_timestamp(event.event_time, when)
    return OutgoingEvent(
        subject=subject,
        event_type=event.DESCRIPTOR.full_name,
        payload=event.SerializeToString(),
        event_id=event.event_id,
    )


class OrderEvents:
    def created(self, order: Order) -> OutgoingEvent:
        event = events_pb2.OrderCreatedEvent(order=order_to_proto(order))
        return _outgoing("order.created", event, order.update_time)

    def updated(self, order: Order, paths: list[str]) -> OutgoingEvent:
        event = events_pb2.OrderUpdatedEvent(
            order=order_to_proto(order), update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return _outgoing("order.updated", event, order.update_time)

    def released(self, order: Order) -> OutgoingEvent:
        event = events_pb2.OrderReleasedEvent(order=order_to_proto(order))
        return _outgoing("order.released", event, order.update_time)

    def cancelled(self, order: Order, previous: State) -> OutgoingEvent:
        event = events_pb2.OrderCancelledEvent(
            order=order_to_proto(order), previous_state=order_pb2.Order.State.ValueType(previous)
        )
        return _outgoing("order.cancelled", event, order.update_time)
