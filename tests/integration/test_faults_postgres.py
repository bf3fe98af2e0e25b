"""Postgres shut down immediately (`pg_ctl stop -m immediate`: backends killed, nothing flushed,
crash recovery on the next start) under load, on the durable stack, then started again.

What a caller must be able to rely on: every order acknowledged was committed and is readable
afterwards (an OK for a write that did not commit would show up as a missing order); a call that
failed and is retried with its request_id gets exactly one order (whether or not the first try
committed); calls fail meanwhile with UNAVAILABLE (an outage, safe to retry with the key), not
INTERNAL; every order has exactly one order.created event once the outbox drained; and the
service serves again within seconds of the database being back, without a restart of its own.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import sqlalchemy as sa

from cartage.order.v1 import order_service_pb2 as pb
from services.kit.db import create_engine
from tests.integration.test_durability import drained
from tests.support import (
    OrderClient,
    OrderLoad,
    events_of,
    eventually,
    health,
    new_client_id,
    sample_order,
)

RECOVERY_LIMIT = 10.0  # seconds from the database being back to the service serving again


async def test_postgres_immediate_shutdown_under_load_loses_no_acknowledged_order(
        durable_stack, durable_order_process, durable_database) -> None:
    postgres = durable_stack.postgres
    service = durable_order_process(DATABASE_URL=durable_database).start()
    pid = service.process.pid
    client_id = new_client_id()
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(service.address) as channel:
        client = OrderClient(channel, client_id)
        client.address = service.address
        load = OrderLoad(client, 16, prefix="PG", pause_after_error=0.2).start()
        try:
            await eventually(lambda: _acknowledged(load), seconds=60, until=lambda n: n >= 200)
            load.phase = "database down"
            await asyncio.to_thread(postgres.stop_immediately)
            await asyncio.sleep(1.0)
            load.phase = "database back"
            await asyncio.to_thread(postgres.start)
            back = loop.time()
            await eventually(lambda: _serves(client), seconds=30, interval=0.05)
            recovery = loop.time() - back
            load.phase = "after recovery"
            served = load.ok()
            await eventually(lambda: _acknowledged(load), seconds=30,
                             until=lambda n: n >= served + 100)
        finally:
            await load.stop()
        print(f"\npostgres immediate shutdown under load: {load.summary()}; the service "
              f"served again {recovery:.2f}s after the database was back")
        assert load.errors("before") == [], load.summary()
        assert load.errors("database down"), "the shutdown failed no call: not under load"
        assert load.errors("after recovery") == [], load.summary()
        # an outage, not a bug: UNAVAILABLE, which clients retry (with the same request_id)
        assert {c.error for c in load.errors()} == {grpc.StatusCode.UNAVAILABLE}
        assert recovery < RECOVERY_LIMIT
        assert service.process.poll() is None and service.process.pid == pid  # no restart

        # Every acknowledged order was committed: it is there, with what was sent.
        lost = [call for call in load.acknowledged
                if await _reference(client, call.name) != call.reference]
        assert lost == [], f"{len(lost)} of {len(load.acknowledged)} acknowledged orders lost"
        # A failed call retried with its request_id gets one order, committed first or not.
        retried = {}
        for call in load.errors():
            order = await client.create(sample_order(call.reference), request_id=call.request_id)
            assert order.external_reference == call.reference
            retried[call.request_id] = order.name
    names = {c.request_id: c.name for c in load.acknowledged} | retried
    assert len(set(names.values())) == len(names)
    assert await _rows(durable_database, client_id) == len(names)

    await drained(durable_database)
    events = await events_of(durable_stack.nats_url, client_id)
    per_order = Counter(event.order.name for _, event, _ in events)
    assert all(per_order[name] == 1 for name in names.values())
    assert max(per_order.values()) == 1


async def _acknowledged(load: OrderLoad) -> int:
    return load.ok()


async def _reference(client: OrderClient, name: str) -> str | None:
    try:
        return (await client.GetOrder(pb.GetOrderRequest(name=name))).external_reference
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None


async def _serves(client: OrderClient) -> bool:
    """A create, a read of it and a list (each pool of the service: the single-statement one
    and the engine's) succeed, and health says SERVING."""
    try:
        created = await client.create()
        read = await client.GetOrder(pb.GetOrderRequest(name=created.name))
        await client.ListOrders(pb.ListOrdersRequest(page_size=1))
        return read == created and await health(client.address) == "SERVING"
    except grpc.aio.AioRpcError:
        return False


async def _rows(database_url: str, client_id: str) -> int:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(
                "SELECT count(*) FROM orders.orders WHERE client_id = :c "
                "AND external_reference LIKE 'PG-%'"), {"c": client_id})).scalar_one()
    finally:
        await engine.dispose()
