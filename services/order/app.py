"""The composition root: builds the order service from its settings."""

from __future__ import annotations

from pathlib import Path

from nats.aio.msg import Msg

from cartage.order.v1 import order_service_pb2, order_service_pb2_grpc
from services.kit.db import create_engine, reachable
from services.kit.messaging import (
    ConsumerSpec,
    OutboxRelay,
    consumer_job,
)
from services.kit.migrations import upgrade_async
from services.kit.server import Service
from services.kit.uow import Transaction, UnitOfWork
from services.order.adapters import tables
from services.order.adapters.events import (
    PLAN_EVENTS,
    ROUTING_STREAM,
    OrderEvents,
    decode_plan_event,
)
from services.order.adapters.repository import OrderRepository
from services.order.api.servicer import OrderServicer
from services.order.settings import Settings, worker_sockets
from services.order.use_cases import OrderUseCases

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
STREAM = "ORDER"
SUBJECTS = ("order.>",)
SERVICE_NAME = order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
PLAN_CONSUMER = ConsumerSpec(stream=ROUTING_STREAM, durable="order-plans",
                             filter_subjects=tuple(PLAN_EVENTS))


async def migrate(settings: Settings) -> None:
    await upgrade_async(settings.database_url, tables.SCHEMA, MIGRATIONS)


async def serve(settings: Settings, *, handle_signals: bool = True,
                service_hook: object = None) -> None:
    """Run until SIGTERM/SIGINT (or `service.stop_event`). `service_hook`, when given, is called
    with the Service before it starts (tests use it to learn the port and stop it)."""
    if settings.migrate_on_start:
        await migrate(settings)
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    relay = OutboxRelay(
        engine, tables.kit, settings.nats_url, name="order", streams={STREAM: SUBJECTS},
        crash_after_publish=settings.fault_relay_crash_after_publish,
    )
    uow = UnitOfWork(engine, tables.kit, on_events=relay.wake)
    orders = OrderUseCases(uow, OrderRepository(), OrderEvents())
    servicer = OrderServicer(orders)

    async def follow_plan(tx: Transaction, msg: Msg) -> None:
        """Orders follow the fleet's active plan (PLANNED / RELEASED), from routing's events."""
        plan = decode_plan_event(msg)
        if plan is not None:
            await orders.follow_plan(tx, plan)

    service = Service(
        name="order",
        address=settings.grpc_address,
        register=lambda server: order_service_pb2_grpc.add_OrderServiceServicer_to_server(
            servicer, server),
        service_names=[SERVICE_NAME],
        health_checks=[reachable(engine), relay.ready],
        background=[relay.run, consumer_job(uow, settings.nats_url, "order-consumer",
                                               [(PLAN_CONSUMER, follow_plan)])],
        reuse_port=settings.workers > 1,
        own_address=(worker_sockets(settings.worker_socket_dir, settings.workers)
                     [settings.worker_index] if settings.worker_socket_dir else None),
    )
    if callable(service_hook):
        service_hook(service)
    try:
        await service.run(handle_signals=handle_signals)
    finally:
        await uow.close()
        await engine.dispose()


def run_worker(settings: Settings) -> None:
    """Entry point of one worker process (importable, as the spawn start method needs)."""
    import uvloop

    from services.kit.log import configure_logging

    configure_logging("order", settings.log_level)
    uvloop.run(serve(settings))
