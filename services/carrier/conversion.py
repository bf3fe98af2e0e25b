"""Contract messages to and from the domain, and the codecs of stored responses. Pure
functions, no I/O. The api and the adapters use them; the use cases get the codecs from the
composition root."""

from __future__ import annotations

import datetime as dt

from cartage.carrier.v1 import carrier_pb2, shipment_pb2, tender_pb2
from services.carrier.domain.model import (
    Carrier,
    RateCardRecord,
    Shipment,
    ShipmentState,
    Tender,
    TenderState,
)
from services.carrier.domain.scorecard import LaneStats, lane_score
from services.carrier.use_cases.ports import Codecs
from services.kit.clock import set_timestamp, to_datetime
from services.kit.idempotency import Codec

CARRIER_OUTPUT_ONLY = ("name", "client_id", "create_time", "update_time", "etag")
SHIPMENT_OUTPUT_ONLY = ("name", "state", "carrier", "current_tender", "agreed_price",
                        "client_id", "create_time", "update_time", "etag", "cancel_reason")


def carrier_content(message: carrier_pb2.Carrier) -> carrier_pb2.Carrier:
    content = carrier_pb2.Carrier()
    content.CopyFrom(message)
    for name in CARRIER_OUTPUT_ONLY:
        content.ClearField(name)
    if content.state == carrier_pb2.Carrier.STATE_UNSPECIFIED:
        content.state = carrier_pb2.Carrier.STATE_ACTIVE
    if content.tender_channel == carrier_pb2.TENDER_CHANNEL_UNSPECIFIED:
        content.tender_channel = carrier_pb2.TENDER_CHANNEL_CARTAGE_API
    return content


def card_content(message: carrier_pb2.RateCard) -> carrier_pb2.RateCard:
    content = carrier_pb2.RateCard()
    content.CopyFrom(message)
    content.ClearField("name")
    content.ClearField("create_time")
    return content


def shipment_content(message: shipment_pb2.Shipment) -> shipment_pb2.Shipment:
    content = shipment_pb2.Shipment()
    content.CopyFrom(message)
    for name in SHIPMENT_OUTPUT_ONLY:
        content.ClearField(name)
    return content


def carrier_to_proto(carrier: Carrier) -> carrier_pb2.Carrier:
    message = carrier_pb2.Carrier()
    message.CopyFrom(carrier.content)
    message.name = carrier.name
    message.client_id = carrier.client_id
    set_timestamp(message.create_time, carrier.create_time)
    set_timestamp(message.update_time, carrier.update_time)
    message.etag = carrier.etag
    return message


def carrier_from_proto(message: carrier_pb2.Carrier) -> Carrier:
    return Carrier(message.name.removeprefix("carriers/"), message.client_id,
                   carrier_content(message), to_datetime(message.create_time),
                   to_datetime(message.update_time), int(message.etag.removeprefix("v") or 1))


def card_to_proto(card: RateCardRecord) -> carrier_pb2.RateCard:
    message = carrier_pb2.RateCard()
    message.CopyFrom(card.content)
    message.name = card.name
    set_timestamp(message.create_time, card.create_time)
    return message


def card_from_proto(message: carrier_pb2.RateCard) -> RateCardRecord:
    _, carrier_id, _, card_id = message.name.split("/")
    return RateCardRecord(card_id, carrier_id, "", card_content(message),
                          to_datetime(message.create_time))


def shipment_to_proto(shipment: Shipment) -> shipment_pb2.Shipment:
    message = shipment_pb2.Shipment()
    message.CopyFrom(shipment.content)
    message.name = shipment.name
    message.state = shipment_pb2.Shipment.State.ValueType(shipment.state)
    if shipment.carrier_id:
        message.carrier = f"carriers/{shipment.carrier_id}"
    if shipment.current_tender_id:
        message.current_tender = f"tenders/{shipment.current_tender_id}"
    if shipment.agreed_price is not None:
        message.agreed_price.CopyFrom(shipment.agreed_price)
    message.client_id = shipment.client_id
    set_timestamp(message.create_time, shipment.create_time)
    set_timestamp(message.update_time, shipment.update_time)
    message.etag = shipment.etag
    message.cancel_reason = shipment.cancel_reason
    return message


