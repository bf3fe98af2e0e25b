"""The composition root: the tracking service's parts, wired (the kit runs them, `kit.app`)."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from google.longrunning import operations_pb2_grpc
from nats.aio.msg import Msg

from cartage.tracking.v1 import (
    tracking_service_pb2,
    tracking_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from services.kit.app import Composition, Runtime, ServiceDefinition
from services.kit.clock import utc_now
from services.kit.events import catalog
from services.kit.jobs import Job
from services.kit.messaging import ConsumerSpec
from services.kit.operations import OperationsServicer
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
from services.tracking.adapters.webhook_payloads import public
from services.tracking.adapters.webhook_sender import Cipher, Sender, resolve_checked
from services.tracking.adapters.webhook_store import WebhookStore
from services.tracking.api.servicer import TrackingServicer
from services.tracking.api.webhook_operations import ReplayOperations
from services.tracking.api.webhooks import WebhookServicer
from services.tracking.domain.eta import Speed
from services.tracking.domain.webhooks import Target
from services.tracking.settings import Settings
from services.tracking.use_cases.geofences import Geofences
from services.tracking.use_cases.milestones import Milestones
from services.tracking.use_cases.plans import ReadModels
from services.tracking.use_cases.positions import Positions, Rules
from services.tracking.use_cases.views import Views
from services.tracking.use_cases.webhooks import Dispatcher, Endpoints, Policy, fan_out

SERVICE_NAME = tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name
WEBHOOK_SERVICE = webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name
log = logging.getLogger(__name__)


def webhook_consumer_specs() -> list[ConsumerSpec]:
    """One durable per domain stream, over every event type the contracts declare on it
    (`kit.events`' catalog: a new service's events are delivered without a change here)."""
    by_stream: dict[str, list[str]] = {}
    for kind in catalog().types:
        by_stream.setdefault(kind.stream, []).append(kind.subject)
    return [ConsumerSpec(stream=stream, durable=f"tracking-webhooks-{stream.lower()}",
                         filter_subjects=tuple(sorted(subjects)), batch_transaction=True)
            for stream, subjects in sorted(by_stream.items())]


def compose_webhooks(runtime: Runtime, settings: Settings) -> tuple[
        WebhookServicer, OperationsServicer, list[tuple[ConsumerSpec, Any]], Job, Sender]:
    key = settings.webhook_secret_key
    if not key:
        log.warning("TRACKING_WEBHOOK_SECRET_KEY is not set: webhook secrets are encrypted "
                    "with a random key that dies with this process")
        key = secrets.token_urlsafe(48)
    if settings.webhook_allow_loopback:
        log.warning("WEBHOOK_ALLOW_LOOPBACK is on: webhooks go to loopback receivers ONLY "
                    "(tests and make run); never set it in production")
    store, cipher = WebhookStore(), Cipher(key)
    sender = Sender(allow_loopback=settings.webhook_allow_loopback)
    policy = Policy(allow_loopback=settings.webhook_allow_loopback,
                    schedule_scale=settings.webhook_schedule_scale,
                    rotation_grace=timedelta(seconds=settings.webhook_rotation_grace_s),
                    lease_s=settings.webhook_lease_s)
    async def resolve_check(target: Target) -> None:
        await resolve_checked(target, allow_loopback=settings.webhook_allow_loopback)

    endpoints = Endpoints(runtime.uow, store, cipher, utc_now, policy, resolve_check)
    dispatcher = Dispatcher(runtime.uow, store, cipher, sender, utc_now, policy,
                            per_endpoint=settings.webhook_per_endpoint,
                            overall=settings.webhook_concurrency,
                            poll_s=settings.webhook_poll_s)

    async def deliver_event(tx: Transaction, msg: Msg) -> None:
        event = catalog().decode(msg)
        shown = public(event) if event is not None else None
        if shown is not None and await fan_out(tx, store, shown, utc_now()):
            dispatcher.wake()

    consumers = [(spec, deliver_event) for spec in webhook_consumer_specs()]
    replays = ReplayOperations(endpoints)
    operations = OperationsServicer(replays.names, replays)
    return (WebhookServicer(endpoints, replays.names), operations, consumers,
            Job("webhook-dispatcher", dispatcher.run), sender)


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

    webhooks, operations, webhook_consumers, dispatcher, sender = compose_webhooks(
        runtime, settings)

    def register(server: grpc.aio.Server) -> None:
        tracking_service_pb2_grpc.add_TrackingServiceServicer_to_server(servicer, server)
        webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(webhooks, server)
        operations_pb2_grpc.add_OperationsServicer_to_server(operations, server)

    return Composition(
        register=register,
        service_names=[SERVICE_NAME, WEBHOOK_SERVICE, "google.longrunning.Operations"],
        jobs=[dispatcher],
        close=sender.close,
        # One lane each, a transaction per event: a plan replaces the previous one, and an
        # order's later event carries its newer content.
        consumers=[
            (ConsumerSpec.of("tracking-orders", *ORDER_SUBJECTS, concurrency=1,
                             batch_transaction=False), follow_orders),
            (ConsumerSpec.of("tracking-plans", *PLAN_SUBJECTS, concurrency=1,
                             batch_transaction=False), follow_plans),
            *webhook_consumers,
        ],
    )


DEFINITION = ServiceDefinition(
    name="tracking", module=__name__, settings=Settings, tables=tables.kit,
    migrations=Path(__file__).parent / "adapters" / "migrations", stream="TRACKING",
    compose=compose)
migrate = DEFINITION.migrate
serve = DEFINITION.serve
