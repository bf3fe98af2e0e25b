"""Fixtures for the routing service: the service on the shared Postgres + NATS (`stack`), next
to the order service (which owns the ORDER stream routing consumes), plus request builders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import nats
import pytest
from google.longrunning import operations_pb2_grpc, operations_proto_pb2
from google.protobuf import duration_pb2, timestamp_pb2
from google.type import latlng_pb2
from nats.js import api as js_api

from cartage.routing.v1 import (
    decision_pb2,
    route_plan_pb2,
    routing_service_pb2,
    routing_service_pb2_grpc,
    vehicle_pb2,
)
from cartage.type.v1 import stop_pb2, time_window_pb2
from services.kit.events import catalog
from tests.support import new_client_id

DAY = 1_893_456_000  # 2030-01-01T00:00:00Z
DEPOT = (52.52, 13.40)


@pytest.fixture
async def routing_channel(routing_address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(routing_address) as channel:
        yield channel


class RoutingClient:
    """RoutingService and Operations stubs bound to one caller identity."""

    def __init__(self, channel: grpc.aio.Channel, client_id: str | None = None) -> None:
        self.client_id = client_id or new_client_id()
        self.stub = routing_service_pb2_grpc.RoutingServiceStub(channel)
        self.operations = operations_pb2_grpc.OperationsStub(channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-cartage-client-id", self.client_id), ("x-cartage-scopes", "routing.write"))

    def __getattr__(self, method: str) -> Any:
        stub = self.operations if method.endswith("Operation") or method == "ListOperations" \
            else self.stub
        call = getattr(stub, method)

        async def invoke(request: Any, **headers: str) -> Any:
            return await call(request, metadata=(*self.metadata, *headers.items()), timeout=60)

        return invoke

    def watch(self, name: str) -> Any:
        return self.stub.WatchRoutePlan(routing_service_pb2.WatchRoutePlanRequest(name=name),
                                        metadata=self.metadata, timeout=60)

    async def vehicle(self, vehicle_id: str, **fields: Any) -> vehicle_pb2.Vehicle:
        return await self.CreateVehicle(routing_service_pb2.CreateVehicleRequest(
            vehicle_id=vehicle_id, vehicle=make_vehicle(**fields)))

    async def plan(self, **fields: Any) -> operations_proto_pb2.Operation:
        fields.setdefault("time_limit", duration_pb2.Duration(seconds=1))
        return await self.PlanRoutes(routing_service_pb2.PlanRoutesRequest(**fields))

    async def wait(self, operation: operations_proto_pb2.Operation, seconds: int = 60
                   ) -> operations_proto_pb2.Operation:
        """WaitOperation until it is done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not operation.done and loop.time() < deadline:
            operation = await self.WaitOperation(operations_proto_pb2.WaitOperationRequest(
                name=operation.name, timeout=duration_pb2.Duration(seconds=10)))
        assert operation.done, f"{operation.name} not done after {seconds}s"
        return operation

    async def planned(self, **fields: Any) -> route_plan_pb2.RoutePlan:
        """PlanRoutes, wait, and return the plan (the operation's response)."""
        operation = await self.wait(await self.plan(**fields))
        assert operation.HasField("response"), operation.error
        plan = route_plan_pb2.RoutePlan()
        operation.response.Unpack(plan)
        return plan

    async def set_policy(self, domain: int, level: int, **guardrails: float) -> None:
        await self.UpdateAutonomyPolicy(routing_service_pb2.UpdateAutonomyPolicyRequest(
            autonomy_policy=decision_pb2.AutonomyPolicy(domains=[decision_pb2.DomainPolicy(
                domain=domain, level=level, **guardrails)])))


@pytest.fixture
def routing(routing_channel: grpc.aio.Channel) -> RoutingClient:
    return RoutingClient(routing_channel)


# --------------------------------------------------------------------------- builders


def ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def window(start: int, end: int) -> time_window_pb2.TimeWindow:
    return time_window_pb2.TimeWindow(start_time=ts(start), end_time=ts(end))


def point(lat: float, lng: float) -> latlng_pb2.LatLng:
    return latlng_pb2.LatLng(latitude=lat, longitude=lng)


def make_vehicle(*, depot: tuple[float, float] = DEPOT, start: int = DAY + 6 * 3600,
                 end: int = DAY + 20 * 3600, weight: float = 1000.0,
                 skills: tuple[str, ...] = (), open_route: bool = False,
                 **fields: Any) -> vehicle_pb2.Vehicle:
    vehicle = vehicle_pb2.Vehicle(
        display_name="truck",
        capacities=[vehicle_pb2.Quantity(dimension=vehicle_pb2.DIMENSION_WEIGHT_KG,
                                         amount=weight)],
        skills=list(skills),
        start_depot=vehicle_pb2.Depot(location=point(*depot), label="depot"),
        shift=window(start, end),
        **fields,
    )
    if not open_route:
        vehicle.end_depot.CopyFrom(vehicle_pb2.Depot(location=point(*depot)))
    return vehicle


def stop(lat: float, lng: float, *windows: tuple[int, int], service_s: int = 300
         ) -> stop_pb2.Stop:
    return stop_pb2.Stop(location=point(lat, lng),
                         time_windows=[window(a, b) for a, b in windows],
                         service_duration=duration_pb2.Duration(seconds=service_s))


def shipment(shipment_id: str, lat: float, lng: float, *, weight: float = 100.0,
             windows: tuple[tuple[int, int], ...] = ((DAY + 8 * 3600, DAY + 18 * 3600),),
             pickup: stop_pb2.Stop | None = None, **fields: Any
             ) -> routing_service_pb2.Shipment:
    message = routing_service_pb2.Shipment(
        id=shipment_id, delivery=stop(lat, lng, *windows),
        demands=[vehicle_pb2.Quantity(dimension=vehicle_pb2.DIMENSION_WEIGHT_KG,
                                      amount=weight)], **fields)
    if pickup is not None:
        message.pickup.CopyFrom(pickup)
    return message


def unique(prefix: str = "v") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- events


async def routing_events(nats_url: str, client_id: str) -> list[tuple[str, Any]]:
    """Every routing event of one client so far, as (subject, decoded event)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            total = (await js.stream_info("ROUTING")).state.messages
        except nats.js.errors.NotFoundError:
            return []
        if total == 0:
            return []
        sub = await js.pull_subscribe("", stream="ROUTING", config=js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.ALL, ack_policy=js_api.AckPolicy.NONE))
        out: list[tuple[str, Any]] = []
        seen = 0
        while seen < total:
            try:
                batch = await sub.fetch(min(1000, total - seen), timeout=5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for msg in batch:
                seen += 1
                event = catalog().decode(msg)
                if event.client_id == client_id:
                    out.append((msg.subject, event))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


@pytest.fixture
def nats_url(stack: Any) -> Iterator[str]:
    yield stack.nats_url
