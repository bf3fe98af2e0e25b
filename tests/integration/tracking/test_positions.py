"""Positions through the real service: batch and stream, refusals, duplicates, late fixes,
another client's vehicle, oversized batches, and a stream that sends garbage."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta

import grpc

from cartage.tracking.v1 import tracking_pb2, tracking_service_pb2
from tests.integration.tracking.conftest import (
    NOW,
    TrackingClient,
    known_vehicle,
    position,
    publish_plan,
)
from tests.support import raises_rpc, reason, rich_status, violations

R = tracking_pb2.PositionRefusal


async def planned_truck(tracking: TrackingClient, stack) -> tuple[str, str]:
    """An order of the caller on a fresh truck of an active plan; (order id, truck)."""
    order_id = await tracking.tracked_order()
    truck = f"truck-{uuid.uuid4().hex[:8]}"
    await publish_plan(stack.nats_url, tracking.client_id, {truck: [
        (order_id, "pickup", 52.52, 13.40, 900), (order_id, "delivery", 52.40, 13.05, 900)]})
    await known_vehicle(tracking, truck, 10.0, 10.0)
    return order_id, truck


async def test_a_batch_stores_refuses_with_reasons_and_drops_duplicates(tracking, stack) -> None:
    order_id, truck = await planned_truck(tracking, stack)
    t = NOW - timedelta(minutes=30)
    result = await tracking.batch(
        position(truck, t, 52.0, 13.0),
        position(truck, t + timedelta(minutes=1), 52.001, 13.0, speed_mps=12.0),
        position(truck, t + timedelta(minutes=1), 52.001, 13.0),  # duplicate
        position(truck, t + timedelta(minutes=2), 91.0, 13.0),  # out of range
        position(truck, t + timedelta(minutes=3), math.nan, 13.0),
        # future: measured from the clock now (NOW is fixed when the tests are collected)
        position(truck, datetime.now(UTC) + timedelta(minutes=10), 52.002, 13.0),
        position(truck, t + timedelta(minutes=4), 53.0, 13.0),  # 110 km in 3 min
        tracking_pb2.Position(vehicle=f"vehicles/{truck}"),  # no time, no location
    )
    assert (result.accepted, result.duplicates, result.late) == (2, 1, 0)
    assert [(r.index, r.reason) for r in result.refusals] == [
        (3, R.REASON_OUT_OF_RANGE), (4, R.REASON_NOT_A_NUMBER), (5, R.REASON_IN_THE_FUTURE),
        (6, R.REASON_IMPLAUSIBLE_SPEED), (7, R.REASON_MISSING_FIELD)]
    again = await tracking.batch(position(truck, t, 52.0, 13.0))
    assert (again.accepted, again.duplicates) == (0, 1)
    # a late fix is stored but the last known position stays the newest
    late = await tracking.batch(position(truck, t - timedelta(minutes=5), 51.99, 13.0))
    assert (late.accepted, late.late) == (1, 1)
    record = await tracking.tracking(order_id)
    assert record.vehicle == f"vehicles/{truck}"
    assert record.last_position.location.latitude == 52.001
    assert record.last_position.time.ToDatetime().replace(tzinfo=NOW.tzinfo) == \
        t + timedelta(minutes=1)


async def test_another_clients_vehicle_is_not_found(tracking, stack, tracking_channel,
                                                     channel) -> None:
    _, truck = await planned_truck(tracking, stack)
    from tests.support import OrderClient, new_client_id

    other = TrackingClient(tracking_channel, OrderClient(channel, new_client_id()))
    with raises_rpc(grpc.StatusCode.NOT_FOUND) as caught:
        await other.batch(position(truck, NOW, 52.0, 13.0))
    assert reason(caught[0]) == "VEHICLE_NOT_FOUND"


async def test_oversized_batches_are_refused_before_any_work(tracking, stack) -> None:
    _, truck = await planned_truck(tracking, stack)
    many = [position(truck, NOW - timedelta(seconds=i), 52.0, 13.0) for i in range(100_000)]
    for count in (1001, 100_000):
        with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
            await tracking.batch(*many[:count])
        assert "positions" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):
        await tracking.batch()
    # nothing of those was stored
    result = await tracking.batch(*many[:1000])
    assert result.accepted == 1000


async def test_a_stream_stores_every_message_and_sums_them_up(tracking, stack) -> None:
    _, truck = await planned_truck(tracking, stack)
    t = NOW - timedelta(hours=2)

    async def messages():
        for m in range(5):
            yield tracking_service_pb2.RecordPositionsRequest(positions=[
                position(truck, t + timedelta(seconds=10 * (m * 20 + i)), 52.0 + 0.0001 * i,
                         13.0) for i in range(20)])

    result = await tracking.stub.RecordPositions(messages(), metadata=tracking.metadata,
                                                 timeout=30)
    assert (result.accepted, result.duplicates, len(result.refusals)) == (100, 0, 0)


async def test_a_stream_sending_garbage_is_closed_and_keeps_what_came_before(
        tracking, stack) -> None:
    _, truck = await planned_truck(tracking, stack)
    t = NOW - timedelta(hours=3)
    good = [tracking_service_pb2.RecordPositionsRequest(positions=[
        position(truck, t + timedelta(seconds=i), 52.0, 13.0)]).SerializeToString()
        for i in range(3)]
    raw = tracking.channel.stream_unary(
        "/cartage.tracking.v1.TrackingService/RecordPositions",
        request_serializer=lambda b: b,
        response_deserializer=tracking_service_pb2.RecordPositionsResponse.FromString)

    async def messages():
        for message in good:
            yield message
        yield b"\xff\xff\xff\xff garbage"
        yield good[0]

    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await raw(messages(), metadata=tracking.metadata, timeout=30)
    _, details = rich_status(caught[0])
    info = next(d for d in details if hasattr(d, "metadata"))
    assert info.metadata["accepted"] == "3"
    again = await tracking.batch(*[position(truck, t + timedelta(seconds=i), 52.0, 13.0)
                                   for i in range(3)])
    assert (again.accepted, again.duplicates) == (0, 3)


async def test_concurrent_streams_share_transactions_but_keep_their_own_outcomes(
        tracking, stack) -> None:
    order_id = await tracking.tracked_order()
    trucks = [f"truck-{uuid.uuid4().hex[:8]}" for _ in range(10)]
    await publish_plan(stack.nats_url, tracking.client_id, {
        truck: [(order_id, "pickup", 52.52, 13.40, 900)] for truck in trucks})
    for truck in trucks:
        await known_vehicle(tracking, truck, 10.0, 10.0)
    t = NOW - timedelta(hours=2)  # the known_vehicle fix (a day ago, far away) is not 250 km/h off

    def message(truck: str, m: int) -> tracking_service_pb2.RecordPositionsRequest:
        return tracking_service_pb2.RecordPositionsRequest(positions=[
            position(truck, t + timedelta(seconds=10 * (m * 10 + i)), 52.0 + 0.0001 * i, 13.0)
            for i in range(10)])

    async def stream(k: int) -> tracking_service_pb2.RecordPositionsResponse:
        async def messages():
            for m in range(5):
                yield message(trucks[k], m)
                if k % 2 == 0:  # the even streams send every message twice
                    yield message(trucks[k], m)
            if k == 3:
                yield tracking_service_pb2.RecordPositionsRequest(positions=[
                    position(trucks[k], t + timedelta(days=2), 52.0, 13.0)])  # future

        return await tracking.stub.RecordPositions(messages(), metadata=tracking.metadata,
                                                   timeout=30)

    results = await asyncio.gather(*[stream(k) for k in range(10)])
    for k, result in enumerate(results):
        assert result.accepted == 50, (k, result)
        assert result.duplicates == (50 if k % 2 == 0 else 0), (k, result)
        assert [r.reason for r in result.refusals] == (
            [R.REASON_IN_THE_FUTURE] if k == 3 else []), (k, result)
