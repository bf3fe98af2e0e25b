"""The kit's consumer runner against real JetStream and Postgres: inbox dedupe, retries with
backoff, and the dead-letter stream after the last attempt."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest
import sqlalchemy as sa
from nats.js import api as js_api

from services.kit.db import KitTables, create_engine
from services.kit.messaging import (
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT_PREFIX,
    ConsumerSpec,
    EventConsumer,
    ensure_stream,
)
from services.kit.uow import Transaction, UnitOfWork
from services.order.adapters import tables as order_tables
from services.order.app import DEFINITION
from services.order.settings import Settings
from tests.support import eventually


@pytest.fixture
async def runner_parts(stack, fresh_database):
    await DEFINITION.migrate(Settings(database_url=fresh_database, nats_url=stack.nats_url))
    engine = create_engine(fresh_database, pool_size=2)
    uow = UnitOfWork(engine, KitTables.for_schema(sa.MetaData(schema=order_tables.SCHEMA)))
    nc = await nats.connect(stack.nats_url)
    stream = f"T{uuid.uuid4().hex[:8].upper()}"
    await ensure_stream(nc.jetstream(), stream, [f"{stream.lower()}.>"])
    yield uow, nc, stream
    await nc.close()
    await uow.close()
    await engine.dispose()


async def _run(uow, nc, spec, handler, until):
    stop = asyncio.Event()
    consumer = EventConsumer(uow, nc, spec, handler)
    task = asyncio.create_task(consumer.run(stop, batch=10))
    try:
        return await eventually(until, seconds=20)
    finally:
        stop.set()
        await task


async def test_redelivered_event_is_applied_once(runner_parts) -> None:
    uow, nc, stream = runner_parts
    js = nc.jetstream()
    applied: list[bytes] = []

    async def handler(tx: Transaction, msg) -> None:
        applied.append(msg.data)

    subject = f"{stream.lower()}.thing"
    # The same event id stored twice, as when a producer retries after the stream's duplicate
    # window: shrink the window so the second copy is not dropped by JetStream.
    await js.update_stream(js_api.StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"],
                                               duplicate_window=0.2))
    await js.publish(subject, b"one", headers={"Nats-Msg-Id": "evt-1"})
    await asyncio.sleep(0.5)
    await js.publish(subject, b"one", headers={"Nats-Msg-Id": "evt-1"})
    assert (await js.stream_info(stream)).state.messages == 2
    await js.publish(subject, b"two", headers={"Nats-Msg-Id": "evt-2"})
    spec = ConsumerSpec(stream=stream, durable="dedupe", filter_subjects=(subject,))

    async def done() -> bool:
        try:
            info = await js.consumer_info(stream, "dedupe")
        except nats.js.errors.NotFoundError:
            return False  # the runner has not created its consumer yet
        return info.num_ack_pending == 0 and info.num_pending == 0 and len(applied) >= 2

    await _run(uow, nc, spec, handler, done)
    assert applied == [b"one", b"two"]


async def test_failing_handler_is_retried_then_dead_lettered(runner_parts) -> None:
    uow, nc, stream = runner_parts
    js = nc.jetstream()
    attempts: list[tuple[bytes, int]] = []

    async def handler(tx: Transaction, msg) -> None:
        attempts.append((msg.data, msg.metadata.num_delivered))
        if msg.data == b"poison":
            raise RuntimeError("cannot handle this")

    subject = f"{stream.lower()}.thing"
    await js.publish(subject, b"poison", headers={"Nats-Msg-Id": "bad-1"})
    await js.publish(subject, b"fine", headers={"Nats-Msg-Id": "good-1"})
    spec = ConsumerSpec(stream=stream, durable="dlq", filter_subjects=(subject,),
                        max_attempts=3, backoff=(0.1, 0.1, 0.1), batch_transaction=True)

    async def dead_lettered():
        try:
            msg = await js.get_last_msg(DEAD_LETTER_STREAM, f"deadletter.{stream}.dlq")
        except Exception:
            return None
        return msg

    dead = await _run(uow, nc, spec, handler, dead_lettered)
    assert dead.data == b"poison"
    assert dead.headers["Cartage-Original-Subject"] == subject
    assert "cannot handle this" in dead.headers["Cartage-Error"]
    # Poison delivered 3 times; fine delivered once (its first try, in the batch with poison,
    # was rolled back with the batch and repeated in a transaction of its own).
    assert sorted({n for data, n in attempts if data == b"poison"}) == [1, 2, 3]
    assert {n for data, n in attempts if data == b"fine"} == {1}
    # The failed attempts left no inbox row, the handled one did.
    async with uow.transaction() as tx:
        rows = (await tx.execute(sa.text(
            "SELECT event_id FROM orders.inbox WHERE consumer = 'dlq'"))).scalars().all()
    assert rows == ["good-1"]
    info = await js.consumer_info(stream, "dlq")
    assert info.num_ack_pending == 0


async def test_dead_letter_stream_keeps_its_copy(runner_parts) -> None:
    """A consumer declares the dead-letter stream when it subscribes (so this test needs no
    other to have run first), file-backed so that a dead-lettered event survives a restart."""
    uow, nc, stream = runner_parts
    js = nc.jetstream()
    spec = ConsumerSpec(stream=stream, durable="dlq-store",
                        filter_subjects=(f"{stream.lower()}.x",))
    await EventConsumer(uow, nc, spec, _never_called).subscribe()
    info = await js.stream_info(DEAD_LETTER_STREAM)
    assert info.config.storage == js_api.StorageType.FILE
    assert info.config.subjects == [f"{DEAD_LETTER_SUBJECT_PREFIX}.>"]


async def _never_called(tx: Transaction, msg) -> None:
    raise AssertionError("no event was published")


async def test_a_fetched_batch_is_one_transaction_and_each_event_is_applied_once(
        runner_parts) -> None:
    uow, nc, stream = runner_parts
    js = nc.jetstream()
    subject = f"{stream.lower()}.thing"
    for i in range(60):
        await js.publish(subject, str(i).encode(), headers={"Nats-Msg-Id": f"b-{i}"})
    transactions: set[int] = set()
    applied: list[bytes] = []

    async def handler(tx: Transaction, msg) -> None:
        transactions.add(id(tx))
        applied.append(msg.data)

    spec = ConsumerSpec(stream=stream, durable="batched", filter_subjects=(subject,), batch=30,
                        batch_transaction=True)

    async def done() -> bool:
        try:
            info = await js.consumer_info(stream, "batched")
        except nats.js.errors.NotFoundError:
            return False
        return info.num_ack_pending == 0 and info.num_pending == 0 and len(applied) == 60

    stop = asyncio.Event()
    task = asyncio.create_task(EventConsumer(uow, nc, spec, handler).run(stop))
    try:
        await eventually(done, seconds=20)
    finally:
        stop.set()
        await task
    assert applied == [str(i).encode() for i in range(60)]  # in stream order
    assert len(transactions) <= 6  # a few fetches of up to 30, not one transaction per event
    async with uow.transaction() as tx:
        inbox = (await tx.execute(sa.text(
            "SELECT count(*) FROM orders.inbox WHERE consumer = 'batched'"))).scalar_one()
    assert inbox == 60


async def test_a_poisonous_event_does_not_hold_up_the_rest_of_its_batch(runner_parts) -> None:
    """The others of its batch commit at once (one transaction each after the batch failed),
    while the poisonous one is still waiting for its retries."""
    uow, nc, stream = runner_parts
    js = nc.jetstream()
    subject = f"{stream.lower()}.thing"
    for i in range(10):
        data = b"poison" if i == 4 else str(i).encode()
        await js.publish(subject, data, headers={"Nats-Msg-Id": f"p-{i}"})

    async def handler(tx: Transaction, msg) -> None:
        if msg.data == b"poison":
            raise RuntimeError("cannot handle this")

    spec = ConsumerSpec(stream=stream, durable="poison", filter_subjects=(subject,),
                        max_attempts=3, backoff=(5.0,), batch_transaction=True)

    async def handled() -> int:
        async with uow.transaction() as tx:
            return (await tx.execute(sa.text(
                "SELECT count(*) FROM orders.inbox WHERE consumer = 'poison'"))).scalar_one()

    stop = asyncio.Event()
    task = asyncio.create_task(EventConsumer(uow, nc, spec, handler).run(stop))
    try:
        await eventually(handled, seconds=4, until=lambda n: n == 9)  # before the first retry
        info = await js.consumer_info(stream, "poison")
        assert info.num_ack_pending == 1  # the poisonous one, waiting for its retry
    finally:
        stop.set()
        await task


async def test_lanes_run_side_by_side_and_keep_each_keys_order(runner_parts) -> None:
    uow, nc, stream = runner_parts
    js = nc.jetstream()
    subject = f"{stream.lower()}.thing"
    for n in range(20):
        for key in "abcdefgh":
            await js.publish(subject, f"{key}:{n}".encode(),
                             headers={"Nats-Msg-Id": f"{key}-{n}", "Key": key})
    seen: dict[str, list[int]] = {}
    running = 0
    overlapped = 0

    async def handler(tx: Transaction, msg) -> None:
        nonlocal running, overlapped
        running += 1
        overlapped = max(overlapped, running)
        await asyncio.sleep(0.002)  # a handler that waits on I/O
        running -= 1
        key, n = msg.data.decode().split(":")
        seen.setdefault(key, []).append(int(n))

    spec = ConsumerSpec(stream=stream, durable="lanes", filter_subjects=(subject,),
                        concurrency=4, key=lambda msg: msg.headers["Key"])

    async def done() -> bool:
        return sum(len(v) for v in seen.values()) == 160

    await _run(uow, nc, spec, handler, done)
    assert seen == {key: list(range(20)) for key in "abcdefgh"}
    assert overlapped > 1
