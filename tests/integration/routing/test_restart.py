"""Nothing acknowledged is lost: a plan left SOLVING when the service stops is solved after it
starts again."""

from __future__ import annotations

import grpc
import sqlalchemy as sa

from cartage.routing.v1 import route_plan_pb2
from cartage.routing.v1 import routing_service_pb2 as pb
from services.kit.db import create_engine
from services.stack.components import Nats, free_port
from tests.conftest import RunningRouting, routing_settings
from tests.integration.routing.conftest import RoutingClient
from tests.integration.routing.conftest import shipment as make_shipment


async def plan_states(database_url: str) -> list[int]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.text(
                "SELECT state FROM routing.route_plans"))).scalars())
    finally:
        await engine.dispose()


async def test_a_plan_left_solving_is_finished_after_a_restart(stack, tmp_path,
                                                               fresh_database) -> None:
    # A NATS and a database of its own: no other routing service shares its consumers.
    own_nats = Nats(tmp_path / "js", free_port())
    own_nats.start()
    settings = routing_settings(stack, database_url=fresh_database, nats_url=own_nats.url)
    try:
        first = await RunningRouting(settings).start()
        async with grpc.aio.insecure_channel(first.address) as channel:
            routing = RoutingClient(channel)
            await routing.vehicle("a")
            operation = await routing.plan(shipments=[make_shipment(f"s{i}", 52.5, 13.3 + i / 50)
                                                      for i in range(10)])
        await first.stop()
        assert await plan_states(fresh_database) == [route_plan_pb2.RoutePlan.STATE_SOLVING]

        second = await RunningRouting(settings).start()
        try:
            async with grpc.aio.insecure_channel(second.address) as channel:
                routing = RoutingClient(channel, routing.client_id)
                done = await routing.wait(operation)
                plan = route_plan_pb2.RoutePlan()
                done.response.Unpack(plan)
                assert plan.state == route_plan_pb2.RoutePlan.STATE_PROPOSED
                assert plan.totals.shipments_planned == 10
                again = await routing.GetRoutePlan(pb.GetRoutePlanRequest(name=plan.name))
                assert again.state == route_plan_pb2.RoutePlan.STATE_PROPOSED
        finally:
            await second.stop()
    finally:
        own_nats.stop()
