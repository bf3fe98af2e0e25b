"""Nothing acknowledged is lost, and no event is published twice, when processes die.

These run on the durable stack (`durable_stack`: fsync and synchronous commit on)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import sqlalchemy as sa

from cartage.order.v1 import order_service_pb2 as pb
from services.kit.db import create_engine
from services.stack.components import Nats, free_port
from tests.support import (
    OrderClient,
    OrderLoad,
    RunningService,
    events_of,
    eventually,
    new_client_id,
    sample_order,
)


async def unpublished(database_url: str) -> int:
    """Outbox rows not yet stamped as published."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(
                "SELECT count(*) FROM orders.outbox WHERE published_at IS NULL"))).scalar_one()
    finally:
        await engine.dispose()


async def drained(database_url: str, seconds: float = 30.0) -> None:
    """Wait until the outbox has no unpublished row (AssertionError with the count if not)."""
    await eventually(lambda: unpublished(database_url), seconds=seconds, until=lambda n: n == 0)


async def test_relay_killed_between_publish_and_stamp_publishes_no_duplicate(
        durable_stack, durable_order_process, durable_database) -> None:
    crashing = durable_order_process(DATABASE_URL=durable_database,
                                     CARTAGE_FAULT_RELAY_CRASH_AFTER_PUBLISH="true").start()
    client_id = new_client_id()
    batch = pb.BatchCreateOrdersRequest(
        requests=[pb.CreateOrderRequest(order=sample_order()) for _ in range(3)],
        request_id="crash-batch")
    async with grpc.aio.insecure_channel(crashing.address) as channel:
        try:
            await OrderClient(channel, client_id).BatchCreateOrders(batch)
        except grpc.aio.AioRpcError:
            pass  # the process may die before the response leaves; the client retries below
    # The relay published, JetStream acked, and the process exited before stamping the rows.
    assert crashing.wait(30) == 17
    assert await unpublished(durable_database) == 3
    assert len(await events_of(durable_stack.nats_url, client_id)) == 3

    healthy = durable_order_process(DATABASE_URL=durable_database).start()
    async with grpc.aio.insecure_channel(healthy.address) as channel:
        replay = await OrderClient(channel, client_id).BatchCreateOrders(batch)
    await drained(durable_database)
    events = await events_of(durable_stack.nats_url, client_id)
    names = Counter(event.order.name for _, event, _ in events)
    assert names == Counter({result.order.name: 1 for result in replay.results})


async def test_orders_are_accepted_while_nats_is_down_and_published_when_it_returns(
        durable_stack, tmp_path, durable_database) -> None:
    # A NATS and a database of its own, so no other relay can publish these rows elsewhere.
    own_nats = Nats(tmp_path / "js", free_port())
    own_nats.start()
    from services.order.app import DEFINITION
    from tests.conftest import order_settings

    settings = order_settings(durable_stack, nats_url=own_nats.url, database_url=durable_database)
    running = await RunningService(DEFINITION, settings).start()
    try:
        async with grpc.aio.insecure_channel(running.address) as ch:
            client = OrderClient(ch, new_client_id())
            await client.create()
            await eventually(lambda: _count(own_nats.url, client.client_id, 1))
            own_nats.stop()
            during = [await client.create() for _ in range(5)]
            assert all(order.name for order in during)
            await asyncio.sleep(1.0)
            own_nats.start()
            events = await eventually(lambda: _count(own_nats.url, client.client_id, 6),
                                      seconds=30)
            names = Counter(event.order.name for _, event, _ in events)
            assert all(names[order.name] == 1 for order in during) and len(names) == 6
    finally:
        await running.stop()
        own_nats.stop()


async def _count(nats_url: str, client_id: str, n: int):
    try:
        events = await events_of(nats_url, client_id)
    except Exception:
        return None
    return events if len(events) >= n else None


async def test_kill_9_under_load_loses_no_acknowledged_order(
        durable_stack, durable_order_process, durable_database) -> None:
    """64 callers create orders; the service is killed with SIGKILL mid-stream. No call fails
    before the kill; every order acknowledged is readable after restart and has exactly one
    event."""
    stack, database = durable_stack, durable_database
    first = durable_order_process(DATABASE_URL=database).start()
    client_id = new_client_id()
    async with grpc.aio.insecure_channel(first.address) as channel:
        load = OrderLoad(OrderClient(channel, client_id), 64, prefix="K9").start()
        try:
            await eventually(lambda: _acknowledged(load), seconds=60,
                             until=lambda n: n >= 300)
            load.phase = "after kill"
            first.kill()
            await asyncio.sleep(0.2)
        finally:
            await load.stop()
    print(f"\nkill -9 of the order service under load: {load.summary()}")
    assert load.errors("before") == [], load.summary()
    acknowledged = [c.name for c in load.acknowledged]
    assert len(acknowledged) >= 300

    second = durable_order_process(DATABASE_URL=database).start()
    async with grpc.aio.insecure_channel(second.address) as channel:
        client = OrderClient(channel, client_id)
        for name in acknowledged:
            assert (await client.GetOrder(pb.GetOrderRequest(name=name))).name == name
    await drained(database)
    events = await events_of(stack.nats_url, client_id)
    per_order = Counter(event.order.name for _, event, _ in events)
    assert all(per_order[name] == 1 for name in acknowledged)
    assert max(per_order.values()) == 1


async def _acknowledged(load: OrderLoad) -> int:
    return load.ok()
