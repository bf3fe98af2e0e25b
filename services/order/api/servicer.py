"""The OrderService gRPC servicer: convert, call the use case, convert back. No rules here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc

from cartage.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from services.kit import constraints
from services.kit.auth import Caller, current_caller
from services.kit.errors import CartageError, InvalidArgument, to_rpc_status
from services.kit.fieldmask import (
    apply_update_mask,
    check_update_mask,
    effective_update_mask,
)
from services.kit.filtering import Condition, parse_filter
from services.kit.idempotency import IdempotencyKey, request_key
from services.kit.log import request_id_var
from services.kit.pagination import Keyset, newest_key, time_and_id
from services.kit.validation import Violations, parse_name
from services.order.api.validation import check_order
from services.order.conversion import content_from_proto, order_to_proto
from services.order.domain.model import State
from services.order.use_cases import BatchItem, ListQuery, OrderUseCases

MAX_BATCH = 1000
# What an update mask may name: the contract's writable fields (not output-only, immutable).
UPDATABLE = constraints.updatable(order_pb2.Order.DESCRIPTOR)
FILTERS = {
    "state": frozenset({"=", "!="}),
    "external_reference": frozenset({"="}),
    "create_time": frozenset({"<", "<=", ">", ">="}),
    "mode": frozenset({"=", "!="}),
}


def _idempotency(caller: Caller, method: str, request: Any) -> IdempotencyKey | None:
    """The AIP-155 request_id, or the Idempotency-Key header the gateway forwards."""
    return request_key(caller.client_id, caller.idempotency_key, method, request)


class OrderServicer(order_service_pb2_grpc.OrderServiceServicer):
    def __init__(self, orders: OrderUseCases) -> None:
        self._orders = orders

    async def CreateOrder(self, request: order_service_pb2.CreateOrderRequest,
                          context: grpc.aio.ServicerContext) -> order_pb2.Order:
        caller = current_caller()
        v = Violations()
        if request.HasField("order"):
            check_order(request.order, v)
        else:
            v.add("order", "is required", "REQUIRED")
        v.raise_if_any()
        key = _idempotency(caller, "CreateOrder", request)
        order = await self._orders.create(
            caller.client_id, content_from_proto(request.order), key, request_id_var.get()
        )
        return order_to_proto(order)

    async def BatchCreateOrders(self, request: order_service_pb2.BatchCreateOrdersRequest,
                                context: grpc.aio.ServicerContext
                                ) -> order_service_pb2.BatchCreateOrdersResponse:
        caller = current_caller()
        if not 1 <= len(request.requests) <= MAX_BATCH:
            raise InvalidArgument.single("requests", f"must hold 1 to {MAX_BATCH} items "
                                                     f"(got {len(request.requests)})")
        failures: dict[int, CartageError] = {}
        valid: list[BatchItem] = []
        seen: set[str] = set()
        for index, item in enumerate(request.requests):
            v = Violations()
            path = f"requests[{index}]"
            if item.request_id:
                v.add(f"{path}.request_id", "set request_id on the batch, not on its items")
            if item.HasField("order"):
                check_order(item.order, v, f"{path}.order")
                reference = item.order.external_reference
                if reference in seen:
                    v.add(f"{path}.order.external_reference",
                          "appears twice in this batch", "DUPLICATE_IN_BATCH")
                seen.add(reference)
            else:
                v.add(f"{path}.order", "is required", "REQUIRED")
            try:
                v.raise_if_any(f"item {index} is invalid")
                valid.append(BatchItem(index, content_from_proto(item.order)))
            except InvalidArgument as error:
                failures[index] = error
        created = {}
        if valid:
            key = _idempotency(caller, "BatchCreateOrders", request)
            created = await self._orders.create_batch(
                caller.client_id, valid, key, request_id_var.get()
            )
        outcome = {**failures, **created}
        response = order_service_pb2.BatchCreateOrdersResponse()
        for index in range(len(request.requests)):
            result = response.results.add()
            item_outcome = outcome[index]
            if isinstance(item_outcome, CartageError):
                result.error.CopyFrom(to_rpc_status(item_outcome).proto)
            else:
                result.order.CopyFrom(order_to_proto(item_outcome))
        return response

    async def GetOrder(self, request: order_service_pb2.GetOrderRequest,
                       context: grpc.aio.ServicerContext) -> order_pb2.Order:
        caller = current_caller()
        order_id = parse_name(request.name, "orders")
        return order_to_proto(await self._orders.get(caller.client_id, order_id))

    async def ListOrders(self, request: order_service_pb2.ListOrdersRequest,
                         context: grpc.aio.ServicerContext
                         ) -> order_service_pb2.ListOrdersResponse:
        caller = current_caller()
        order_by = " ".join(request.order_by.split()).lower()
        if order_by not in ("", "create_time", "create_time asc", "create_time desc"):
            raise InvalidArgument.single("order_by", "must be `create_time` or `create_time desc`")
        descending = order_by.endswith("desc")
        filters = tuple(_typed(c) for c in parse_filter(request.filter, FILTERS))
        page = Keyset.of(request, caller.client_id, request.filter, str(descending),
                         parse=time_and_id)
        rows = await self._orders.list(
            ListQuery(caller.client_id, filters, descending, page.after, page.fetch))
        return order_service_pb2.ListOrdersResponse(
            orders=[order_to_proto(o) for o in rows[:page.limit]],
            next_page_token=page.next_token(rows, newest_key))

    async def UpdateOrder(self, request: order_service_pb2.UpdateOrderRequest,
                          context: grpc.aio.ServicerContext) -> order_pb2.Order:
        caller = current_caller()
        order_id = parse_name(request.order.name, "orders", "order.name")
        mask = effective_update_mask(request.update_mask, request.order, updatable=UPDATABLE)
        check_update_mask(mask, order_pb2.Order.DESCRIPTOR, updatable=UPDATABLE)

        def apply(content: order_pb2.Order) -> list[str]:
            paths = apply_update_mask(content, request.order, mask, updatable=UPDATABLE)
            after = Violations()
            check_order(content, after)
            after.raise_if_any()
            return paths

        order = await self._orders.update(
            caller.client_id, order_id, request.order.etag, apply, request_id_var.get()
        )
        return order_to_proto(order)

    async def CancelOrder(self, request: order_service_pb2.CancelOrderRequest,
                          context: grpc.aio.ServicerContext) -> order_pb2.Order:
        caller = current_caller()
        v = Violations()
        order_id = v.resource_id(request.name, "orders")
        v.text(request.reason, "reason", required=True, max_len=500)
        v.raise_if_any()
        key = _idempotency(caller, "CancelOrder", request)
        order = await self._orders.cancel(
            caller.client_id, order_id, request.reason, request.etag, key, request_id_var.get()
        )
        return order_to_proto(order)

    async def ReleaseOrder(self, request: order_service_pb2.ReleaseOrderRequest,
                           context: grpc.aio.ServicerContext) -> order_pb2.Order:
        caller = current_caller()
        order_id = parse_name(request.name, "orders")
        key = _idempotency(caller, "ReleaseOrder", request)
        order = await self._orders.release(
            caller.client_id, order_id, request.etag, key, request_id_var.get()
        )
        return order_to_proto(order)


def _typed(condition: Condition) -> tuple[str, str, Any]:
    """Filter values as the column types want them."""
    field, op, raw = condition.field, condition.operator, condition.value
    if field == "state":
        name = raw.upper().removeprefix("STATE_")
        if name not in State.__members__:
            states = ", ".join(State.__members__)
            raise InvalidArgument.single("filter", f"unknown state {raw!r}; use one of {states}")
        return field, op, int(State[name])
    if field == "mode":
        number = order_pb2.TransportMode.DESCRIPTOR.values_by_name.get(
            "TRANSPORT_MODE_" + raw.upper().removeprefix("TRANSPORT_MODE_"))
        if number is None:
            raise InvalidArgument.single("filter", f"unknown mode {raw!r}; use OWN_FLEET, CARRIER")
        return field, op, number.number
    if field == "create_time":
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument.single(
                "filter", f"create_time needs an RFC 3339 time such as 2026-01-31T00:00:00Z, "
                          f"got {raw!r}") from None
        if moment.tzinfo is None:
            raise InvalidArgument.single("filter", "create_time needs a time zone (e.g. Z)")
        return field, op, moment
    return field, op, raw
