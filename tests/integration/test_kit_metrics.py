"""Prometheus metrics from the kit (services.kit.metrics): scraped over HTTP from a real order
service process after real calls, with one worker and with two (multiprocess mode: the parent
serves the sum over its workers on the one port); and the consumer runner's redelivery and
dead-letter counters against real JetStream."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import nats
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from cartage.order.v1 import order_service_pb2
from services.kit.db import KitTables, create_engine
from services.kit.messaging import ConsumerSpec, EventConsumer, ensure_stream
from services.kit.uow import Transaction, UnitOfWork
from services.stack.components import free_port
from tests.support import OrderClient, eventually, new_client_id, sample_order

pytestmark = pytest.mark.integration
CREATE = {"grpc_service": "cartage.order.v1.OrderService", "grpc_method": "CreateOrder"}


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_running_service_serves_its_rpc_outbox_and_idempotency_metrics(
        order_process, fresh_database, workers: int) -> None:
    port = free_port()
    service = order_process(DATABASE_URL=fresh_database, ORDER_METRICS_PORT=str(port),
                            ORDER_WORKERS=str(workers)).start()
    async with grpc.aio.insecure_channel(service.address) as channel:
        client = OrderClient(channel, new_client_id())
        # Several connections, so that both workers (SO_REUSEPORT) are likely to get calls.
        created = 5
        for i in range(created):
            await client.create(sample_order(f"ref-{i}"), request_id=f"req-{i}")
        await client.create(sample_order("ref-0"), request_id="req-0")  # a replay
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.create(order_service_pb2.CreateOrderRequest().order)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client.GetOrder(order_service_pb2.GetOrderRequest(
                name=f"orders/{uuid.uuid4()}"))
        get_code = missing.value.code().name

    async def settled() -> dict:
        samples = await scrape(port)
        published = value(samples, "cartage_outbox_published_total", relay="order") or 0
        lag = value(samples, "cartage_outbox_relay_lag_seconds", relay="order")
        return samples if published >= created and lag is not None else {}

    # The relay reports its backlog and lag every report interval (10 s).
    samples = await eventually(settled, seconds=40, interval=0.5)
    assert value(samples, "cartage_rpc_handled_total", **CREATE, grpc_code="OK") == created + 1
    assert value(samples, "cartage_rpc_handled_total", **CREATE,
                 grpc_code="INVALID_ARGUMENT") == 1
    assert value(samples, "cartage_rpc_handled_total", grpc_service=CREATE["grpc_service"],
                 grpc_method="GetOrder", grpc_code=get_code) == 1
    assert value(samples, "cartage_rpc_duration_seconds_count", **CREATE) == created + 2
    assert value(samples, "cartage_rpc_duration_seconds_bucket", **CREATE,
                 le="+Inf") == created + 2
    assert value(samples, "cartage_idempotency_replays_total", method="CreateOrder") == 1
    assert value(samples, "cartage_outbox_published_total", relay="order") == created
    assert value(samples, "cartage_outbox_backlog", relay="order") == 0
    assert value(samples, "cartage_outbox_relay_lag_seconds", relay="order") == 0


def test_metrics_are_off_unless_a_port_is_set() -> None:
    from services.order.settings import Settings

    settings = Settings.from_env({"DATABASE_URL": "postgresql://x/y", "NATS_URL": "nats://x"})
    assert settings.metrics_port == 0
    settings = Settings.from_env({"DATABASE_URL": "postgresql://x/y", "NATS_URL": "nats://x",
                                  "ORDER_METRICS_PORT": "9464"})
    assert settings.metrics_port == 9464


async def test_consumer_redeliveries_and_dead_letters_are_counted(stack, fresh_database) -> None:
    from services.order.adapters import tables as order_tables
    from services.order.app import DEFINITION
    from services.order.settings import Settings

    await DEFINITION.migrate(Settings(database_url=fresh_database, nats_url=stack.nats_url))
    engine = create_engine(fresh_database, pool_size=2)
    uow = UnitOfWork(engine, KitTables.for_schema(sa.MetaData(schema=order_tables.SCHEMA)))
    nc = await nats.connect(stack.nats_url)
    stream = f"M{uuid.uuid4().hex[:8].upper()}"
    durable = f"metrics-{uuid.uuid4().hex[:6]}"
    try:
        js = nc.jetstream()
        await ensure_stream(js, stream, [f"{stream.lower()}.>"])
        subject = f"{stream.lower()}.thing"
        await js.publish(subject, b"poison", headers={"Nats-Msg-Id": "bad-1"})
        await js.publish(subject, b"fine", headers={"Nats-Msg-Id": "good-1"})

        async def handler(tx: Transaction, msg) -> None:
            if msg.data == b"poison":
                raise RuntimeError("cannot handle this")

        spec = ConsumerSpec(stream=stream, durable=durable, filter_subjects=(subject,),
                            max_attempts=3, backoff=(0.1,), batch_transaction=False)
        stop = asyncio.Event()
        task = asyncio.create_task(EventConsumer(uow, nc, spec, handler).run(stop, batch=10))
        try:
            async def dead() -> float | None:
                return REGISTRY.get_sample_value("cartage_consumer_dead_letters_total",
                                                 {"consumer": durable})

            assert await eventually(dead, seconds=20) == 1
        finally:
            stop.set()
            await task
        # Delivered three times: the second and third are redeliveries; "fine" is none.
        assert REGISTRY.get_sample_value("cartage_consumer_redeliveries_total",
                                         {"consumer": durable}) == 2
    finally:
        await nc.close()
        await uow.close()
        await engine.dispose()
