"""The composition root: the order service's parts, wired (the kit runs them, `kit.app`)."""

from __future__ import annotations

from pathlib import Path

from nats.aio.msg import Msg

from cartage.order.v1 import order_service_pb2, order_service_pb2_grpc
from services.kit.app import Composition, Runtime, ServiceDefinition
from services.kit.events import catalog
from services.kit.messaging import ConsumerSpec
from services.kit.uow import Transaction
from services.order import conversion
from services.order.adapters import tables
from services.order.adapters.events import PLAN_SUBJECTS, OrderEvents, active_plan
from services.order.adapters.repository import OrderRepository
from services.order.api.servicer import OrderServicer
from services.order.settings import Settings
from services.order.use_cases import Codecs, OrderUseCases

SERVICE_NAME = order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


def compose(runtime: Runtime) -> Composition:
    orders = OrderUseCases(runtime.uow, OrderRepository(), OrderEvents(),
                           Codecs(conversion.ORDER_CODEC, conversion.ORDERS_CODEC))
    servicer = OrderServicer(orders)

    async def follow_plan(tx: Transaction, msg: Msg) -> None:
        """Orders follow the fleet's active plan (PLANNED / RELEASED), from routing's events."""
        plan = active_plan(catalog().decode(msg))
        if plan is not None:
            await orders.follow_plan(tx, plan)

    return Composition(
        register=lambda server: order_service_pb2_grpc.add_OrderServiceServicer_to_server(
            servicer, server),
        service_names=[SERVICE_NAME],
        # In stream order (one lane): each plan event replaces the client's previous plan, so
        # an older plan applied after a newer one would leave its orders in the wrong state.
        # A transaction per event: a plan reads the order states the previous one wrote.
        consumers=[(ConsumerSpec.of("order-plans", *PLAN_SUBJECTS, concurrency=1,
                                    batch_transaction=False), follow_plan)],
    )


DEFINITION = ServiceDefinition(
    name="order", module=__name__, settings=Settings, tables=tables.kit,
    migrations=Path(__file__).parent / "adapters" / "migrations", stream="ORDER",
    compose=compose)
migrate = DEFINITION.migrate
serve = DEFINITION.serve
