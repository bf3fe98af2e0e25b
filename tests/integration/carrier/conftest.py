"""Fixtures for the carrier service: gRPC clients bound to a shipper or a carrier identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from cartage.carrier.v1 import carrier_service_pb2 as pb
from cartage.carrier.v1 import carrier_service_pb2_grpc
from tests.carrier_samples import carrier, rate_card, shipment
from tests.support import new_client_id


@pytest.fixture
async def carrier_channel(carrier_address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(carrier_address, options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        yield channel


class CarrierClient:
    """CarrierService bound to one caller (a shipper, or a carrier's own OAuth client)."""

    def __init__(self, channel: grpc.aio.Channel, client_id: str | None = None) -> None:
        self.client_id = client_id or new_client_id()
        self.stub = carrier_service_pb2_grpc.CarrierServiceStub(channel)

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.stub, method)

        async def invoke(request: Any, **headers: str) -> Any:
            metadata = (("x-cartage-client-id", self.client_id), *headers.items())
            return await call(request, metadata=metadata, timeout=60)

        return invoke

    async def carrier(self, name: str = "Nordfracht", scac: str = "NORF", **fields: Any) -> Any:
        return await self.CreateCarrier(pb.CreateCarrierRequest(
            carrier=carrier(name, scac, **fields)))

    async def card(self, parent: str, *lanes: Any, **fields: Any) -> Any:
        return await self.CreateRateCard(pb.CreateRateCardRequest(
            parent=parent, rate_card=rate_card(*lanes, **fields)))

    async def shipment(self, **fields: Any) -> Any:
        return await self.CreateShipment(pb.CreateShipmentRequest(shipment=shipment(**fields)))

    async def tender(self, name: str, seconds: float = 60, **fields: Any) -> Any:
        timeout = duration_pb2.Duration()
        timeout.FromNanoseconds(int(seconds * 1e9))
        return await self.TenderShipment(pb.TenderShipmentRequest(
            name=name, response_timeout=timeout, **fields))


@pytest.fixture
def shipper(carrier_channel: grpc.aio.Channel) -> CarrierClient:
    return CarrierClient(carrier_channel)


@pytest.fixture
def client_of(carrier_channel: grpc.aio.Channel) -> Any:
    def make(client_id: str | None = None) -> CarrierClient:
        return CarrierClient(carrier_channel, client_id)

    return make
