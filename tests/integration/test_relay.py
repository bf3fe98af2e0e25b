"""The kit's outbox relay against real Postgres and JetStream: several relays on one outbox
publish every row once and each aggregate's events in order, also when the leader stops
mid-stream; housekeeping deletes only published rows past the retention."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from datetime import timedelta

import nats
import pytest
import sqlalchemy as sa

from services.kit.db import create_engine
from services.kit.messaging import OutboxHousekeeping, OutboxRelay
from services.kit.uow import OutgoingEvent, UnitOfWork
from services.order.adapters import tables as order_tables
from services.order.app import DEFINITION
from services.order.settings import Settings
from tests.support import eventually

AGGREGATES = 12
VERSIONS = 40


@pytest.fixture
async def outbox(stack, fresh_database):
    await DEFINITION.migrate(Settings(database_url=fresh_database, nats_url=stack.nats_url))
    engine = create_engine(fresh_database, pool_size=8)
    stream = f"R{uuid.uuid4().hex[:8].upper()}"
    yield engine, stream
    await engine.dispose()


def _relay(engine, stack, stream: str, name: str) -> OutboxRelay:
    # Small claims and window, so that a few hundred rows make many batches in flight.
    return OutboxRelay(engine, order_tables.kit, stack.nats_url, name=name,
                       streams={stream: [f"{stream.lower()}.>"]}, claim_size=25, window=100,
                       poll_interval=0.2)


async def _write(uow: UnitOfWork, stream: str, aggregate: int, versions: range) -> None:
    """An aggregate's events, one transaction each, in version order (as a service writes an
    aggregate's changes one after another)."""
    for version in versions:
        async with uow.transaction() as tx:
            tx.publish(OutgoingEvent(subject=f"{stream.lower()}.thing", event_type="t",
                                     payload=f"{aggregate}:{version}".encode()))


async def _unpublished(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(
            "SELECT count(*) FROM orders.outbox WHERE published_at IS NULL"))).scalar_one()


async def _stream(nats_url: str, stream: str) -> list[tuple[str, bytes]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        count = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe(f"{stream.lower()}.>", stream=stream)
        seen: list[tuple[str, bytes]] = []
        while len(seen) < count:
            for msg in await sub.fetch(min(500, count - len(seen)), timeout=5):
                seen.append((msg.headers["Nats-Msg-Id"], msg.data))
                await msg.ack()
        return seen
    finally:
        await nc.close()


async def test_relays_side_by_side_publish_each_row_once_and_each_aggregate_in_order(
        stack, outbox) -> None:
    engine, stream = outbox
    relays = [_relay(engine, stack, stream, f"r{i}") for i in range(3)]
    stops = [asyncio.Event() for _ in relays]
    tasks = [asyncio.create_task(r.run(s)) for r, s in zip(relays, stops, strict=True)]
    # Every relay's process writes and wakes its own relay, as worker processes do.
    uows = [UnitOfWork(engine, order_tables.kit, on_events=r.wake) for r in relays]
    try:
        await eventually(lambda: _leaders(relays), until=lambda n: n == 1)
        half = VERSIONS // 2
        await asyncio.gather(*(_write(uows[a % 3], stream, a, range(half))
                               for a in range(AGGREGATES)))
        # The leader stops while the second half is being written and relayed; another one
        # takes over.
        leader = next(i for i, r in enumerate(relays) if r.leading)
        writing = asyncio.gather(*(_write(uows[a % 3], stream, a, range(half, VERSIONS))
                                   for a in range(AGGREGATES)))
        await asyncio.sleep(0.1)
        stops[leader].set()
        await tasks[leader]
        await writing
        await eventually(lambda: _leaders(relays), until=lambda n: n == 1)
        await eventually(lambda: _unpublished(engine), seconds=30, until=lambda n: n == 0)
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
        for uow in uows:
            await uow.close()

    messages = await _stream(stack.nats_url, stream)
    ids = Counter(msg_id for msg_id, _ in messages)
    assert len(ids) == AGGREGATES * VERSIONS and max(ids.values()) == 1
    per_aggregate: dict[str, list[int]] = defaultdict(list)
    for _, data in messages:
        aggregate, version = data.decode().split(":")
        per_aggregate[aggregate].append(int(version))
    assert all(versions == list(range(VERSIONS)) for versions in per_aggregate.values())


async def _leaders(relays: list[OutboxRelay]) -> int:
    return sum(1 for r in relays if r.leading)


async def test_relay_wakes_on_another_processes_commit(stack, outbox) -> None:
    """A commit in a process whose relay stands by reaches the leader by NOTIFY, well before
    the fallback poll."""
    engine, stream = outbox
    leader = OutboxRelay(engine, order_tables.kit, stack.nats_url, name="leader",
                         streams={stream: [f"{stream.lower()}.>"]}, poll_interval=30.0)
    standby = OutboxRelay(engine, order_tables.kit, stack.nats_url, name="standby",
                          poll_interval=0.1)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(leader.run(stop))]
    await eventually(lambda: _leaders([leader]), until=lambda n: n == 1)
    tasks.append(asyncio.create_task(standby.run(stop)))
    uow = UnitOfWork(engine, order_tables.kit, on_events=standby.wake)
    try:
        await asyncio.sleep(0.5)  # the leader is idle in its 30 s poll
        await _write(uow, stream, 0, range(1))
        await eventually(lambda: _unpublished(engine), seconds=5, until=lambda n: n == 0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await uow.close()
    assert not standby.leading


async def test_housekeeping_deletes_only_published_rows_past_the_retention(outbox) -> None:
    engine, _ = outbox
    async with engine.begin() as conn:
        await conn.execute(sa.text("""
            INSERT INTO orders.outbox (event_id, subject, event_type, payload, created_at,
                                       published_at)
            SELECT 'old-' || g, 's', 't', '\\x00', now() - interval '3 days',
                   now() - interval '3 days' FROM generate_series(1, 250) g"""))
        await conn.execute(sa.text("""
            INSERT INTO orders.outbox (event_id, subject, event_type, payload, created_at,
                                       published_at)
            VALUES ('waiting', 's', 't', '\\x00', now() - interval '3 days', NULL),
                   ('recent', 's', 't', '\\x00', now(), now())"""))
    sweeper = OutboxHousekeeping(engine, order_tables.kit, retention=timedelta(days=1),
                                 chunk=100)
    assert await sweeper.sweep() == 250
    async with engine.connect() as conn:
        left = set((await conn.execute(sa.text(
            "SELECT event_id FROM orders.outbox"))).scalars())
    assert left == {"waiting", "recent"}
    assert await sweeper.sweep() == 0
