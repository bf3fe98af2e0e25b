"""Background jobs come back by themselves, and readiness tells the truth meanwhile.

The order service's consumer of routing's plan events is broken two ways: its durable consumer
is deleted under it, and its NATS server is stopped and started again. Each time it comes back
without a restart of the service, orders follow the next plan event again, and gRPC health says
NOT_SERVING while NATS is gone and SERVING once it is back.
"""

from __future__ import annotations

import grpc
import nats

from cartage.order.v1 import order_pb2
from cartage.order.v1 import order_service_pb2 as pb
from cartage.routing.v1 import events_pb2 as routing_events
from cartage.routing.v1 import route_plan_pb2
from services.kit.events import EVENT_TYPE_HEADER, catalog
from services.stack.components import Nats, free_port
from tests.support import OrderClient, RunningService, eventually, health, new_client_id

DURABLE = "order-plans"


async def _plan(nats_url: str, client_id: str, order_name: str, event_id: str) -> None:
    """Publish a route.planned event that plans one order, as the routing service would."""
    event = routing_events.RoutePlannedEvent(
        event_id=event_id, client_id=client_id,
        route_plan=route_plan_pb2.RoutePlan(routes=[route_plan_pb2.Route(
            stops=[route_plan_pb2.RouteStop(shipment=order_name)])]))
    kind = catalog().of(event)
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(kind.subject, event.SerializeToString(), headers={
            "Nats-Msg-Id": event_id, EVENT_TYPE_HEADER: kind.name})
    finally:
        await nc.close()


async def _released(client: OrderClient, reference: str) -> order_pb2.Order:
    from tests.support import sample_order

    order = await client.create(sample_order(reference))
    return await client.ReleaseOrder(pb.ReleaseOrderRequest(name=order.name))


def _state_is(client: OrderClient, name: str, state: int):
    async def check() -> bool:
        return (await client.GetOrder(pb.GetOrderRequest(name=name))).state == state
    return check


def _health_is(address: str, wanted: str):
    async def check() -> bool:
        try:
            return await health(address) == wanted
        except grpc.aio.AioRpcError:
            return False
    return check


async def _durable_exists(nats_url: str) -> bool:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().consumer_info("ROUTING", DURABLE)
        return True
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await nc.close()


async def test_the_consumer_comes_back_after_its_durable_is_deleted_and_nats_restarts(
        stack, tmp_path, fresh_database) -> None:
    from services.order.app import DEFINITION
    from tests.conftest import order_settings

    own_nats = Nats(tmp_path / "js", free_port())
    own_nats.start()
    settings = order_settings(stack, nats_url=own_nats.url, database_url=fresh_database)
    running = await RunningService(DEFINITION, settings).start()
    try:
        # No routing service runs: the consumer declared routing's stream itself.
        assert await eventually(_health_is(running.address, "SERVING"))
        assert await eventually(lambda: _durable_exists(own_nats.url))
        async with grpc.aio.insecure_channel(running.address) as channel:
            client = OrderClient(channel, new_client_id())

            # 1. The durable consumer is deleted under the running service.
            first = await _released(client, "SUP-1")
            nc = await nats.connect(own_nats.url)
            await nc.jetstream().delete_consumer("ROUTING", DURABLE)
            await nc.close()
            assert await eventually(lambda: _durable_exists(own_nats.url), seconds=20)
            await _plan(own_nats.url, client.client_id, first.name, "ev-sup-1")
            assert await eventually(
                _state_is(client, first.name, order_pb2.Order.STATE_PLANNED), seconds=20)

            # 2. NATS goes away: not ready; it comes back: ready, and consuming again.
            own_nats.stop()
            assert await eventually(_health_is(running.address, "NOT_SERVING"), seconds=20)
            second = await _released(client, "SUP-2")  # Postgres is enough to take orders
            own_nats.start()
            assert await eventually(_health_is(running.address, "SERVING"), seconds=30)
            await _plan(own_nats.url, client.client_id, second.name, "ev-sup-2")
            assert await eventually(
                _state_is(client, second.name, order_pb2.Order.STATE_PLANNED), seconds=30)
    finally:
        await running.stop()
        own_nats.stop()
