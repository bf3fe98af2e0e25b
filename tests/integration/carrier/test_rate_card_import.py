"""ImportRateCard: a CSV becomes a card's lanes, all or nothing; every error has its row and
column; a formula-like cell is text; an oversized file is refused before it is read."""

from __future__ import annotations

import grpc
import pytest

from cartage.carrier.v1 import carrier_service_pb2 as pb
from cartage.carrier.v1 import shipment_pb2
from tests.carrier_samples import rate_card
from tests.integration.carrier.conftest import CarrierClient
from tests.support import raises_rpc, violations

pytestmark = pytest.mark.integration

HEADER = ("lane_id,origin_country,origin_postal_prefix,origin_postal_from,origin_postal_to,"
          "destination_country,destination_postal_prefix,mode,service_level,transit_days,"
          "pricing,rate,weight_from_kg,weight_to_kg,minimum_charge,max_weight_kg,"
          "capacity_loads_per_day,currency")
GOOD = "\n".join([
    HEADER,
    "HH-B,DE,20,,,DE,10,FTL,,1,PER_KG,0.12,0,1000,95,24000,5,EUR",
    "HH-B,DE,20,,,DE,10,FTL,,1,PER_KG,0.09,1000,,95,24000,5,EUR",
    "HH-M,DE,,20000,22999,DE,80,FTL,EXPRESS,2,FLAT,690,,,,,,EUR",
    "\"=cmd|' /C calc'!A0\",DE,2,,,DE,1,LTL,,1,PER_PALLET,31.50,,,,,,",
])


def template() -> object:
    card = rate_card()
    del card.lanes[:]
    return card


async def import_csv(shipper: CarrierClient, parent: str, text: str):
    return await shipper.ImportRateCard(pb.ImportRateCardRequest(
        parent=parent, rate_card=template(), csv_content=text))


async def test_a_good_file_becomes_a_card_and_prices(shipper: CarrierClient) -> None:
    c = await shipper.carrier()
    card = await import_csv(shipper, c.name, GOOD)
    assert [ln.lane_id for ln in card.lanes] == ["HH-B", "HH-M", "=cmd|' /C calc'!A0"]
    breaks = card.lanes[0].pricing.per_kg.breaks
    assert [(b.min_kg, b.max_kg, b.rate_per_kg.nanos) for b in breaks] == [
        (0, 1000, 120_000_000), (1000, 0, 90_000_000)]
    assert card.lanes[0].capacity_loads_per_day == 5
    assert card.lanes[1].origin.postal_range.start == "20000"
    # the formula-like cell is stored as the text it is, never evaluated
    stored = await shipper.GetRateCard(pb.GetRateCardRequest(name=card.name))
    assert stored.lanes[2].lane_id == "=cmd|' /C calc'!A0"
    s = await shipper.shipment(weight=1250)
    quoted = await shipper.QuoteRates(pb.QuoteRatesRequest(shipment_name=s.name))
    assert quoted.quotes[0].lane_id == "HH-B"
    assert quoted.quotes[0].price.linehaul.units == 112  # 1,250 kg x 0.09


async def test_a_bad_file_names_every_error_and_imports_nothing(shipper: CarrierClient) -> None:
    c = await shipper.carrier()
    bad = "\n".join([
        HEADER,
        "A,DE,20,,,DE,10,FTL,,1,PER_KG,0.12,0,1000,,,,EUR",
        "A,DE,20,,,DE,10,FTL,,1,PER_KG,0.10,500,2000,,,,EUR",  # overlaps the break above
        "B,DE,,22999,20000,DE,10,FTL,,1,FLAT,100,,,,,,EUR",  # inverted range
        "C,DE,20,,,DE,10,FTL,,1,FLAT,NaN,,,,,,EUR",  # NaN rate
        "D,DE,20,,,DE,10,FTL,,1,FLAT,-5,,,,,,EUR",  # negative
        "E,DE,20,,,DE,10,FTL,,1,FLAT,=1+2,,,,,,EUR",  # a formula is not a number
        "F,DE,20,,,DE,10,TRAIN,,1,FLAT,10,,,,,,USD",  # mode and mixed currency
    ])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await import_csv(shipper, c.name, bad)
    found = violations(caught[0])
    assert "row 3, column 13 (weight_from_kg)" in found["csv_content.rows[3].weight_from_kg"]
    assert "inverted" in found["csv_content.rows[4].origin_postal_to"]
    assert "not a finite decimal" in found["csv_content.rows[5].rate"]
    assert "not a finite decimal" in found["csv_content.rows[7].rate"]
    assert "TRAIN" in found["csv_content.rows[8].mode"]
    assert "one currency per card" in found["csv_content.rows[8].currency"]
    # the negative rate is a card rule, found once the file itself reads
    cards = await shipper.ListRateCards(pb.ListRateCardsRequest(parent=c.name))
    assert cards.rate_cards == []
    only_negative = "\n".join([HEADER, "D,DE,20,,,DE,10,FTL,,1,FLAT,-5,,,,,,EUR"])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await import_csv(shipper, c.name, only_negative)
    assert "negative" in violations(caught[0])["csv_content.rows[2].rate"]


