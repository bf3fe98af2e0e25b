"""NATS killed with SIGKILL and started again, three times, while callers create orders (the
order service as a child process on the durable stack, with a NATS of its own).

- No event is lost: every acknowledged order has exactly one order.created event in the stream
  once the outbox drained (the drain is asserted).
- No effect is applied twice by the order service's consumer of routing's plan events: a
  crafted route.planned event is published just before each kill (its handling may be cut off
  between commit and ack), and at the end the first one is delivered again; the inbox makes it
  a no-op, which shows because it would move an order that a later plan released back to
  PLANNED (and each order's etag counts every change it had).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import grpc
import nats
import sqlalchemy as sa

from cartage.order.v1 import order_pb2
from cartage.order.v1 import order_service_pb2 as pb
from cartage.routing.v1 import events_pb2 as routing_events
from cartage.routing.v1 import route_plan_pb2
from services.kit.db import create_engine
from services.kit.events import EVENT_TYPE_HEADER, catalog
from services.stack.components import Nats, free_port
from tests.integration.test_durability import drained
from tests.support import OrderClient, OrderLoad, events_of, eventually, health, new_client_id

KILLS = 3
PLANNED = order_pb2.Order.STATE_PLANNED
RELEASED = order_pb2.Order.STATE_RELEASED


def _plan_event(client_id: str, event_id: str, planned: list[str], left_out: list[str]
                ) -> routing_events.RoutePlannedEvent:
    """A route.planned event as the routing service would publish it."""
    return routing_events.RoutePlannedEvent(
        event_id=event_id, client_id=client_id,
        route_plan=route_plan_pb2.RoutePlan(
            routes=[route_plan_pb2.Route(
                stops=[route_plan_pb2.RouteStop(shipment=name) for name in planned])],
            unassigned=[route_plan_pb2.UnassignedShipment(shipment=name) for name in left_out]))


async def _publish(nats_url: str, event: routing_events.RoutePlannedEvent) -> None:
    kind = catalog().of(event)
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(kind.subject, event.SerializeToString(), headers={
            "Nats-Msg-Id": event.event_id, EVENT_TYPE_HEADER: kind.name})
    finally:
        await nc.close()


async def test_nats_killed_under_load_loses_no_event_and_applies_no_plan_twice(
        durable_stack, durable_order_process, durable_database, tmp_path) -> None:
    own_nats = Nats(tmp_path / "js", free_port())
    own_nats.start()
    service = durable_order_process(DATABASE_URL=durable_database, NATS_URL=own_nats.url).start()
    client_id = new_client_id()
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            client = OrderClient(channel, client_id)
            await eventually(lambda: _health(service.address), until=lambda s: s == "SERVING")
            # one released order per kill, and one the last plan event plans
            targets = [await _released(client) for _ in range(KILLS + 1)]
            load = OrderLoad(client, 16, prefix="NK").start()
            plans = []
            try:
                await eventually(lambda: _acknowledged(load), seconds=60,
                                 until=lambda n: n >= 100)
                for kill in range(1, KILLS + 1):
                    # plan k plans order k and leaves out order k-1, which plan k-1 planned
                    plan = _plan_event(client_id, f"plan-{kill}", [targets[kill - 1]],
                                       targets[kill - 2:kill - 1] if kill > 1 else [])
                    plans.append(plan)
                    await _publish(own_nats.url, plan)
                    load.phase = f"nats down {kill}"
                    own_nats.kill()
                    await asyncio.sleep(1.0)
                    load.phase = f"nats back {kill}"
                    own_nats.start()
                    await eventually(lambda: _health(service.address), seconds=30,
                                     until=lambda s: s == "SERVING")
                    so_far = targets[:kill]
                    expected = [RELEASED] * (kill - 1) + [PLANNED]
                    await eventually(lambda n=so_far: _states(client, n), seconds=30,
                                     until=lambda s, e=expected: s == e)
                    served = load.ok()
                    await eventually(lambda: _acknowledged(load), seconds=30,
                                     until=lambda n, s=served: n >= s + 50)
            finally:
                await load.stop()
            cut = service.log.read_text().count("event handler failed; will retry")
            print(f"\nnats kill -9 x{KILLS} under load: {load.summary()}; plan events committed "
                  f"whose ack a kill cut off (so delivered again): {cut}")
            assert load.errors() == [], load.summary()  # Postgres alone takes the orders

            # The first plan event once more (as after a lost ack or a producer's retry past
            # the duplicate window: shrunk here so the stream keeps the copy), then a last plan.
            await _shrink_duplicate_window(own_nats.url, "ROUTING")
            await _publish(own_nats.url, plans[0])
            last = _plan_event(client_id, "plan-last", [targets[KILLS]], [])
            await _publish(own_nats.url, last)
            assert await _stream_count(own_nats.url, "ROUTING") == KILLS + 2
            await eventually(lambda: _states(client, targets), seconds=30,
                             until=lambda s: s[-1] == PLANNED)
            orders = [await client.GetOrder(pb.GetOrderRequest(name=n)) for n in targets]
            # created v1, released v2, planned v3, left out (released again) v4
            assert [(o.state, o.etag) for o in orders] == (
                [(RELEASED, "v4")] * (KILLS - 1) + [(PLANNED, "v3"), (PLANNED, "v3")])
            assert await _inbox(durable_database) == {p.event_id for p in [*plans, last]}

        await drained(durable_database)
        events = [e for e in await events_of(own_nats.url, client_id) if e[0] == "order.created"]
        created = Counter(event.order.name for _, event, _ in events)
        acknowledged = [c.name for c in load.acknowledged] + targets
        assert created == Counter(acknowledged), (
            f"lost: {len(set(acknowledged) - set(created))}, "
            f"doubled: {sum(1 for n in created.values() if n > 1)}")
    finally:
        service.stop()
        own_nats.stop()


async def _released(client: OrderClient) -> str:
    order = await client.create()
    return (await client.ReleaseOrder(pb.ReleaseOrderRequest(name=order.name))).name


async def _acknowledged(load: OrderLoad) -> int:
    return load.ok()


async def _health(address: str) -> str:
    try:
        return await health(address)
    except grpc.aio.AioRpcError as error:
        return error.code().name


async def _states(client: OrderClient, names: list[str]) -> list[int]:
    return [(await client.GetOrder(pb.GetOrderRequest(name=n))).state for n in names]


async def _shrink_duplicate_window(nats_url: str, stream: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        config = (await js.stream_info(stream)).config
        await js.update_stream(dataclasses.replace(config, duplicate_window=0.2))
        await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def _stream_count(nats_url: str, stream: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


async def _inbox(database_url: str) -> set[str]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(sa.text(
                "SELECT event_id FROM orders.inbox WHERE consumer = 'order-plans'"))).scalars())
    finally:
        await engine.dispose()
