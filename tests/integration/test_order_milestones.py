"""The order service follows the tracking service's milestones (real Postgres + NATS): PICKED_UP
(or DEPARTED from the pickup) -> IN_TRANSIT with `order.in_transit`, DELIVERED at the delivery
stop -> DELIVERED with `order.completed`; never back, each event applied once.

Milestone events are published on the TRACKING stream the way the tracking service's relay
publishes them (Nats-Msg-Id and event-type headers), and once through the tracking service
itself (RecordMilestone), which shows the two services agree on the contract.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import sqlalchemy as sa

from cartage.order.v1 import order_pb2
from cartage.order.v1 import order_service_pb2 as pb
from cartage.tracking.v1 import events_pb2 as tracking_events
from cartage.tracking.v1 import tracking_pb2, tracking_service_pb2
from services.kit.clock import set_timestamp
from services.kit.db import create_engine
from tests.integration.tracking.conftest import TrackingClient
from tests.support import (
    OrderClient,
    eventually,
    new_client_id,
    publish_events,
    stream_events,
)

State = order_pb2.Order
PICKED_UP = tracking_pb2.MILESTONE_TYPE_PICKED_UP
DEPARTED = tracking_pb2.MILESTONE_TYPE_DEPARTED
ARRIVED = tracking_pb2.MILESTONE_TYPE_ARRIVED
DELIVERED = tracking_pb2.MILESTONE_TYPE_DELIVERED
ATTEMPTED = tracking_pb2.MILESTONE_TYPE_DELIVERY_ATTEMPTED


def _milestone(client_id: str, order: str, stop_id: str, kind: int, minute: int = 0
               ) -> tracking_events.MilestoneRecordedEvent:
    """A milestone.recorded event as the tracking service publishes it."""
    event = tracking_events.MilestoneRecordedEvent(
        event_id=os.urandom(16).hex(), client_id=client_id, order=order,
        milestone=tracking_pb2.Milestone(
            name=f"{order}/milestones/{os.urandom(8).hex()}", stop_id=stop_id, type=kind,
            source=tracking_pb2.MILESTONE_SOURCE_DRIVER_APP))
    when = datetime(2026, 12, 2, 8, 0, tzinfo=UTC) + timedelta(minutes=minute)
    set_timestamp(event.milestone.event_time, when)
    set_timestamp(event.event_time, when)
    return event


async def _released(client: OrderClient) -> order_pb2.Order:
    order = await client.create()
    return await client.ReleaseOrder(pb.ReleaseOrderRequest(name=order.name))


async def _get(client: OrderClient, name: str) -> order_pb2.Order:
    return await client.GetOrder(pb.GetOrderRequest(name=name))


async def _order_events(nats_url: str, name: str) -> list[str]:
    return [subject for subject, event, _ in await stream_events(nats_url)
            if getattr(event, "order", None) is not None and event.order.name == name]


async def _settled(client: OrderClient, nats_url: str, probe: str) -> None:
    """Wait until the consumer has handled everything published before: a probe order's
    PICKED_UP published last moves it (the consumer keeps stream order)."""
    await eventually(lambda: _get(client, probe),
                     until=lambda o: o.state == State.STATE_IN_TRANSIT)


async def test_pickup_then_delivery_moves_the_order_and_publishes_once(
        stack, channel) -> None:
    client = OrderClient(channel, new_client_id())
    order = await _released(client)
    await publish_events(stack.nats_url,
                         _milestone(client.client_id, order.name, "pickup", ARRIVED))
    picked = _milestone(client.client_id, order.name, "pickup", PICKED_UP, 5)
    await publish_events(stack.nats_url, picked)
    moved = await eventually(lambda: _get(client, order.name),
                             until=lambda o: o.state == State.STATE_IN_TRANSIT)
    assert moved.etag == "v3"  # created v1, released v2, in transit v3: ARRIVED moved nothing
    # an attempt is not a delivery
    await publish_events(stack.nats_url,
                   _milestone(client.client_id, order.name, "delivery", ATTEMPTED, 60))
    delivered = _milestone(client.client_id, order.name, "delivery", DELIVERED, 90)
    await publish_events(stack.nats_url, delivered)
    done = await eventually(lambda: _get(client, order.name),
                            until=lambda o: o.state == State.STATE_DELIVERED)
    assert done.etag == "v4"

    events = await eventually(lambda: _order_events(stack.nats_url, order.name),
                              until=lambda e: "order.completed" in e)
    assert Counter(events) == Counter({"order.created": 1, "order.released": 1,
                                       "order.in_transit": 1, "order.completed": 1})
    completed = next(e for s, e, _ in await stream_events(stack.nats_url)
                     if s == "order.completed" and e.order.name == order.name)
    assert completed.milestone == delivered.milestone.name
    assert completed.milestone_time == delivered.milestone.event_time
    assert completed.order.state == State.STATE_DELIVERED

    # The same events delivered again (a lost ack), and a late PICKED_UP: no second effect,
    # no step back.
    await publish_events(stack.nats_url, picked, delivered, redelivery=True)
    await publish_events(stack.nats_url, _milestone(client.client_id, order.name, "pickup",
                                              PICKED_UP, 120))
    probe = await _released(client)
    await publish_events(stack.nats_url,
                         _milestone(client.client_id, probe.name, "pickup", PICKED_UP))
    await _settled(client, stack.nats_url, probe.name)
    after = await _get(client, order.name)
    assert (after.state, after.etag) == (State.STATE_DELIVERED, "v4")
    assert Counter(await _order_events(stack.nats_url, order.name)) == Counter(events)


async def test_delivered_before_picked_up_ends_delivered(stack, channel) -> None:
    client = OrderClient(channel, new_client_id())
    order = await _released(client)
    await publish_events(stack.nats_url,
                   _milestone(client.client_id, order.name, "delivery", DELIVERED, 90),
                   _milestone(client.client_id, order.name, "pickup", PICKED_UP, 5))
    probe = await _released(client)
    await publish_events(stack.nats_url,
                         _milestone(client.client_id, probe.name, "pickup", DEPARTED))
    await _settled(client, stack.nats_url, probe.name)  # DEPARTED from the pickup counts too
    after = await _get(client, order.name)
    assert (after.state, after.etag) == (State.STATE_DELIVERED, "v3")
    assert Counter(await _order_events(stack.nats_url, order.name)) == Counter(
        {"order.created": 1, "order.released": 1, "order.completed": 1})


async def test_milestones_of_unknown_cancelled_and_foreign_orders_change_nothing(
        stack, channel) -> None:
    client = OrderClient(channel, new_client_id())
    cancelled = await _released(client)
    cancelled = await client.CancelOrder(pb.CancelOrderRequest(name=cancelled.name,
                                                               reason="not needed"))
    created = await client.create()  # never released
    mine = await _released(client)
    other = new_client_id()
    unknown = "orders/" + os.urandom(16).hex()
    events = [
        _milestone(client.client_id, cancelled.name, "pickup", PICKED_UP),
        _milestone(client.client_id, cancelled.name, "delivery", DELIVERED, 60),
        _milestone(client.client_id, created.name, "pickup", PICKED_UP),
        _milestone(client.client_id, unknown, "pickup", PICKED_UP),
        _milestone(other, mine.name, "delivery", DELIVERED, 60),  # another client's claim
        # DEPARTED from the delivery stop is not a pickup
        _milestone(client.client_id, mine.name, "delivery", DEPARTED, 70),
    ]
    await publish_events(stack.nats_url, *events)
    probe = await _released(client)
    await publish_events(stack.nats_url,
                         _milestone(client.client_id, probe.name, "pickup", PICKED_UP))
    await _settled(client, stack.nats_url, probe.name)
    assert [(o.state, o.etag) for o in [await _get(client, n) for n in
                                        (cancelled.name, created.name, mine.name)]] == [
        (State.STATE_CANCELLED, "v3"), (State.STATE_CREATED, "v1"),
        (State.STATE_RELEASED, "v2")]
    # recorded in the inbox (and so acknowledged, never retried or dead-lettered)
    assert {e.event_id for e in events} <= await _inbox(stack.database_url)


async def _inbox(database_url: str) -> set[str]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(sa.text(
                "SELECT event_id FROM orders.inbox WHERE consumer = 'order-milestones'"
            ))).scalars())
    finally:
        await engine.dispose()


async def test_a_milestone_recorded_with_the_tracking_service_moves_the_order(
        stack, channel, tracking_address) -> None:
    orders = OrderClient(channel, new_client_id())
    async with grpc.aio.insecure_channel(tracking_address) as tracking_channel:
        tracking = TrackingClient(tracking_channel, orders)
        order_id = await tracking.tracked_order()
        name = f"orders/{order_id}"
        await orders.ReleaseOrder(pb.ReleaseOrderRequest(name=name))
        now = datetime.now(UTC).replace(microsecond=0)
        for stop_id, kind in (("pickup", PICKED_UP), ("delivery", DELIVERED)):
            milestone = tracking_pb2.Milestone(
                stop_id=stop_id, type=kind, source=tracking_pb2.MILESTONE_SOURCE_DRIVER_APP)
            set_timestamp(milestone.event_time, now - timedelta(minutes=1))
            await tracking.RecordMilestone(tracking_service_pb2.RecordMilestoneRequest(
                parent=name, milestone=milestone))
            target = (State.STATE_IN_TRANSIT if kind == PICKED_UP else State.STATE_DELIVERED)
            await eventually(lambda: _get(orders, name), until=lambda o, t=target: o.state == t)
