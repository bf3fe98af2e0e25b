"""The carrier demo of `make run`: a carrier's own OAuth client (`demo-carrier`, scope
`tenders.respond`), two demo carriers of the demo partner with a small Hamburg -> Berlin rate
card (one of them answers as `demo-carrier`), and the request bodies of the README's session."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from google.protobuf import json_format
from google.type import date_pb2

DEMO_CARRIER_CLIENT = "demo-carrier"
CARRIER_SCOPES = ["tenders.respond"]

DEMO_CSV = """lane_id,origin_country,origin_postal_prefix,destination_country,\
destination_postal_prefix,mode,transit_days,pricing,rate,weight_from_kg,weight_to_kg,\
minimum_charge,capacity_loads_per_day
HH-B,DE,20,DE,10,FTL,1,PER_KG,0.12,0,1000,95,10
HH-B,DE,20,DE,10,FTL,1,PER_KG,0.09,1000,,95,10
HH-M,DE,20,DE,80,FTL,2,FLAT,690,,,,5
"""


def carrier_credentials(database_url: str, data: Path) -> dict[str, str]:
    """Register `demo-carrier` on first run; keep its secret in the data dir."""
    from gateway.auth.clients import ClientRegistry
    from services.kit.db import create_engine

    saved = data / "demo-carrier-client.json"

    async def ensure() -> dict[str, str]:
        engine = create_engine(database_url, pool_size=1, max_overflow=0)
        try:
            registry = ClientRegistry(engine)
            existing = await registry.get(DEMO_CARRIER_CLIENT)
            if existing is None:
                secret = await registry.create(DEMO_CARRIER_CLIENT, CARRIER_SCOPES)
            elif saved.exists():
                return dict(json.loads(saved.read_text()))
            else:
                secret = await registry.rotate_secret(DEMO_CARRIER_CLIENT)
        finally:
            await engine.dispose()
        creds = {"client_id": DEMO_CARRIER_CLIENT, "client_secret": secret}
        saved.write_text(json.dumps(creds) + "\n")
        saved.chmod(0o600)
        return creds

    return asyncio.run(ensure())


def _template() -> object:
    from cartage.carrier.v1 import carrier_pb2

    def money(units: int) -> object:
        from google.type import money_pb2

        return money_pb2.Money(currency_code="EUR", units=units)

    return carrier_pb2.RateCard(
        display_name="Demo contract", currency_code="EUR",
        valid_from=date_pb2.Date(year=2026, month=1, day=1),
        valid_to=date_pb2.Date(year=2030, month=12, day=31),
        fuel_surcharge=[
            carrier_pb2.FuelSurchargeBand(index_from="0", index_to="1.50", percent="8"),
            carrier_pb2.FuelSurchargeBand(index_from="1.50", percent="12.5")],
        accessorials=[
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_LIFTGATE, amount=money(45)),
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_DETENTION,
                                    amount=money(60), free_minutes=120)])


def write_samples(data: Path) -> None:
    from services.stack.sample import demo_shipment

    (data / "demo-rate-card.csv").write_text(DEMO_CSV)
    body = {"rateCard": json_format.MessageToDict(_template()), "csvContent": DEMO_CSV}
    (data / "demo-import.json").write_text(json.dumps(body, indent=1) + "\n")
    (data / "demo-shipment.json").write_text(json_format.MessageToJson(demo_shipment()) + "\n")


async def seed(address: str, shipper: str) -> list[str]:
    """The demo partner's two carriers with the demo card, unless it has carriers already."""
    import grpc

    from cartage.carrier.v1 import carrier_pb2, carrier_service_pb2_grpc
    from cartage.carrier.v1 import carrier_service_pb2 as pb
    from services.carrier.domain.csv_import import parse_lanes

    far = date_pb2.Date(year=2030, month=12, day=31)
    metadata = (("x-cartage-client-id", shipper),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = carrier_service_pb2_grpc.CarrierServiceStub(channel)
        listed = await stub.ListCarriers(pb.ListCarriersRequest(), metadata=metadata,
                                         timeout=30)
        if listed.carriers:
            return [c.name for c in listed.carriers]
        card, problems = parse_lanes(DEMO_CSV, _template())  # type: ignore[arg-type]
        assert card is not None, problems
        names = []
        for display, scac, client, factor in (("Nordfracht Demo", "NFDM", DEMO_CARRIER_CLIENT, 1),
                                              ("Elbe Logistik Demo", "ELDM", "", 1.1)):
            carrier = await stub.CreateCarrier(pb.CreateCarrierRequest(
                carrier=carrier_pb2.Carrier(
                    display_name=display, scac=scac, modes=[carrier_pb2.MODE_FTL],
                    equipment=[carrier_pb2.EQUIPMENT_DRY_VAN], insurance_expiry=far,
                    authority_expiry=far, oauth_client_id=client),
                request_id=f"demo-carrier-{scac}"), metadata=metadata, timeout=30)
            priced = carrier_pb2.RateCard()
            priced.CopyFrom(card)
            if factor != 1:
                for lane in priced.lanes:
                    for brk in lane.pricing.per_kg.breaks:
                        brk.rate_per_kg.nanos = int(brk.rate_per_kg.nanos * factor)
                    if lane.pricing.HasField("flat"):
                        lane.pricing.flat.units = int(lane.pricing.flat.units * factor)
            await stub.CreateRateCard(pb.CreateRateCardRequest(
                parent=carrier.name, rate_card=priced, request_id=f"demo-card-{scac}"),
                metadata=metadata, timeout=30)
            names.append(carrier.name)
        return names
