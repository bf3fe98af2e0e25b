from __future__ import annotations

import grpc

from cartage.order.v1 import order_service_pb2 as pb
from tests.support import OrderClient, events_of, eventually, new_client_id


async def test_create_then_get(channel: grpc.aio.Channel, stack) -> None:
    client = OrderClient(channel, new_client_id())
    created = await client.create()
    assert created.name.startswith("orders/")
    fetched = await client.GetOrder(pb.GetOrderRequest(name=created.name))
    assert fetched == created
    events = await eventually(lambda: events_of(stack.nats_url, client.client_id))
    assert [subject for subject, _, _ in events] == ["order.created"]
