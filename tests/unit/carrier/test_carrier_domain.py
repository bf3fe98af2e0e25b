"""The carrier domain without I/O: rate card rules, the pricing engine, eligibility with a reason
for every excluded carrier, ranking, the waterfall's states and lane scores."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cartage.carrier.v1 import carrier_pb2, carrier_service_pb2, shipment_pb2
from services.carrier.domain.loads import load_of
from services.carrier.domain.model import Carrier, Shipment, ShipmentState, Tender, TenderState
from services.carrier.domain.money import round_minor, to_decimal, to_money
from services.carrier.domain.quoting import rank, shop
from services.carrier.domain.ratecard import check_rate_card
from services.carrier.domain.rates import compile_card, price
from services.carrier.domain.scorecard import NEUTRAL_SCORE, LaneStats, lane_score, on_time
from services.kit.errors import FailedPrecondition
from services.kit.validation import Violations
from tests.carrier_samples import carrier, eur, lane, place, rate_card, shipment

DAY = dt.date(2030, 1, 1)
NOW = dt.datetime(2030, 1, 1, 6, tzinfo=dt.UTC)


def problems(card: carrier_pb2.RateCard) -> dict[str, str]:
    v = Violations()
    check_rate_card(card, v)
    return {item.field: item.description for item in v.items}


def test_a_good_card_has_no_problems() -> None:
    assert problems(rate_card()) == {}


def test_every_problem_of_a_bad_card_is_named() -> None:
    bad = lane("L1", origin=place("DE", start="22999", end="20000"),
               destination=place("XX", "10"),
               pricing=carrier_pb2.Pricing(per_kg=carrier_pb2.PerKg(breaks=[
                   carrier_pb2.WeightBreak(min_kg=0, max_kg=1000, rate_per_kg=eur("0.1")),
                   carrier_pb2.WeightBreak(min_kg=500, max_kg=2000, rate_per_kg=eur("0.1")),
                   carrier_pb2.WeightBreak(min_kg=float("nan"), rate_per_kg=eur("0.1"))])),
               minimum_charge=eur("-5"))
    usd = lane("L2", pricing=carrier_pb2.Pricing(flat=eur("100", "USD")))
    card = rate_card(bad, usd, currency="EUR")
    card.valid_to.year = 2019
    found = problems(card)
    assert "inverted" in found["rate_card.lanes[0].origin.postal_range.end"]
    assert "ISO 3166" in found["rate_card.lanes[0].destination.country"]
    assert "overlaps break 0" in found["rate_card.lanes[0].pricing.per_kg.breaks[1]"]
    assert "finite" in found["rate_card.lanes[0].pricing.per_kg.breaks[2].min_kg"]
    assert "negative" in found["rate_card.lanes[0].minimum_charge"]
    assert "one currency per card" in found["rate_card.lanes[1].pricing.flat.currency_code"]
    assert "before valid_from" in found["rate_card.valid_to"]


def test_an_unknown_currency_is_refused() -> None:
    assert "ISO 4217" in problems(rate_card(currency="EUX"))["rate_card.currency_code"]
    assert problems(rate_card(lane(pricing=carrier_pb2.Pricing(flat=eur("1", "JPY")),
                                   minimum_charge=eur("95", "JPY")),
                              currency="JPY")) == {}


def test_overlapping_fuel_bands_are_refused() -> None:
    card = rate_card()
    card.fuel_surcharge.add(index_from="1.20", index_to="1.60", percent="10")
    assert "overlaps" in problems(card)["rate_card.fuel_surcharge[2]"]


def compiled(card: carrier_pb2.RateCard, carrier_id: str = "c1"):
    assert problems(card) == {}
    return compile_card(f"carriers/{carrier_id}/rateCards/r1", carrier_id, card)


def test_per_kg_price_is_itemised_with_weight_breaks_fuel_and_accessorials() -> None:
    card = compiled(rate_card())
    load = load_of(shipment(1250, accessorials=[
        shipment_pb2.RequestedAccessorial(code=carrier_pb2.ACCESSORIAL_CODE_LIFTGATE),
        shipment_pb2.RequestedAccessorial(code=carrier_pb2.ACCESSORIAL_CODE_DETENTION,
                                          minutes=195)]))
    [(_, only)] = [(c, ln) for c in [card] for ln in c.lanes_for(load.origin, load.destination)]
    offer = price(card, only, load, Decimal("1.62"))
    assert offer.linehaul == Decimal("112.50")  # 1,250 kg x 0.09 (the 1,000+ break)
    assert offer.fuel == Decimal("14.06")  # 12.5 % of 112.50 = 14.0625, half up
    assert [(a.code, a.amount) for a in offer.accessorials] == [
        ("LIFTGATE", Decimal("45.00")), ("DETENTION", Decimal("75.00"))]  # 75 min x 60/h
    assert offer.total == Decimal("246.56")
    assert not offer.minimum_applied


def test_the_minimum_charge_raises_a_small_linehaul() -> None:
    card = compiled(rate_card())
    load = load_of(shipment(300))
    offer = price(card, card.lanes_for(load.origin, load.destination)[0], load, Decimal("1"))
    assert offer.minimum_applied and offer.linehaul == Decimal("95.00")  # 36 < 95
    assert offer.fuel == Decimal("7.60")  # 8 % band below 1.50


def test_flat_per_km_and_per_pallet_bases() -> None:
    for pricing, expected in [
        (carrier_pb2.Pricing(flat=eur("410")), Decimal("410.00")),
        (carrier_pb2.Pricing(per_km=eur("1.35")), Decimal("391.50")),  # 290 km
        (carrier_pb2.Pricing(per_pallet=eur("32.5")), Decimal("130.00")),  # 4 pallets
    ]:
        card = compiled(rate_card(lane(pricing=pricing)))
        load = load_of(shipment())
        assert price(card, card.lanes_for(load.origin, load.destination)[0], load,
                     Decimal("1")).linehaul == expected


def test_money_round_trips_exactly() -> None:
    assert to_decimal(to_money(Decimal("-12.345"), "EUR")) == Decimal("-12.345")
    assert round_minor(Decimal("2.5"), "JPY") == Decimal("3")
    assert round_minor(Decimal("0.125"), "EUR") == Decimal("0.13")


def make_carrier(cid: str, **fields) -> Carrier:
    return Carrier(cid, "shipper", carrier(cid, **fields), NOW, NOW)


def test_every_carrier_is_quoted_or_excluded_with_its_reason() -> None:
    past = carrier_pb2.Carrier().insurance_expiry.__class__(year=2029, month=6, day=1)
    carriers = {
        "cheap": make_carrier("cheap"),
        "suspended": make_carrier("suspended", state=carrier_pb2.Carrier.STATE_SUSPENDED),
        "uninsured": make_carrier("uninsured", insurance_expiry=past),
        "unauthorised": make_carrier("unauthorised", authority_expiry=past),
        "reefer": make_carrier("reefer", equipment=[carrier_pb2.EQUIPMENT_REEFER]),
        "light": make_carrier("light", max_weight_kg=1000),
        "elsewhere": make_carrier("elsewhere"),
        "full": make_carrier("full"),
        "dollars": make_carrier("dollars"),
        "dear": make_carrier("dear"),
    }
    cards = {
        "cheap": rate_card(), "suspended": rate_card(), "uninsured": rate_card(),
        "unauthorised": rate_card(), "reefer": rate_card(), "light": rate_card(),
        "elsewhere": rate_card(lane(destination=place("FR", "75"))),
        "full": rate_card(lane(capacity_loads_per_day=2)),
        "dollars": rate_card(lane(pricing=carrier_pb2.Pricing(flat=eur("1", "USD")),
                                  minimum_charge=eur("0", "USD")), currency="USD"),
        "dear": rate_card(lane(pricing=carrier_pb2.Pricing(flat=eur("400")))),
    }
    for code in cards["dollars"].accessorials:
        code.amount.currency_code = "USD"
    inputs = [(c.facts(), [compiled(cards[cid], cid)]) for cid, c in carriers.items()]
    quotes, exclusions = shop(inputs, load_of(shipment(1250)), DAY, "EUR", Decimal("1.62"),
                              booked={("full", "HH-B"): 2}, scores={})
    assert [q.carrier.id for q in quotes] == ["cheap", "dear"]
    assert [q.rank for q in quotes] == [1, 2]
    assert {e.carrier.id: e.reason for e in exclusions} == {
        "suspended": "SUSPENDED", "uninsured": "INSURANCE_EXPIRED",
        "unauthorised": "AUTHORITY_EXPIRED", "reefer": "EQUIPMENT",
        "light": "OVER_WEIGHT_LIMIT", "elsewhere": "NO_LANE", "full": "CAPACITY_FULL",
        "dollars": "CURRENCY"}
    assert len(quotes) + len(exclusions) == len(carriers)


def test_a_better_lane_score_can_outrank_a_lower_price() -> None:
    cards = [(make_carrier(cid).facts(), [compiled(rate_card(lane(
        pricing=carrier_pb2.Pricing(flat=eur(amount)))), cid)])
        for cid, amount in (("cheap", "300"), ("good", "320"))]
    scores = {("cheap", "HH-B"): 0.2, ("good", "HH-B"): 0.98}
    load = load_of(shipment())
    by_cost, _ = shop(cards, load, DAY, "EUR", Decimal(1), {}, scores, cost_weight=1.0)
    assert by_cost[0].carrier.id == "cheap"
    balanced, _ = shop(cards, load, DAY, "EUR", Decimal(1), {}, scores, cost_weight=0.5)
    assert balanced[0].carrier.id == "good"
    assert rank([]) == []


def test_an_accessorial_the_card_does_not_price_excludes_the_carrier() -> None:
    card = rate_card()
    del card.accessorials[:]
    load = load_of(shipment(accessorials=[
        shipment_pb2.RequestedAccessorial(code=carrier_pb2.ACCESSORIAL_CODE_HAZMAT)]))
    quotes, [excluded] = shop([(make_carrier("c").facts(), [compiled(card, "c")])], load, DAY,
                              "EUR", Decimal(1), {}, {})
    assert quotes == [] and excluded.reason == "ACCESSORIAL"


def waterfall_shipment() -> Shipment:
    quotes = carrier_service_pb2.QuoteRatesResponse(quotes=[
        carrier_service_pb2.CarrierQuote(carrier="carriers/a"),
        carrier_service_pb2.CarrierQuote(carrier="carriers/b")])
    fresh = Shipment("s1", "shipper", shipment(), ShipmentState.OPEN, NOW, NOW)
    return fresh.start_waterfall(quotes, 60, NOW)


def test_the_waterfall_offers_in_rank_order_then_is_exhausted() -> None:
    s = waterfall_shipment()
    assert s.next_candidate().carrier == "carriers/a"
    s = s.offered("t1", NOW)
    assert s.next_candidate().carrier == "carriers/b"
    s = s.offered("t2", NOW)
    assert s.next_candidate() is None
    s = s.exhausted(NOW)
    assert s.state == ShipmentState.TENDER_EXHAUSTED
    again = s.start_waterfall(s.waterfall, 60, NOW)  # an exhausted shipment may be re-tendered
    assert again.state == ShipmentState.TENDERED and again.position == 0
    booked = again.offered("t3", NOW).booked("a", "t3", shipment_pb2.PriceBreakdown(), NOW)
    with pytest.raises(FailedPrecondition):
        booked.start_waterfall(s.waterfall, 60, NOW)


def tender(deadline: dt.datetime) -> Tender:
    return Tender("t1", "shipper", "s1", "a", "carrier-client", TenderState.OFFERED, 1,
                  carrier_service_pb2.CarrierQuote(), shipment(), DAY, NOW, deadline)


def test_a_tender_is_answered_once_and_never_after_its_deadline() -> None:
    open_one = tender(NOW + dt.timedelta(minutes=5))
    accepted = open_one.accept(NOW + dt.timedelta(minutes=1))
    assert accepted.state == TenderState.ACCEPTED
    with pytest.raises(FailedPrecondition) as again:
        accepted.reject("changed my mind", NOW + dt.timedelta(minutes=2))
    assert again.value.reason == "TENDER_NOT_OPEN"
    with pytest.raises(FailedPrecondition) as late:
        open_one.accept(NOW + dt.timedelta(minutes=5))
    assert late.value.reason == "TENDER_EXPIRED"
    assert open_one.expire(NOW + dt.timedelta(minutes=6)).state == TenderState.EXPIRED
    assert open_one.visible_to("carrier-client") and not open_one.visible_to("someone-else")


def test_lane_scores_reward_acceptance_and_punctuality() -> None:
    assert lane_score(LaneStats("a", "L")) == pytest.approx(NEUTRAL_SCORE)
    good = LaneStats("a", "L", offered=10, accepted=10, answered=10, response_seconds=600,
                     pickups=10, pickups_on_time=10, deliveries=10, deliveries_on_time=10)
    bad = LaneStats("a", "L", offered=10, accepted=1, answered=10, response_seconds=10 * 14_000,
                    pickups=5, pickups_on_time=1, deliveries=5, deliveries_on_time=0)
    assert lane_score(good) > NEUTRAL_SCORE > lane_score(bad)
    window = (NOW, NOW + dt.timedelta(hours=2))
    assert on_time(NOW + dt.timedelta(hours=1), [window])
    assert not on_time(NOW + dt.timedelta(hours=3), [window])


@pytest.mark.parametrize(("uri", "ok"), [
    ("https://api.carrier.example/v1", True),
    ("http://127.0.0.1:8080", True),  # a simulator beside the service (tests, make run)
    ("http://[::1]:8080", True),
    ("http://api.carrier.example", False),  # plain HTTP over the internet
    ("http://10.0.0.5", False),
    ("https://user:secret@api.carrier.example", False),
    ("", False),
    ("ftp://127.0.0.1", False),
])
def test_an_api_callback_carrier_needs_an_https_or_loopback_endpoint(uri: str, ok: bool) -> None:
    from services.carrier.api.validation import check_carrier

    v = Violations()
    check_carrier(carrier(tender_channel=carrier_pb2.TENDER_CHANNEL_API_CALLBACK,
                          endpoint_uri=uri), v)
    assert (not v) == ok
