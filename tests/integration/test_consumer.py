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
                        max_attempts=3, backoff=(0.1, 0.1, 0.1))

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
