"""Contract messages to and from the domain. Pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC

from cartage.order.v1 import order_pb2, order_service_pb2
from services.kit.db import Codec
from services.order.domain.model import Order, State

# Fields of `Order` the server owns; whatever a client sends there is ignored.
OUTPUT_ONLY = ("name", "state", "create_time", "update_time", "etag", "client_id",
               "cancel_reason")


def content_from_proto(message: order_pb2.Order) -> order_pb2.Order:
    """The client-owned part of an order (output-only fields cleared, defaults applied)."""
    content = order_pb2.Order()
    content.CopyFrom(message)
    for field in OUTPUT_ONLY:
        content.ClearField(field)
    if content.priority == order_pb2.PRIORITY_UNSPECIFIED:
        content.priority = order_pb2.PRIORITY_NORMAL
    if content.service_level == order_pb2.SERVICE_LEVEL_UNSPECIFIED:
        content.service_level = order_pb2.SERVICE_LEVEL_STANDARD
    if content.mode == order_pb2.TRANSPORT_MODE_UNSPECIFIED:
        content.mode = order_pb2.TRANSPORT_MODE_OWN_FLEET
    return content


def order_to_proto(order: Order) -> order_pb2.Order:
    message = order_pb2.Order()
    message.CopyFrom(order.content)
    message.name = order.name
    message.state = order_pb2.Order.State.ValueType(order.state)
    message.create_time.FromDatetime(order.create_time)
    message.update_time.FromDatetime(order.update_time)
    message.etag = order.etag
    message.client_id = order.client_id
    message.cancel_reason = order.cancel_reason
    return message


def order_from_proto(message: order_pb2.Order) -> Order:
    """Rebuild the aggregate from a stored response (idempotent replays)."""
    return Order(
        id=message.name.removeprefix("orders/"),
        client_id=message.client_id,
        external_reference=message.external_reference,
        state=State(message.state),
        content=content_from_proto(message),
        create_time=message.create_time.ToDatetime(tzinfo=UTC),
        update_time=message.update_time.ToDatetime(tzinfo=UTC),
        version=int(message.etag.removeprefix("v") or 1),
        cancel_reason=message.cancel_reason,
    )


def _encode_order(order: Order) -> bytes:
    return order_to_proto(order).SerializeToString()


def _decode_order(data: bytes) -> Order:
    return order_from_proto(order_pb2.Order.FromString(data))


def _encode_orders(items: list[Order]) -> bytes:
    response = order_service_pb2.BatchCreateOrdersResponse(
        results=[order_service_pb2.BatchCreateOrderResult(order=order_to_proto(o)) for o in items]
    )
    return response.SerializeToString()


def _decode_orders(data: bytes) -> list[Order]:
    response = order_service_pb2.BatchCreateOrdersResponse.FromString(data)
    return [order_from_proto(result.order) for result in response.results]


ORDER_CODEC: Codec[Order] = Codec(_encode_order, _decode_order)
ORDERS_CODEC: Codec[list[Order]] = Codec(_encode_orders, _decode_orders)
