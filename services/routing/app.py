"""The composition root: builds the routing service from its settings.

One process serves RoutingService and google.longrunning.Operations on one port, relays its
outbox to the ROUTING stream, consumes the order service's events and its own vehicle status
changes, and runs the planner, which starts a solver process per job.
"""

from __future__ import annotations

from pathlib import Path

from google.longrunning import operations_pb2_grpc
from nats.aio.msg import Msg

from cartage.routing.v1 import routing_service_pb2, routing_service_pb2_grpc
from services.kit.db import create_engine, reachable
from services.kit.messaging import (
    ConsumerSpec,
    OutboxRelay,
    consumer_job,
)
from services.kit.migrations import upgrade_async
from services.kit.operations import OperationsServicer
from services.kit.server import Service
from services.kit.uow import Transaction, UnitOfWork
from services.routing.adapters import events, tables
from services.routing.adapters.repository import RoutingRepository
from services.routing.adapters.solving.planner import Planner
from services.routing.adapters.solving.plans import PlanComparer
from services.routing.api.operations import RoutingOperations, operation_names
from services.routing.api.servicer import RoutingServicer
from services.routing.conversion import Codecs
from services.routing.settings import Settings
from services.routing.use_cases import (
    DecisionUseCases,
    FleetUseCases,
    IncidentUseCases,
    OperationUseCases,
    PlanChanges,
    PlannerSignals,
    PlanningJobs,
    PlanUseCases,
)

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = routing_service_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
OPERATIONS_NAME = "google.longrunning.Operations"
ORDER_CONSUMER = ConsumerSpec(stream=events.ORDER_STREAM, durable="routing-orders",
                              filter_subjects=tuple(events.ORDER_EVENTS))
VEHICLE_CONSUMER = ConsumerSpec(stream=events.STREAM, durable="routing-vehicles",
                                filter_subjects=(events.VEHICLE_STATUS_CHANGED,))


async def migrate(settings: Settings) -> None:
    await upgrade_async(settings.database_url, tables.SCHEMA, MIGRATIONS)


def consumers(uow: UnitOfWork, nats_url: str, jobs: PlanningJobs):
    """The background job that feeds order and vehicle events to the planning jobs."""

    async def on_order(tx: Transaction, msg: Msg) -> None:
        decoded = events.decode_order_event(msg)
        if decoded is not None:
            await jobs.on_order_event(tx, decoded)

    async def on_vehicle(tx: Transaction, msg: Msg) -> None:
        await jobs.on_vehicle_status(tx, events.decode_vehicle_event(msg))

    return consumer_job(uow, nats_url, "routing-consumer",
                        [(ORDER_CONSUMER, on_order), (VEHICLE_CONSUMER, on_vehicle)],
                        own_streams={events.STREAM: events.SUBJECTS})


async def serve(settings: Settings, *, handle_signals: bool = True,
                service_hook: object = None) -> None:
    """Run until SIGTERM/SIGINT (or `service.stop_event`). `service_hook`, when given, is called
    with the Service before it starts (tests use it to learn the port and stop it)."""
    if settings.migrate_on_start:
        await migrate(settings)
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    relay = OutboxRelay(engine, tables.kit, settings.nats_url, name="routing",
                        streams={events.STREAM: events.SUBJECTS})
    uow = UnitOfWork(engine, tables.kit, on_events=relay.wake)
    repository, outgoing, changes = RoutingRepository(), events.RoutingEvents(), PlanChanges()
    codecs, signals = Codecs(), PlannerSignals()
    limit = settings.default_time_limit
    fleet = FleetUseCases(uow, repository, outgoing, codecs)
    plans = PlanUseCases(uow, repository, outgoing, codecs, changes, planner=signals,
                         max_shipments=settings.max_shipments, default_time_limit=limit)
    decisions = DecisionUseCases(uow, repository, outgoing, codecs, changes,
                                 default_time_limit=limit)
    incidents = IncidentUseCases(uow, repository, outgoing, codecs, changes, planner=signals,
                                 default_time_limit=limit)
    jobs = PlanningJobs(uow, repository, outgoing, codecs, changes, PlanComparer(),
                        default_time_limit=limit, osrm_url=settings.osrm_url)
    planner = Planner(jobs, processes=settings.solver_processes)
    signals.connect(planner.wake, planner.cancel)
    store = RoutingOperations(
        OperationUseCases(uow, repository, outgoing, codecs, changes, planner=signals,
                          default_time_limit=limit),
        operation_names())
    servicer = RoutingServicer(fleet, plans, decisions, incidents, store,
                               max_shipments=settings.max_shipments,
                               max_time_limit=settings.max_time_limit)
    operations = OperationsServicer(store.names, store)

    def register(server) -> None:
        routing_service_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)
        operations_pb2_grpc.add_OperationsServicer_to_server(operations, server)

    service = Service(
        name="routing",
        address=settings.grpc_address,
        register=register,
        service_names=[SERVICE_NAME, OPERATIONS_NAME],
        health_checks=[reachable(engine), relay.ready],
        background=[relay.run, planner.run, consumers(uow, settings.nats_url, jobs)],
    )
    if callable(service_hook):
        service_hook(service)
    try:
        await service.run(handle_signals=handle_signals)
    finally:
        await uow.close()
        await engine.dispose()