def shipment_from_proto(message: shipment_pb2.Shipment) -> Shipment:
    return Shipment(
        id=message.name.removeprefix("shipments/"), client_id=message.client_id,
        content=shipment_content(message), state=ShipmentState(message.state),
        create_time=to_datetime(message.create_time),
        update_time=to_datetime(message.update_time),
        version=int(message.etag.removeprefix("v") or 1),
        carrier_id=message.carrier.removeprefix("carriers/"),
        current_tender_id=message.current_tender.removeprefix("tenders/"),
        agreed_price=message.agreed_price if message.HasField("agreed_price") else None,
        cancel_reason=message.cancel_reason)


def tender_to_proto(tender: Tender) -> tender_pb2.Tender:
    message = tender_pb2.Tender(
        name=tender.name, shipment=f"shipments/{tender.shipment_id}",
        carrier=f"carriers/{tender.carrier_id}",
        state=tender_pb2.Tender.State.ValueType(tender.state), rank=tender.rank,
        price=tender.quote.price, rate_card=tender.quote.rate_card,
        lane_id=tender.quote.lane_id, reject_reason=tender.reject_reason, load=tender.load)
    set_timestamp(message.offer_time, tender.offer_time)
    set_timestamp(message.response_deadline, tender.deadline)
    if tender.respond_time is not None:
        set_timestamp(message.respond_time, tender.respond_time)
    return message


def tender_from_proto(message: tender_pb2.Tender) -> Tender:
    from cartage.carrier.v1 import carrier_service_pb2

    quote = carrier_service_pb2.CarrierQuote(carrier=message.carrier, price=message.price,
                                             rate_card=message.rate_card,
                                             lane_id=message.lane_id)
    return Tender(
        id=message.name.removeprefix("tenders/"), client_id="",
        shipment_id=message.shipment.removeprefix("shipments/"),
        carrier_id=message.carrier.removeprefix("carriers/"), carrier_client_id="",
        state=TenderState(message.state), rank=message.rank, quote=quote, load=message.load,
        pickup_day=to_datetime(message.offer_time).date(),
        offer_time=to_datetime(message.offer_time),
        deadline=to_datetime(message.response_deadline),
        respond_time=(to_datetime(message.respond_time)
                      if message.HasField("respond_time") else None),
        reject_reason=message.reject_reason)


def scorecard_to_proto(stats: LaneStats, since: dt.datetime, now: dt.datetime
                       ) -> tender_pb2.LaneScorecard:
    message = tender_pb2.LaneScorecard(
        carrier=f"carriers/{stats.carrier_id}", lane=stats.lane_id,
        tenders_offered=stats.offered, tenders_accepted=stats.accepted,
        tenders_answered=stats.answered, acceptance_rate=round(stats.acceptance_rate, 6),
        pickups_recorded=stats.pickups, pickups_on_time=stats.pickups_on_time,
        deliveries_recorded=stats.deliveries, deliveries_on_time=stats.deliveries_on_time,
        score=lane_score(stats))
    message.mean_response_time.FromTimedelta(dt.timedelta(seconds=stats.mean_response_s))
    set_timestamp(message.window_start, since)
    set_timestamp(message.window_end, now)
    return message


CODECS = Codecs(
    carrier=Codec(lambda c: carrier_to_proto(c).SerializeToString(),
                  lambda b: carrier_from_proto(carrier_pb2.Carrier.FromString(b))),
    card=Codec(lambda c: card_to_proto(c).SerializeToString(),
               lambda b: card_from_proto(carrier_pb2.RateCard.FromString(b))),
    shipment=Codec(lambda s: shipment_to_proto(s).SerializeToString(),
                   lambda b: shipment_from_proto(shipment_pb2.Shipment.FromString(b))),
    tender=Codec(lambda t: tender_to_proto(t).SerializeToString(),
                 lambda b: tender_from_proto(tender_pb2.Tender.FromString(b))),
)
