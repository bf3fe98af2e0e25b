"""Helpers the tests share: a sample order, gRPC stubs with a caller identity, stream reads."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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


async def eventually(check: Any, seconds: float = 15.0, interval: float = 0.1, *,
                     until: Callable[[Any], object] = bool) -> Any:
    """Poll an async `check` until `until(result)` holds (by default: until the result is
    truthy) and return that result. On timeout raise AssertionError naming what it last saw:
    a wait that runs out is a failure, never a falsy value a caller might ignore.

    Exceptions from `check` propagate at once; a check that expects transient errors
    catches them itself."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    polls = 0
    while True:
        result = await check()
        polls += 1
        if until(result):
            return result
        if loop.time() > deadline:
            seen = repr(result)
            if len(seen) > 500:
                seen = seen[:500] + f"... ({len(seen)} chars)"
            raise AssertionError(
                f"not true within {seconds:g}s ({polls} polls of {_name(check)}): "
                f"last saw {seen}")
        await asyncio.sleep(interval)


def _name(check: Any) -> str:
    code = getattr(check, "__code__", None)
    name = getattr(check, "__qualname__", repr(check))
    if code is not None:
        name += f" at {Path(code.co_filename).name}:{code.co_firstlineno}"
    return name


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


@dataclass
class Call:
    """One CreateOrder of an `OrderLoad`: its key, and what came back in which phase."""

    request_id: str
    reference: str
    phase: str  # the load's phase when the outcome arrived
    name: str = ""  # the order, when acknowledged
    error: grpc.StatusCode | None = None
    details: str = ""


class OrderLoad:
    """`callers` concurrent callers creating orders, each call with its own request_id, until
    `stop()` (or `max_calls`). Every outcome is kept with the phase it arrived in (the test
    moves `phase` along, e.g. "before kill" -> "after kill"), so an error is counted, never
    swallowed; after an error a caller pauses briefly and goes on."""

    def __init__(self, client: OrderClient, callers: int, *, prefix: str,
                 max_calls: int = 50_000, pause_after_error: float = 0.05) -> None:
        self.client = client
        self.callers = callers
        self.prefix = prefix
        self.max_calls = max_calls
        self.pause_after_error = pause_after_error
        self.phase = "before"
        self.calls: list[Call] = []
        self._started = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> OrderLoad:
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(self.callers)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def __aenter__(self) -> OrderLoad:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _caller(self) -> None:
        while not self._stop.is_set() and self._started < self.max_calls:
            n = self._started
            self._started += 1
            call = Call(f"{self.prefix}-rq-{n}", f"{self.prefix}-{n}", self.phase)
            try:
                order = await self.client.create(sample_order(call.reference),
                                                 request_id=call.request_id)
                call.name = order.name
            except grpc.aio.AioRpcError as error:
                call.error, call.details = error.code(), (error.details() or "")[:200]
            call.phase = self.phase
            self.calls.append(call)
            if call.error is not None:
                await asyncio.sleep(self.pause_after_error)

    @property
    def acknowledged(self) -> list[Call]:
        return [c for c in self.calls if c.error is None]

    def ok(self, phase: str | None = None) -> int:
        return sum(1 for c in self.acknowledged if phase in (None, c.phase))

    def errors(self, phase: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.error is not None and phase in (None, c.phase)]

    def summary(self) -> str:
        """Per phase: acknowledged calls and errors by code (printed by the tests, -s shows it)."""
        phases = dict.fromkeys(c.phase for c in self.calls)
        parts = []
        for phase in phases:
            codes = Counter(c.error.name for c in self.errors(phase) if c.error is not None)
            parts.append(f"{phase}: {self.ok(phase)} ok, {sum(codes.values())} errors"
                         + (f" {dict(codes)}" if codes else ""))
        return "; ".join(parts)


async def publish_events(nats_url: str, *events: Any, redelivery: bool = False) -> None:
    """Publish contract events on their stream as our relay does (Nats-Msg-Id = event id, the
    event-type header). With `redelivery`, the stream's duplicate window is shrunk meanwhile
    so that JetStream keeps the copies: what a consumer sees when an ack was lost or a
    producer retried past the window, the same message id again, which only a consumer's
    inbox can turn into a no-op."""
    import dataclasses

    from services.kit.events import EVENT_TYPE_HEADER
    from services.kit.relay import ensure_stream

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        streams = {catalog().of(event).stream for event in events}
        for stream in streams:
            await ensure_stream(js, stream, catalog().streams()[stream], update=False)
        configs = {s: (await js.stream_info(s)).config for s in streams}
        if redelivery:
            for config in configs.values():
                await js.update_stream(dataclasses.replace(config, duplicate_window=0.2))
            await asyncio.sleep(0.5)
        try:
            for event in events:
                kind = catalog().of(event)
                await js.publish(kind.subject, event.SerializeToString(), headers={
                    "Nats-Msg-Id": event.event_id, EVENT_TYPE_HEADER: kind.name})
        finally:
            if redelivery:
                for config in configs.values():
                    await js.update_stream(config)
    finally:
        await nc.close()
