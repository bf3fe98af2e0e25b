"""Helpers the tests share: a sample order, gRPC stubs with a caller identity, stream reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import nats
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from google.type import latlng_pb2, money_pb2, postal_address_pb2
from nats.js import api as js_api

from cartage.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from cartage.type.v1 import party_pb2, stop_pb2, time_window_pb2
from services.kit.events import catalog


def ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def sample_order(reference: str | None = None, **overrides: Any) -> order_pb2.Order:
    day = 1_893_456_000  # 2030-01-01T00:00:00Z
    def stop(lat: float, lng: float, start: int, end: int) -> stop_pb2.Stop:
        return stop_pb2.Stop(
            address=postal_address_pb2.PostalAddress(
                region_code="DE", postal_code="10115", locality="Berlin",
                address_lines=["Invalidenstr. 1"]),
            location=latlng_pb2.LatLng(latitude=lat, longitude=lng),
            time_windows=[time_window_pb2.TimeWindow(start_time=ts(start), end_time=ts(end))],
            service_duration=duration_pb2.Duration(seconds=900),
        )
    order = order_pb2.Order(
        external_reference=reference or f"PO-{uuid.uuid4().hex[:12]}",
        shipper=party_pb2.Party(name="Acme GmbH"),
        consignee=party_pb2.Party(name="Beta AG"),
        pickup=stop(52.52, 13.40, day + 8 * 3600, day + 10 * 3600),
        delivery=stop(52.40, 13.05, day + 12 * 3600, day + 16 * 3600),
        line_items=[order_pb2.LineItem(
            sku="SKU-1", description="pallet of tins", quantity=10, weight_kg=420.5,
            volume_m3=1.2, declared_value=money_pb2.Money(currency_code="EUR", units=1200))],
        priority=order_pb2.PRIORITY_NORMAL,
        required_skills=["tail_lift"],
        notes="ring twice",
    )
    for key, value in overrides.items():
        setattr(order, key, value)
    return order


def metadata(client_id: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return (("x-cartage-client-id", client_id), ("x-cartage-scopes", "orders.write"),
            *extra.items())


class OrderClient:
    """An OrderService stub bound to one caller identity."""

    def __init__(self, channel: grpc.aio.Channel, client_id: str) -> None:
        self.stub = order_service_pb2_grpc.OrderServiceStub(channel)
        self.client_id = client_id

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.stub, method)

        async def invoke(request: Any, **headers: str) -> Any:
            return await call(request, metadata=metadata(self.client_id, **headers), timeout=30)

        return invoke

    async def create(self, order: order_pb2.Order | None = None, request_id: str = ""
                     ) -> order_pb2.Order:
        return await self.CreateOrder(order_service_pb2.CreateOrderRequest(
            order=order or sample_order(), request_id=request_id))


def new_client_id() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"


def rich_status(error: grpc.aio.AioRpcError) -> tuple[status_pb2.Status, list[Any]]:
    """The google.rpc.Status in the trailers, and its unpacked details."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no rich status details on {error.code()}: {error.details()}"
    status = status_pb2.Status.FromString(raw)
    details = []
    for packed in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                details.append(message)
    return status, details


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    _, details = rich_status(error)
    found: dict[str, str] = {}
    for detail in details:
        if isinstance(detail, error_details_pb2.BadRequest):
            for violation in detail.field_violations:
                found[violation.field] = violation.description
    return found


def reason(error: grpc.aio.AioRpcError) -> str:
    _, details = rich_status(error)
    return next(d.reason for d in details if isinstance(d, error_details_pb2.ErrorInfo))


async def stream_events(nats_url: str, stream: str = "ORDER") -> list[tuple[str, Any, str]]:
    """Every message in the stream as (subject, decoded event, Nats-Msg-Id)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        if total == 0:
            return []
        sub = await js.pull_subscribe(
            "", stream=stream,
            config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL,
                                         ack_policy=js_api.AckPolicy.NONE,
                                         filter_subjects=list(catalog().streams()[stream])),
        )
        out: list[tuple[str, Any, str]] = []
        while len(out) < total:
            try:
                batch = await sub.fetch(min(1000, total - len(out)), timeout=5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for msg in batch:
                event = catalog().decode(msg)
                out.append((msg.subject, event, (msg.headers or {}).get("Nats-Msg-Id", "")))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def events_of(nats_url: str, client_id: str) -> list[tuple[str, Any, str]]:
    return [e for e in await stream_events(nats_url) if e[1].order.client_id == client_id]


class RunningService:
    """A service (its `kit.app.ServiceDefinition`) started in this process on the settings
    given; `stop()` ends it like SIGTERM would. `async with` starts and stops it."""

    def __init__(self, definition: Any, settings: Any) -> None:
        self.definition = definition
        self.settings = settings
        self.task: asyncio.Task[None] | None = None
        self.service: Any = None
        self.address = ""

    async def start(self) -> RunningService:
        built: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self.definition.serve(
            self.settings, handle_signals=False, service_hook=built.set_result))
        done, _ = await asyncio.wait([built, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            self.task.result()  # raises what stopped it before it was built
        self.service = built.result()
        self.address = f"127.0.0.1:{await self.service.started()}"
        return self

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.service.stop_event.set()
            await self.task

    async def __aenter__(self) -> RunningService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def health(address: str, service: str = "") -> str:
    """The gRPC health status name (SERVING, NOT_SERVING) of a service at `address`."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as ch:
        response = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


async def eventually(check: Any, seconds: float = 15.0, interval: float = 0.1) -> Any:
    """Poll an async `check` until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(interval)


@contextmanager
def raises_rpc(code: grpc.StatusCode) -> Iterator[list[grpc.aio.AioRpcError]]:
    caught: list[grpc.aio.AioRpcError] = []
    try:
        yield caught
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
        caught.append(error)
    else:
        raise AssertionError(f"expected {code}, the call succeeded")