async def test_headers_and_shape_are_checked(shipper: CarrierClient) -> None:
    c = await shipper.carrier()
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await import_csv(shipper, c.name, "lane_id,colour\nA,red")
    found = violations(caught[0])
    assert "unknown column 'colour'" in found["csv_content.rows[1].colour"]
    assert "csv_content.rows[1].rate" in found
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await import_csv(shipper, c.name, HEADER + "\nA,DE")
    assert "2 cells" in violations(caught[0])["csv_content.rows[2]"]


async def test_an_oversized_file_is_refused_by_size(shipper: CarrierClient) -> None:
    c = await shipper.carrier()
    row = "\nX,DE,20,,,DE,10,FTL,,1,FLAT,100,,,,,,EUR"
    big = HEADER + row * (9 * 1024 * 1024 // len(row))  # > 8 MiB, under the 16 MiB transport
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await import_csv(shipper, c.name, big)
    assert "at most 8,388,608" in violations(caught[0])["csv_content"]
    # 50 MB never reaches the service: the transport refuses it (not INTERNAL)
    with raises_rpc(grpc.StatusCode.RESOURCE_EXHAUSTED):
        await import_csv(shipper, c.name, "x" * (50 * 1024 * 1024))


async def test_on_time_milestones_feed_the_lane_scorecard(
        stack, shipper: CarrierClient, client_of) -> None:
    """record_milestone, the use case tracking's milestone.recorded will call, on the
    service's own database, then the scorecard over gRPC."""
    from services.carrier import conversion
    from services.carrier.adapters import tables
    from services.carrier.adapters.events import CarrierEvents
    from services.carrier.adapters.repository import CarrierRepository
    from services.carrier.adapters.tender_channels import ChannelRouter
    from services.carrier.use_cases import QuoteUseCases, TenderUseCases
    from services.kit.clock import to_datetime
    from services.kit.db import create_engine
    from services.kit.uow import UnitOfWork

    carrier_client = client_of()
    c = await shipper.carrier(oauth_client_id=carrier_client.client_id)
    await shipper.card(c.name)
    s = await shipper.shipment()
    await shipper.tender(s.name, seconds=600)
    [offer] = (await carrier_client.ListTenders(pb.ListTendersRequest())).tenders
    await carrier_client.AcceptTender(pb.AcceptTenderRequest(name=offer.name))

    engine = create_engine(stack.database_url, pool_size=2)
    uow = UnitOfWork(engine, tables.kit)
    repository = CarrierRepository()
    from decimal import Decimal
    cases = TenderUseCases(uow, repository, CarrierEvents(), conversion.CODECS,
                           QuoteUseCases(uow, repository, base_currency="EUR",
                                         fuel_price_index=Decimal(1), score_ttl_s=0,
                                         score_window_days=90),
                           ChannelRouter(), default_timeout_s=60)
    shipment_id = s.name.removeprefix("shipments/")
    pickup_ok = to_datetime(s.pickup.time_windows[0].start_time)
    delivery_late = to_datetime(s.delivery.time_windows[0].end_time).replace(year=2031)
    try:
        async with uow.transaction() as tx:
            assert await cases.record_milestone(tx, shipper.client_id, shipment_id, 1,
                                                pickup_ok)
        async with uow.transaction() as tx:
            assert not await cases.record_milestone(tx, shipper.client_id, shipment_id, 1,
                                                    pickup_ok)  # a repeat counts once
        async with uow.transaction() as tx:
            assert await cases.record_milestone(tx, shipper.client_id, shipment_id, 2,
                                                delivery_late)
    finally:
        await uow.close()
        await engine.dispose()
    [card] = (await shipper.ListLaneScorecards(pb.ListLaneScorecardsRequest(
        carrier=c.name))).lane_scorecards
    assert (card.pickups_recorded, card.pickups_on_time) == (1, 1)
    assert (card.deliveries_recorded, card.deliveries_on_time) == (1, 0)
    assert card.tenders_accepted == 1 and card.acceptance_rate == 1.0
    delivered = await shipper.GetShipment(pb.GetShipmentRequest(name=s.name))
    assert delivered.state == shipment_pb2.Shipment.STATE_DELIVERED
