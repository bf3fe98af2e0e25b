"""Contract messages to and from the domain, and the codecs of stored responses. Pure
functions, no I/O. The api and the adapters use them; the use cases never do (the composition
root hands them the codecs they store responses with)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from cartage.order.v1 import order_pb2, order_service_pb2
from services.kit.clock import set_timestamp, to_datetime
from services.kit.idempotency import Codec
from services.kit.wire import embedded
from services.order.domain.model import Order, State

T = TypeVar("T")

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


# The same order is converted for its event, its idempotency record and the response; keep
# the last few conversions. Keyed by (id, version), which changes with every change of an order.
# Callers copy the message (or only serialize it), never mutate it.
_RECENT: OrderedDict[tuple[str, int], order_pb2.Order] = OrderedDict()
_RECENT_MAX = 4096


def _remembered(cache: OrderedDict[tuple[str, int], T], order: Order,
                make: Callable[[Order], T]) -> T:
    """`make(order)`, computed once per version of the order while it is recent."""
    key = (order.id, order.version)
    value = cache.get(key)
    if value is None:
        value = cache[key] = make(order)
        if len(cache) > _RECENT_MAX:
            cache.popitem(last=False)
    return value


def order_to_proto(order: Order) -> order_pb2.Order:
    return _remembered(_RECENT, order, _to_proto)


def _to_proto(order: Order) -> order_pb2.Order:
    message = order_pb2.Order()
    message.CopyFrom(order.content)
    message.name = order.name
    message.state = order_pb2.Order.State.ValueType(order.state)
    set_timestamp(message.create_time, order.create_time)
    set_timestamp(message.update_time, order.update_time)
    message.etag = order.etag
    message.client_id = order.client_id
    message.cancel_reason = order.cancel_reason
    return message


_RECENT_BYTES: OrderedDict[tuple[str, int], bytes] = OrderedDict()


def order_bytes(order: Order) -> bytes:
    """`order_to_proto(order)` serialized, once per version of the order (see `kit.wire`)."""
    return _remembered(_RECENT_BYTES, order, lambda o: order_to_proto(o).SerializeToString())


def order_from_proto(message: order_pb2.Order) -> Order:
    """Rebuild the aggregate from a stored response (idempotent replays)."""
    return Order(
        id=message.name.removeprefix("orders/"),
        client_id=message.client_id,
        external_reference=message.external_reference,
        state=State(message.state),
        content=content_from_proto(message),
        create_time=to_datetime(message.create_time),
        update_time=to_datetime(message.update_time),
        version=int(message.etag.removeprefix("v") or 1),
        cancel_reason=message.cancel_reason,
    )


def _encode_order(order: Order) -> bytes:
    return order_bytes(order)


def _decode_order(data: bytes) -> Order:
    return order_from_proto(order_pb2.Order.FromString(data))


_RESULTS = order_service_pb2.BatchCreateOrdersResponse.DESCRIPTOR.fields_by_name["results"]
_RESULT_ORDER = order_service_pb2.BatchCreateOrderResult.DESCRIPTOR.fields_by_name["order"]


def _encode_orders(items: list[Order]) -> bytes:
    """A BatchCreateOrdersResponse of the created orders, spliced from their bytes."""
    return b"".join(embedded(_RESULTS, embedded(_RESULT_ORDER, order_bytes(o))) for o in items)


def _decode_orders(data: bytes) -> list[Order]:
    response = order_service_pb2.BatchCreateOrdersResponse.FromString(data)
    return [order_from_proto(result.order) for result in response.results]


ORDER_CODEC: Codec[Order] = Codec(_encode_order, _decode_order)
ORDERS_CODEC: Codec[list[Order]] = Codec(_encode_orders, _decode_orders)
