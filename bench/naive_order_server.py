"""The issue's calibration point: a naive CreateOrder handler, for comparison only.

    python -m bench.naive_order_server PORT DATABASE_URL NATS_URL

grpc.aio + asyncpg + JetStream with nothing else: no validation, idempotency, identity,
interceptors, logging or outbox relay. Each call stores the order the textbook way (BEGIN, INSERT
order, INSERT outbox row, COMMIT on a pool of 20) and then publishes the event to JetStream
itself, waiting for the ack. `bench.orders` measures it with the same callers as the order
service, so the README can say what such a handler reaches on this machine.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime

import asyncpg
import grpc
import nats
import uvloop
from nats.js.errors import BadRequestError

from bench.orders import RAW_ORDER_SQL, RAW_OUTBOX_SQL
from cartage.order.v1 import events_pb2, order_pb2, order_service_pb2, order_service_pb2_grpc

STREAM, SUBJECT = "NAIVE", "naive.order.created"


class NaiveOrders(order_service_pb2_grpc.OrderServiceServicer):
    def __init__(self, pool: asyncpg.Pool, js: nats.js.JetStreamContext) -> None:
        self._pool = pool
        self._js = js

    async def CreateOrder(self, request: order_service_pb2.CreateOrderRequest,
                          context: grpc.aio.ServicerContext) -> order_pb2.Order:
        order = order_pb2.Order()
        order.CopyFrom(request.order)
        order_id = uuid.uuid4().hex
        order.name = f"orders/{order_id}"
        order.state = order_pb2.Order.State.STATE_CREATED
        now = datetime.now(UTC)
        order.create_time.FromDatetime(now)
        order.update_time.FromDatetime(now)
        order.etag = "v1"
        event = events_pb2.OrderCreatedEvent(order=order, event_id=uuid.uuid4().hex)
        event.event_time.FromDatetime(now)
        payload = event.SerializeToString()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(RAW_ORDER_SQL, order_id, "naive", order_id, now,
                               order.SerializeToString())
            await conn.execute(RAW_OUTBOX_SQL, event.event_id, payload, "naive")
        await self._js.publish(SUBJECT, payload, headers={"Nats-Msg-Id": event.event_id})
        return order


async def main(port: str, database_url: str, nats_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=20, max_size=20)
    connection = await nats.connect(nats_url)
    js = connection.jetstream()
    try:
        await js.add_stream(name=STREAM, subjects=[SUBJECT])
    except BadRequestError:
        pass  # already there
    server = grpc.aio.server()
    order_service_pb2_grpc.add_OrderServiceServicer_to_server(NaiveOrders(pool, js), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(*sys.argv[1:4]))
