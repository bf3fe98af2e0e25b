"""The composition root: the routing service's parts, wired (the kit runs them, `kit.app`).

One process serves RoutingService and google.longrunning.Operations on one port, relays its
outbox to the ROUTING stream, consumes the order service's events and its own vehicle status
changes, and runs the planner, which starts a solver process per job.
"""

from __future__ import annotations

from pathlib import Path

from google.longrunning import operations_pb2_grpc
from nats.aio.msg import Msg

from cartage.routing.v1 import routing_service_pb2, routing_service_pb2_grpc
from services.kit.app import Composition, Runtime, ServiceDefinition
from services.kit.jobs import Job
from services.kit.messaging import ConsumerSpec
from services.kit.operations import OperationsServicer
from services.kit.uow import Transaction
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

SERVICE_NAME = routing_service_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
OPERATIONS_NAME = "google.longrunning.Operations"


def compose(runtime: Runtime) -> Composition:
    settings: Settings = runtime.settings
    uow = runtime.uow
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

    async def on_order(tx: Transaction, msg: Msg) -> None:
        decoded = events.decode_order_event(msg)
        if decoded is not None:
            await jobs.on_order_event(tx, decoded)

    async def on_vehicle(tx: Transaction, msg: Msg) -> None:
        decoded = events.decode_vehicle_event(msg)
        if decoded is not None:
            await jobs.on_vehicle_status(tx, decoded)

    async def on_tracking(tx: Transaction, msg: Msg) -> None:
        decoded = events.decode_tracking_event(msg)
        if isinstance(decoded, events.MilestoneRecorded):
            await jobs.on_milestone(tx, decoded)
        elif decoded is not None:
            await jobs.on_late_risk(tx, decoded)

    return Composition(
        register=register,
        service_names=[SERVICE_NAME, OPERATIONS_NAME],
        # Both in stream order (one lane): an order's created/released/updated/cancelled and a
        # vehicle's status changes decide replans by what came before (the read model
        # ignores a stale version, the replan triggers do not), and both replan the client's
        # active plan, which a second lane would race for. A transaction per event: each
        # reads the order versions and plans the previous one wrote.
        consumers=[
            (ConsumerSpec.of("routing-orders", *events.ORDER_SUBJECTS, concurrency=1,
                             batch_transaction=False), on_order),
            (ConsumerSpec.of("routing-vehicles", events.VEHICLE_STATUS_CHANGED, concurrency=1,
                             batch_transaction=False), on_vehicle),
            # One lane too: a late risk reads the milestones recorded before it.
            (ConsumerSpec.of("routing-tracking", *events.TRACKING_SUBJECTS, concurrency=1,
                             batch_transaction=False), on_tracking),
        ],
        jobs=[Job("planner", planner.run)],
    )


DEFINITION = ServiceDefinition(
    name="routing", module=__name__, settings=Settings, tables=tables.kit,
    migrations=Path(__file__).parent / "adapters" / "migrations", stream="ROUTING",
    compose=compose)
migrate = DEFINITION.migrate
serve = DEFINITION.serve
