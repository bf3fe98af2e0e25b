"""The carrier service over gRPC on real Postgres and NATS: carriers and cards, rate shopping
with every exclusion named, bad input as field violations, tenant isolation."""

from __future__ import annotations

import grpc
import pytest
from google.type import date_pb2

from cartage.carrier.v1 import carrier_pb2, shipment_pb2
from cartage.carrier.v1 import carrier_service_pb2 as pb
from tests.carrier_samples import eur, lane, place, rate_card
from tests.integration.carrier.conftest import CarrierClient
from tests.support import raises_rpc, reason, violations

pytestmark = pytest.mark.integration


def money(m) -> str:
    return f"{m.units}.{m.nanos // 10_000_000:02d} {m.currency_code}"


async def test_a_quote_is_itemised_ranked_and_names_every_excluded_carrier(
        shipper: CarrierClient) -> None:
    cheap = await shipper.carrier("Nordfracht", "NORF")
    dear = await shipper.carrier("Elbe Logistik", "ELBE")
    suspended = await shipper.carrier("Ruhe KG", "RUHE",
                                      state=carrier_pb2.Carrier.STATE_SUSPENDED)
    elsewhere = await shipper.carrier("Paris Express", "PARX")
    for c in (cheap, suspended):
        await shipper.card(c.name)
    await shipper.card(dear.name, lane(pricing=carrier_pb2.Pricing(flat=eur("480"))))
    await shipper.card(elsewhere.name, lane(destination=place("FR", "75")))
    stored = await shipper.shipment(weight=1250, accessorials=[
        shipment_pb2.RequestedAccessorial(code=carrier_pb2.ACCESSORIAL_CODE_LIFTGATE)])
    quoted = await shipper.QuoteRates(pb.QuoteRatesRequest(shipment_name=stored.name,
                                                           fuel_price_index="1.62"))
    assert [q.carrier for q in quoted.quotes] == [cheap.name, dear.name]
    best = quoted.quotes[0]
    assert money(best.price.linehaul) == "112.50 EUR"  # 1,250 kg x 0.09 EUR/kg
    assert money(best.price.fuel_surcharge) == "14.06 EUR"  # 12.5 %
    assert [(a.code, money(a.amount)) for a in best.price.accessorials] == [
        ("LIFTGATE", "45.00 EUR")]
    assert money(best.price.total) == "171.56 EUR"
    assert best.rank == 1 and best.lane_id == "HH-B" and best.rate_card.startswith(cheap.name)
    assert {e.carrier: pb.ExclusionReason.Name(e.reason) for e in quoted.exclusions} == {
        suspended.name: "EXCLUSION_REASON_SUSPENDED",
        elsewhere.name: "EXCLUSION_REASON_NO_LANE"}
    # An ad-hoc 30 t load: per kg (2,700 EUR) now costs more than the flat 480 EUR.
    heavy = await shipper.QuoteRates(pb.QuoteRatesRequest(
        shipment=shipment_pb2.Shipment(
            pickup=stored.pickup, delivery=stored.delivery, weight_kg=30_000),
        currency_code="EUR"))
    assert [q.carrier for q in heavy.quotes] == [dear.name, cheap.name]
    cards = await shipper.ListRateCards(pb.ListRateCardsRequest(parent=cheap.name))
    assert len(cards.rate_cards) == 1


async def test_bad_cards_and_carriers_get_field_violations(shipper: CarrierClient) -> None:
    c = await shipper.carrier()
    bad = rate_card(lane("L1", origin=place("DE", start="22999", end="20000"),
                         pricing=carrier_pb2.Pricing(flat=eur("-10"))),
                    lane("L2", pricing=carrier_pb2.Pricing(per_kg=carrier_pb2.PerKg(breaks=[
                        carrier_pb2.WeightBreak(min_kg=0, max_kg=500, rate_per_kg=eur("1")),
                        carrier_pb2.WeightBreak(min_kg=400, max_kg=0, rate_per_kg=eur("1"))]))),
                    lane("L3", pricing=carrier_pb2.Pricing(flat=eur("5", "USD"))),
                    currency="EUR")
    bad.valid_to.CopyFrom(date_pb2.Date(year=2019, month=1, day=1))
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await shipper.CreateRateCard(pb.CreateRateCardRequest(parent=c.name, rate_card=bad))
    found = violations(caught[0])
    assert set(found) >= {"rate_card.lanes[0].origin.postal_range.end",
                          "rate_card.lanes[0].pricing.flat",
                          "rate_card.lanes[1].pricing.per_kg.breaks[1]",
                          "rate_card.lanes[2].pricing.flat.currency_code",
                          "rate_card.valid_to"}
    unknown = rate_card(currency="ABC")
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await shipper.CreateRateCard(pb.CreateRateCardRequest(parent=c.name, rate_card=unknown))
    assert "rate_card.currency_code" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await shipper.carrier("x", "TOOLONG", max_weight_kg=float("nan"))
    assert {"carrier.scac", "carrier.max_weight_kg"} <= set(violations(caught[0]))
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await shipper.shipment(weight=float("nan"))
    assert "shipment.weight_kg" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await shipper.QuoteRates(pb.QuoteRatesRequest(shipment_name="shipments/nope",
                                                      cost_weight=2, fuel_price_index="NaN"))
    assert {"shipment_name", "cost_weight", "fuel_price_index"} <= set(violations(caught[0]))


async def test_another_shipper_sees_none_of_it(shipper: CarrierClient, client_of) -> None:
    c = await shipper.carrier()
    card = await shipper.card(c.name)
    s = await shipper.shipment()
    other = client_of()
    for call, request in (("GetCarrier", pb.GetCarrierRequest(name=c.name)),
                          ("GetRateCard", pb.GetRateCardRequest(name=card.name)),
                          ("GetShipment", pb.GetShipmentRequest(name=s.name)),
                          ("ListRateCards", pb.ListRateCardsRequest(parent=c.name))):
        with raises_rpc(grpc.StatusCode.NOT_FOUND) as caught:
            await getattr(other, call)(request)
        assert reason(caught[0]).endswith("NOT_FOUND")
    assert (await other.ListCarriers(pb.ListCarriersRequest())).carriers == []
    quoted = await other.QuoteRates(pb.QuoteRatesRequest(shipment=s))
    assert list(quoted.quotes) == [] and list(quoted.exclusions) == []


async def test_suspending_a_carrier_takes_it_out_of_quotes_at_once(
        shipper: CarrierClient) -> None:
    c = await shipper.carrier()
    await shipper.card(c.name)
    s = await shipper.shipment()
    assert len((await shipper.QuoteRates(pb.QuoteRatesRequest(shipment_name=s.name))).quotes) == 1
    c.state = carrier_pb2.Carrier.STATE_SUSPENDED
    from google.protobuf import field_mask_pb2
    updated = await shipper.UpdateCarrier(pb.UpdateCarrierRequest(
        carrier=c, update_mask=field_mask_pb2.FieldMask(paths=["state"])))
    assert updated.etag == "v2"
    quoted = await shipper.QuoteRates(pb.QuoteRatesRequest(shipment_name=s.name))
    assert [pb.ExclusionReason.Name(e.reason) for e in quoted.exclusions] == [
        "EXCLUSION_REASON_SUSPENDED"]
