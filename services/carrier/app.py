"""The composition root: the carrier service's parts, wired (the kit runs them, `kit.app`).

One process serves CarrierService, relays its outbox to the CARRIER stream, turns the order
service's `order.released` of carrier-mode orders into shipments and tracking's
`milestone.recorded` into on-time figures, sends offers through each carrier's tender channel
(Cartage API, JSON/HTTP, EDI 204 files), and runs the tender deadline job (durable deadlines in
Postgres, claimed with FOR UPDATE SKIP LOCKED) and the EDI inbox job (990 files).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import grpc
from nats.aio.msg import Msg

from cartage.carrier.v1 import carrier_pb2, carrier_service_pb2, carrier_service_pb2_grpc
from services.carrier import conversion
from services.carrier.adapters import tables
from services.carrier.adapters.edi_inbox import EdiInboxPoller
from services.carrier.adapters.events import (
    MILESTONE_RECORDED,
    ORDER_CANCELLED,
    ORDER_RELEASED,
    CarrierEvents,
    cancelled_order,
    carrier_order,
    order_milestone,
)
from services.carrier.adapters.repository import CarrierRepository
from services.carrier.adapters.tender_channels import ChannelRouter, EdiChannel, HttpChannel
from services.carrier.api.servicer import CarrierServicer
from services.carrier.settings import Settings
from services.carrier.use_cases import CatalogUseCases, QuoteUseCases, TenderUseCases
from services.kit.app import Composition, Runtime, ServiceDefinition
from services.kit.events import catalog
from services.kit.jobs import Job
from services.kit.messaging import ConsumerSpec
from services.kit.uow import Transaction

SERVICE_NAME = carrier_service_pb2.DESCRIPTOR.services_by_name["CarrierService"].full_name


def compose(runtime: Runtime) -> Composition:
    settings: Settings = runtime.settings
    repository, events = CarrierRepository(), CarrierEvents()
    catalog_cases = CatalogUseCases(runtime.uow, repository, conversion.CODECS)
    quotes = QuoteUseCases(runtime.uow, repository, base_currency=settings.base_currency,
                           fuel_price_index=Decimal(settings.fuel_price_index),
                           score_ttl_s=settings.score_ttl_s,
                           score_window_days=settings.score_window_days)
    http = HttpChannel(sender_id=settings.edi_sender_id, timeout_s=settings.channel_timeout_s,
                       allow_public=settings.channel_allow_public)
    edi = EdiChannel(runtime.uow, repository, Path(settings.edi_outbox_dir),
                     sender_id=settings.edi_sender_id)
    channels = ChannelRouter({carrier_pb2.TENDER_CHANNEL_API_CALLBACK: http,
                              carrier_pb2.TENDER_CHANNEL_EDI: edi})
    tenders = TenderUseCases(runtime.uow, repository, events, conversion.CODECS, quotes,
                             channels, default_timeout_s=settings.tender_timeout_s)
    inbox = EdiInboxPoller(Path(settings.edi_inbox_dir), tenders.answer_from_carrier,
                           poll_s=settings.edi_poll_s)
    servicer = CarrierServicer(catalog_cases, quotes, tenders,
                               max_csv_bytes=settings.max_csv_bytes)

    def register(server: grpc.aio.Server) -> None:
        carrier_service_pb2_grpc.add_CarrierServiceServicer_to_server(servicer, server)

    async def on_order(tx: Transaction, msg: Msg) -> None:
        event = catalog().decode(msg)
        released = carrier_order(event)
        if released is not None:
            await tenders.shipment_from_order(tx, *released)
        cancelled = cancelled_order(event)
        if cancelled is not None:
            await tenders.order_cancelled(tx, *cancelled)

    async def on_milestone(tx: Transaction, msg: Msg) -> None:
        milestone = order_milestone(catalog().decode(msg))
        if milestone is not None:
            await tenders.order_milestone(tx, *milestone)

    async def deadlines(stop: asyncio.Event) -> None:
        """Expire due tenders until stopped; a full batch is followed at once by the next."""
        while not stop.is_set():
            if await tenders.expire_due() == 100:
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=settings.deadline_poll_s)
            except TimeoutError:
                pass

    return Composition(
        register=register,
        service_names=[SERVICE_NAME],
        # In stream order (one lane): an order's cancellation after its release must find the
        # shipment the release made. A transaction per event: each reads what the last wrote.
        consumers=[(ConsumerSpec.of("carrier-orders", ORDER_RELEASED, ORDER_CANCELLED,
                                    concurrency=1, batch_transaction=False), on_order),
                   (ConsumerSpec.of("carrier-milestones", MILESTONE_RECORDED), on_milestone)],
        # With several workers one reads the EDI inbox (two would race for each file).
        jobs=[Job("tender-deadlines", deadlines),
              *([Job("edi-inbox", inbox.run)] if settings.worker_index == 0 else [])],
        close=http.aclose,
    )


DEFINITION = ServiceDefinition(
    name="carrier", module=__name__, settings=Settings, tables=tables.kit,
    migrations=Path(__file__).parent / "adapters" / "migrations", stream="CARRIER",
    compose=compose)
migrate = DEFINITION.migrate
serve = DEFINITION.serve
