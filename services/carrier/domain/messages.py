"""Quotes and prices as the contract's messages: the waterfall and tenders store them as such
(a tender's price is what the carrier was offered, byte for byte, whatever cards change later)."""

from __future__ import annotations

from cartage.carrier.v1 import carrier_service_pb2, shipment_pb2
from services.carrier.domain.money import to_money
from services.carrier.domain.quoting import Exclusion, Quote
from services.carrier.domain.rates import Line, Price


def _charge(line: Line, currency: str) -> shipment_pb2.Charge:
    return shipment_pb2.Charge(code=line.code, description=line.description,
                               amount=to_money(line.amount, currency))


def price_message(price: Price) -> shipment_pb2.PriceBreakdown:
    cur = price.currency
    # Each line's Charge is built once; `lines` repeats them (protobuf copies in C).
    lines = [_charge(ln, cur) for ln in price.lines]
    extras = len(price.accessorials)
    return shipment_pb2.PriceBreakdown(
        linehaul=lines[0].amount, minimum_applied=price.minimum_applied,
        fuel_surcharge=lines[1].amount, accessorials=lines[len(lines) - extras:],
        total=to_money(price.total, cur), lines=lines)


def quote_message(quote: Quote) -> carrier_service_pb2.CarrierQuote:
    return carrier_service_pb2.CarrierQuote(
        carrier=f"carriers/{quote.carrier.id}", carrier_display_name=quote.carrier.display_name,
        rate_card=quote.card.name, lane_id=quote.lane.lane_id, price=price_message(quote.price),
        transit_days=quote.lane.transit_days, lane_score=quote.lane_score,
        rank_score=quote.rank_score, rank=quote.rank)


def exclusion_message(exclusion: Exclusion) -> carrier_service_pb2.CarrierExclusion:
    reason = carrier_service_pb2.ExclusionReason.Value(
        f"EXCLUSION_REASON_{exclusion.reason}")
    return carrier_service_pb2.CarrierExclusion(
        carrier=f"carriers/{exclusion.carrier.id}",
        carrier_display_name=exclusion.carrier.display_name, reason=reason,
        detail=exclusion.detail)
