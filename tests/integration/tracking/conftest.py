"""Fixtures for the tracking service: the service on the session's Postgres + NATS next to the
order service (whose orders it tracks), a stub bound to one caller, and a way to make a route
plan active the way the routing service announces one (a `route.planned` event on NATS)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import timestamp_pb2
from google.type import latlng_pb2

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import events_pb2 as routing_events
from cartage.routing.v1 import route_plan_pb2
from cartage.tracking.v1 import tracking_pb2, tracking_service_pb2, tracking_service_pb2_grpc
from services.kit.events import EVENT_TYPE_HEADER, catalog
from services.kit.relay import ensure_stream
from tests.support import OrderClient, eventually, new_client_id, sample_order


@pytest.fixture
async def tracking_channel(tracking_address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(tracking_address) as channel:
        yield channel


class TrackingClient:
    """TrackingService stubs bound to one caller identity (and its OrderService)."""

    def __init__(self, channel: grpc.aio.Channel, orders: OrderClient) -> None:
        self.channel = channel
        self.stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        self.orders = orders
        self.client_id = orders.client_id

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-cartage-client-id", self.client_id), ("x-cartage-scopes", "tracking.write"))

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.stub, method)

        async def invoke(request: Any, **headers: str) -> Any:
            return await call(request, metadata=(*self.metadata, *headers.items()), timeout=30)

        return invoke

    async def batch(self, *positions: tracking_pb2.Position
                    ) -> tracking_service_pb2.RecordPositionsResponse:
        return await self.BatchRecordPositions(
            tracking_service_pb2.BatchRecordPositionsRequest(positions=positions))

    async def tracked_order(self, order: order_pb2.Order | None = None) -> str:
        """An order of this client, once the tracking service has its record."""
        created = await self.orders.create(order or sample_order())
        order_id = created.name.removeprefix("orders/")

        async def tracked() -> bool:
            try:
                await self.GetTracking(tracking_service_pb2.GetTrackingRequest(
                    name=f"orders/{order_id}/tracking"))
                return True
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return False

        await eventually(tracked)
        return order_id

    async def tracking(self, order_id: str) -> tracking_pb2.Tracking:
        return await self.GetTracking(tracking_service_pb2.GetTrackingRequest(
            name=f"orders/{order_id}/tracking"))


@pytest.fixture
async def tracking(tracking_channel: grpc.aio.Channel, channel: grpc.aio.Channel
                   ) -> TrackingClient:
    return TrackingClient(tracking_channel, OrderClient(channel, new_client_id()))


NOW = datetime.now(UTC).replace(microsecond=0)


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def position(vehicle: str, moment: datetime, lat: float, lng: float, **fields: Any
             ) -> tracking_pb2.Position:
    return tracking_pb2.Position(vehicle=f"vehicles/{vehicle}", time=ts(moment),
                                 location=latlng_pb2.LatLng(latitude=lat, longitude=lng),
                                 **fields)


async def publish_plan(nats_url: str, client_id: str,
                       routes: dict[str, list[tuple[str, str, float, float, int]]]) -> None:
    """Announce an active plan: per vehicle id, its stops as (order id, 'pickup'|'delivery',
    lat, lng, service seconds), the way the routing service publishes `route.planned`."""
    plan = route_plan_pb2.RoutePlan(name=f"routePlans/{uuid.uuid4().hex}",
                                    state=route_plan_pb2.RoutePlan.STATE_ACTIVE)
    for vehicle, stops in routes.items():
        route = plan.routes.add(vehicle=f"vehicles/{vehicle}")
        for order_id, stop_id, lat, lng, service_s in stops:
            kind = (route_plan_pb2.RouteStop.KIND_PICKUP if stop_id == "pickup"
                    else route_plan_pb2.RouteStop.KIND_DELIVERY)
            start = NOW + timedelta(hours=1)
            route.stops.add(shipment=f"orders/{order_id}", kind=kind,
                            location=latlng_pb2.LatLng(latitude=lat, longitude=lng),
                            arrival_time=ts(start), service_start_time=ts(start),
                            departure_time=ts(start + timedelta(seconds=service_s)))
    event = routing_events.RoutePlannedEvent(event_id=uuid.uuid4().hex, client_id=client_id,
                                             route_plan=plan)
    event.event_time.GetCurrentTime()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, "ROUTING", catalog().streams()["ROUTING"], update=False)
        await js.publish("route.planned", event.SerializeToString(), headers={
            "Nats-Msg-Id": event.event_id,
            EVENT_TYPE_HEADER: catalog().of(event).name})
    finally:
        await nc.close()


async def known_vehicle(client: TrackingClient, vehicle: str, lat: float, lng: float) -> None:
    """Wait until the plan event made `vehicle` known (a position for it is accepted)."""

    async def accepted() -> bool:
        try:
            await client.batch(position(vehicle, NOW - timedelta(days=1), lat, lng))
            return True
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False

    await eventually(accepted)
