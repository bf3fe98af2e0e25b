"""The composition root: the tracking service's parts, wired (the kit runs them, `kit.app`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from nats.aio.msg import Msg

from cartage.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc
from services.kit.app import Composition, Runtime, ServiceDefinition
from services.kit.clock import utc_now
from services.kit.events import catalog
from services.kit.messaging import ConsumerSpec
from services.kit.uow import Transaction
from services.tracking import conversion
from services.tracking.adapters import tables
from services.tracking.adapters.events import (
    ORDER_SUBJECTS,
    PLAN_SUBJECTS,
    TrackingEvents,
    order_of,
    plan_of,
    vehicle_of,
)
from services.tracking.adapters.repository import TrackingStore
from services.tracking.api.servicer import TrackingServicer
from services.tracking.domain.eta import Speed
from services.tracking.settings import Settings
from services.tracking.use_cases.geofences import Geofences
from services.tracking.use_cases.milestones import Milestones
from services.tracking.use_cases.plans import ReadModels
from services.tracking.use_cases.positions import Positions, Rules
from services.tracking.use_cases.views import Views

SERVICE_NAME = tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name


def compose(runtime: Runtime) -> Composition:
    settings: Settings = runtime.settings
    store, events, codecs = TrackingStore(), TrackingEvents(), conversion.CODECS
    clock = utc_now
    geofences = Geofences(runtime.uow, store, clock, stop_radius_m=settings.stop_fence_radius_m,
                          dwell=timedelta(seconds=settings.dwell_s),
                          stop_body=conversion.stop_fence_body)
    milestones = Milestones(runtime.uow, store, events, clock)
    rules = Rules(free_time=timedelta(seconds=settings.free_time_s),
                  eta_threshold=timedelta(seconds=settings.eta_threshold_s),
                  speed=Speed(settings.eta_speed_kmh / 3.6, settings.eta_road_factor))
    positions = Positions(runtime.uow, store, events, codecs, geofences, milestones, rules,
                          clock)
    views = Views(runtime.uow, store, milestones, codecs, clock,
                  settings.link_secret.encode())
    read_models = ReadModels(store, codecs, geofences, clock)
    servicer = TrackingServicer(positions, milestones, geofences, views,
                                max_polygon_vertices=settings.max_polygon_vertices,
                                watch_interval_s=settings.watch_interval_s)

    async def follow_orders(tx: Transaction, msg: Msg) -> None:
        order = order_of(catalog().decode(msg))
        if order is not None:
            await read_models.order_changed(tx, *order)

    async def follow_plans(tx: Transaction, msg: Msg) -> None:
        event = catalog().decode(msg)
        plan = plan_of(event)
        if plan is not None:
            await read_models.plan_active(tx, *plan)
        vehicle = vehicle_of(event)
        if vehicle is not None:
            await read_models.vehicles_seen(tx, vehicle[0], [vehicle[1]])

    return Composition(
        register=lambda server: tracking_service_pb2_grpc.add_TrackingServiceServicer_to_server(
            servicer, server),
        service_names=[SERVICE_NAME],
        # One lane each, a transaction per event: a plan replaces the previous one, and an
        # order's later event carries its newer content.
        consumers=[
            (ConsumerSpec.of("tracking-orders", *ORDER_SUBJECTS, concurrency=1,
                             batch_transaction=False), follow_orders),
            (ConsumerSpec.of("tracking-plans", *PLAN_SUBJECTS, concurrency=1,
                             batch_transaction=False), follow_plans),
        ],
    )


DEFINITION = ServiceDefinition(
    name="tracking", module=__name__, settings=Settings, tables=tables.kit,
    migrations=Path(__file__).parent / "adapters" / "migrations", stream="TRACKING",
    compose=compose)
migrate = DEFINITION.migrate
serve = DEFINITION.serve
