"""The order service through a real gRPC server, Postgres and JetStream."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2

from cartage.order.v1 import order_pb2
from cartage.order.v1 import order_service_pb2 as pb
from services.kit.db import create_engine
from tests.support import (
    OrderClient,
    events_of,
    eventually,
    new_client_id,
    raises_rpc,
    reason,
    sample_order,
    ts,
    violations,
)


@pytest.fixture
def client(channel: grpc.aio.Channel) -> OrderClient:
    return OrderClient(channel, new_client_id())


async def count_rows(stack, client_id: str) -> int:
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(
                sa.text("SELECT count(*) FROM orders.orders WHERE client_id = :c"),
                {"c": client_id})).scalar_one()
    finally:
        await engine.dispose()


async def test_create_stores_one_row_and_publishes_one_event(client, stack) -> None:
    created = await client.create(request_id="req-1")
    assert created.state == order_pb2.Order.STATE_CREATED
    assert created.client_id == client.client_id and created.etag == "v1"
    assert created.priority == order_pb2.PRIORITY_NORMAL
    assert await client.GetOrder(pb.GetOrderRequest(name=created.name)) == created
    assert await count_rows(stack, client.client_id) == 1
    events = await eventually(lambda: events_of(stack.nats_url, client.client_id))
    assert [(s, e.order.name) for s, e, _ in events] == [("order.created", created.name)]
    _, event, msg_id = events[0]
    assert event.event_id == msg_id and event.HasField("event_time")


async def test_repeated_request_id_returns_the_same_order_once(client, stack) -> None:
    order = sample_order()
    first = await client.create(order, request_id="same-key")
    second = await client.create(order, request_id="same-key")
    assert second == first
    assert await count_rows(stack, client.client_id) == 1
    await asyncio.sleep(0.5)
    events = await eventually(lambda: events_of(stack.nats_url, client.client_id))
    assert len(events) == 1


async def test_idempotency_key_header_is_honoured_like_request_id(client, stack) -> None:
    order = sample_order()
    request = pb.CreateOrderRequest(order=order)
    first = await client.CreateOrder(request, **{"idempotency-key": "hdr-1"})
    second = await client.CreateOrder(request, **{"idempotency-key": "hdr-1"})
    assert first == second
    assert await count_rows(stack, client.client_id) == 1


async def test_same_request_id_with_a_different_payload_is_refused(client, stack) -> None:
    await client.create(sample_order(), request_id="k")
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.create(sample_order(), request_id="k")
    assert reason(caught[0]) == "IDEMPOTENCY_KEY_REUSED"
    assert "request_id" in violations(caught[0])
    assert await count_rows(stack, client.client_id) == 1


async def test_concurrent_repeats_create_one_order(client, stack) -> None:
    """Repeats that overlap a request still in flight are ABORTED with REQUEST_IN_FLIGHT, and
    a burst of repeats creates one order.

    A create holds its key's lock only while its one statement runs (well under a
    millisecond), so a burst of repeats rarely overlaps by itself: the overlap is forced by
    taking the key's lock here, as an in-flight create's transaction holds it."""
    import asyncpg

    from services.kit.idempotency import IdempotencyKey

    order = sample_order()
    lock_id = IdempotencyKey.of(client.client_id, "CreateOrder", "burst", b"").lock_id
    holder = await asyncpg.connect(stack.database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                                 lock_id)
            overlapping = await asyncio.gather(
                *(client.create(order, request_id="burst") for _ in range(20)),
                return_exceptions=True)
            assert all(isinstance(r, grpc.aio.AioRpcError) for r in overlapping), overlapping
            assert {(r.code(), reason(r)) for r in overlapping} == {
                (grpc.StatusCode.ABORTED, "REQUEST_IN_FLIGHT")}
            assert await count_rows(stack, client.client_id) == 0
    finally:
        await holder.close()

    results = await asyncio.gather(
        *(client.create(order, request_id="burst") for _ in range(20)), return_exceptions=True
    )
    names = {r.name for r in results if isinstance(r, order_pb2.Order)}
    aborted = [r for r in results if not isinstance(r, order_pb2.Order)]
    assert len(names) == 1
    assert all(isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.ABORTED
               and reason(e) == "REQUEST_IN_FLIGHT" for e in aborted), aborted
    assert (await client.create(order, request_id="burst")).name in names
    assert await count_rows(stack, client.client_id) == 1


async def test_duplicate_external_reference_is_already_exists(client) -> None:
    await client.create(sample_order("PO-1"))
    with raises_rpc(grpc.StatusCode.ALREADY_EXISTS) as caught:
        await client.create(sample_order("PO-1"))
    assert reason(caught[0]) == "DUPLICATE_EXTERNAL_REFERENCE"


def _bad_orders() -> dict[str, tuple[order_pb2.Order, str]]:
    no_stops = sample_order()
    no_stops.ClearField("pickup")
    no_stops.ClearField("delivery")
    negative = sample_order()
    negative.line_items[0].weight_kg = -5
    absurd = sample_order()
    absurd.line_items[0].weight_kg = 1e12
    backwards = sample_order()
    backwards.pickup.time_windows[0].end_time.CopyFrom(ts(1_000))
    unknown_enum = sample_order()
    unknown_enum.priority = 99  # type: ignore[assignment]
    huge_notes = sample_order(notes="x" * (10 * 1024 * 1024))
    bad_latitude = sample_order()
    bad_latitude.delivery.location.latitude = 123.0
    nan_volume = sample_order()
    nan_volume.line_items[0].volume_m3 = float("nan")
    return {
        "missing stops": (no_stops, "order.pickup"),
        "negative weight": (negative, "order.line_items[0].weight_kg"),
        "absurd weight": (absurd, "order.line_items[0].weight_kg"),
        "window ends before start": (backwards, "order.pickup.time_windows[0].end_time"),
        "unknown enum": (unknown_enum, "order.priority"),
        "10 MB notes": (huge_notes, "order.notes"),
        "latitude out of range": (bad_latitude, "order.delivery.location.latitude"),
        "NaN volume": (nan_volume, "order.line_items[0].volume_m3"),
    }


@pytest.mark.parametrize("case", list(_bad_orders()))
async def test_bad_input_is_invalid_argument_with_field_violations(client, case, stack) -> None:
    order, field = _bad_orders()[case]
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.create(order)
    assert field in violations(caught[0]), violations(caught[0])
    assert await count_rows(stack, client.client_id) == 0


async def test_every_violation_is_reported_at_once(client) -> None:
    order = sample_order(external_reference="")
    order.line_items[0].quantity = 0
    order.ClearField("consignee")
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.create(order)
    assert {"order.external_reference", "order.line_items[0].quantity",
            "order.consignee"} <= set(violations(caught[0]))


async def test_malformed_bytes_are_invalid_argument(channel, client) -> None:
    call = channel.unary_unary(
        "/cartage.order.v1.OrderService/CreateOrder",
        request_serializer=lambda b: b, response_deserializer=lambda b: b,
    )
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):
        await call(b"\xff\xff\xff\xff", metadata=(("x-cartage-client-id", "c"),))


async def test_missing_identity_is_unauthenticated(channel) -> None:
    from cartage.order.v1 import order_service_pb2_grpc

    stub = order_service_pb2_grpc.OrderServiceStub(channel)
    with raises_rpc(grpc.StatusCode.UNAUTHENTICATED):
        await stub.GetOrder(pb.GetOrderRequest(name="orders/" + "a" * 32))


async def test_another_clients_order_is_not_found(channel, client) -> None:
    created = await client.create()
    intruder = OrderClient(channel, new_client_id())
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await intruder.GetOrder(pb.GetOrderRequest(name=created.name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await intruder.CancelOrder(pb.CancelOrderRequest(name=created.name, reason="mine now"))
    listed = await intruder.ListOrders(pb.ListOrdersRequest())
    assert list(listed.orders) == []


async def test_bad_names_and_tokens_are_invalid_argument(client) -> None:
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.GetOrder(pb.GetOrderRequest(name="orders/../../etc"))
    assert "name" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.ListOrders(pb.ListOrdersRequest(page_token="not-a-token"))
    assert "page_token" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.ListOrders(pb.ListOrdersRequest(filter="colour = red"))
    assert "filter" in violations(caught[0])


async def test_list_pages_through_every_order_once_in_creation_order(client) -> None:
    created = [await client.create() for _ in range(7)]
    seen, token, pages = [], "", 0
    while True:
        page = await client.ListOrders(pb.ListOrdersRequest(page_size=3, page_token=token))
        seen += [o.name for o in page.orders]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [o.name for o in created] and pages == 3
    newest = await client.ListOrders(pb.ListOrdersRequest(page_size=2, order_by="create_time desc"))
    assert [o.name for o in newest.orders] == [o.name for o in reversed(created)][:2]
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):
        first = await client.ListOrders(pb.ListOrdersRequest(page_size=3))
        await client.ListOrders(pb.ListOrdersRequest(page_size=3, page_token=first.next_page_token,
                                                     filter="state = CANCELLED"))


async def test_list_filters_by_state_reference_and_time(client) -> None:
    a = await client.create(sample_order("REF-A"))
    b = await client.create()
    await client.ReleaseOrder(pb.ReleaseOrderRequest(name=b.name))
    released = await client.ListOrders(pb.ListOrdersRequest(filter="state = RELEASED"))
    assert [o.name for o in released.orders] == [b.name]
    by_ref = await client.ListOrders(pb.ListOrdersRequest(filter='external_reference = "REF-A"'))
    assert [o.name for o in by_ref.orders] == [a.name]
    stamp = b.create_time.ToJsonString()
    later = await client.ListOrders(pb.ListOrdersRequest(filter=f'create_time >= "{stamp}"'))
    assert [o.name for o in later.orders] == [b.name]


async def test_lifecycle_release_cancel_and_forbidden_moves(client, stack) -> None:
    order = await client.create()
    released = await client.ReleaseOrder(pb.ReleaseOrderRequest(name=order.name, etag="v1"))
    assert released.state == order_pb2.Order.STATE_RELEASED and released.etag == "v2"
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION) as caught:
        await client.ReleaseOrder(pb.ReleaseOrderRequest(name=order.name))
    assert reason(caught[0]) == "INVALID_STATE_TRANSITION"
    with raises_rpc(grpc.StatusCode.ABORTED):
        await client.CancelOrder(pb.CancelOrderRequest(name=order.name, reason="x", etag="v1"))
    cancelled = await client.CancelOrder(pb.CancelOrderRequest(name=order.name, reason="dup"))
    assert cancelled.state == order_pb2.Order.STATE_CANCELLED
    assert cancelled.cancel_reason == "dup"
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION):
        await client.CancelOrder(pb.CancelOrderRequest(name=order.name, reason="again"))
    events = await eventually(
        lambda: _when_count(events_of(stack.nats_url, client.client_id), 3))
    assert [s for s, _, _ in events] == ["order.created", "order.released", "order.cancelled"]
    assert events[2][1].previous_state == order_pb2.Order.STATE_RELEASED


async def _when_count(coro, n: int):
    events = await coro
    return events if len(events) >= n else None


async def test_update_changes_only_masked_fields(client, stack) -> None:
    order = await client.create()
    patch = order_pb2.Order(name=order.name, etag=order.etag, notes="new notes",
                            priority=order_pb2.PRIORITY_URGENT, external_reference="ignored")
    updated = await client.UpdateOrder(pb.UpdateOrderRequest(
        order=patch, update_mask=field_mask_pb2.FieldMask(paths=["notes", "priority"])))
    assert updated.notes == "new notes" and updated.priority == order_pb2.PRIORITY_URGENT
    assert updated.external_reference == order.external_reference
    assert updated.pickup == order.pickup and updated.etag == "v2"
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.UpdateOrder(pb.UpdateOrderRequest(
            order=patch, update_mask=field_mask_pb2.FieldMask(paths=["external_reference"])))
    assert "update_mask" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.ABORTED):
        await client.UpdateOrder(pb.UpdateOrderRequest(
            order=patch, update_mask=field_mask_pb2.FieldMask(paths=["notes"])))
    bad = order_pb2.Order(name=order.name, notes="x" * 10_001)
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.UpdateOrder(pb.UpdateOrderRequest(
            order=bad, update_mask=field_mask_pb2.FieldMask(paths=["notes"])))
    assert "order.notes" in violations(caught[0])
    events = await eventually(
        lambda: _when_count(events_of(stack.nats_url, client.client_id), 2))
    assert list(events[1][1].update_mask.paths) == ["notes", "priority"]


async def test_batch_reports_each_item_and_one_bad_item_does_not_sink_the_rest(client, stack
                                                                               ) -> None:
    existing = await client.create(sample_order("TAKEN"))
    bad = sample_order()
    bad.line_items[0].weight_kg = -1
    items = [sample_order() for _ in range(5)]
    request = pb.BatchCreateOrdersRequest(
        requests=[pb.CreateOrderRequest(order=o) for o in
                  [items[0], bad, items[1], sample_order("TAKEN"), *items[2:]]],
        request_id="batch-1",
    )
    response = await client.BatchCreateOrders(request)
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["order", "error", "order", "error", "order", "order", "order"]
    assert response.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert response.results[3].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert await count_rows(stack, client.client_id) == 6
    replay = await client.BatchCreateOrders(request)
    assert [r.order.name for r in replay.results] == [r.order.name for r in response.results]
    assert await count_rows(stack, client.client_id) == 6
    assert existing.name not in {r.order.name for r in response.results}


async def test_batch_limits(client) -> None:
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):
        await client.BatchCreateOrders(pb.BatchCreateOrdersRequest())
    too_many = pb.BatchCreateOrdersRequest(
        requests=[pb.CreateOrderRequest(order=sample_order()) for _ in range(1001)])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await client.BatchCreateOrders(too_many)
    assert "requests" in violations(caught[0])


async def test_batch_of_a_thousand_orders(client, stack) -> None:
    request = pb.BatchCreateOrdersRequest(
        requests=[pb.CreateOrderRequest(order=sample_order()) for _ in range(1000)])
    response = await client.BatchCreateOrders(request)
    assert all(r.WhichOneof("result") == "order" for r in response.results)
    assert await count_rows(stack, client.client_id) == 1000
    events = await eventually(
        lambda: _when_count(events_of(stack.nats_url, client.client_id), 1000), seconds=30)
    assert len(events) == 1000
