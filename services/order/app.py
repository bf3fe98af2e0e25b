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
from services.order.adapters.events import (
    MILESTONE_RECORDED,
    PLAN_SUBJECTS,
    OrderEvents,
    active_plan,
    shipment_milestone,
)
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

    async def follow_shipment(tx: Transaction, msg: Msg) -> None:
        """Orders follow their goods (IN_TRANSIT, DELIVERED), from tracking's milestones."""
        milestone = shipment_milestone(catalog().decode(msg))
        if milestone is not None:
            await orders.follow_shipment(tx, milestone)

    return Composition(
        register=lambda server: order_service_pb2_grpc.add_OrderServiceServicer_to_server(
            servicer, server),
        service_names=[SERVICE_NAME],
        # In stream order (one lane): each plan event replaces the client's previous plan, so
        # an older plan applied after a newer one would leave its orders in the wrong state.
        # A transaction per event: a plan reads the order states the previous one wrote.
        # Milestones likewise (one lane, a transaction per event): a DELIVERED right after a
        # PICKED_UP of the same order must see the IN_TRANSIT that one wrote. Order does not
        # matter otherwise: the states only move forward, so DELIVERED before PICKED_UP ends
        # DELIVERED too.
        consumers=[(ConsumerSpec.of("order-plans", *PLAN_SUBJECTS, concurrency=1,
                                    batch_transaction=False), follow_plan),
                   (ConsumerSpec.of("order-milestones", MILESTONE_RECORDED, concurrency=1,
                                    batch_transaction=False), follow_shipment)],
    )


DEFINITION = ServiceDefinition(
    name="order", module=__name__, settings=Settings, tables=tables.kit,
    migrations=Path(__file__).parent / "adapters" / "migrations", stream="ORDER",
    compose=compose)
migrate = DEFINITION.migrate
serve = DEFINITION.serve
