"""A stored tender as the channels' TenderDocument: the HTTP channel keeps our ids, the EDI
channel sends them as 26-character references that fit X12 and decode back."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

import pytest

from cartage.carrier.v1 import carrier_pb2, carrier_service_pb2, shipment_pb2
from services.carrier.adapters.tender_documents import long_id, short_ref, tender_document
from services.carrier.channels import ChannelError, build_204, build_offer_request, parse_204
from services.carrier.domain.model import Carrier, Tender, TenderState
from tests.carrier_samples import carrier, eur, shipment

NOW = dt.datetime(2030, 1, 1, 6, tzinfo=dt.UTC)


def _tender(**load_fields: object) -> tuple[Carrier, Tender]:
    c = Carrier(os.urandom(16).hex(), "shipper", carrier("Nordfracht", "NORF"), NOW, NOW)
    load = shipment(**load_fields)
    load.name = f"shipments/{os.urandom(16).hex()}"
    load.pickup.address.administrative_area = "Hamburg"
    load.accessorials.add(code=carrier_pb2.ACCESSORIAL_CODE_LIFTGATE)
    load.accessorials.add(code=carrier_pb2.ACCESSORIAL_CODE_DETENTION, minutes=60)
    quote = carrier_service_pb2.CarrierQuote(
        carrier=c.name, lane_id="HH-B", price=shipment_pb2.PriceBreakdown(total=eur("337.5")))
    t = Tender(os.urandom(16).hex(), "shipper", load.name.split("/")[1], c.id, "",
               TenderState.OFFERED, 1, quote, load, NOW.date(), NOW,
               NOW + dt.timedelta(hours=2))
    return c, t


def test_the_http_document_keeps_the_ids_and_the_amount_in_minor_units() -> None:
    c, t = _tender()
    doc = tender_document(c, t, sender_id="CARTAGE")
    assert doc.tender_id == t.id and len(doc.tender_id) == 32
    assert doc.offered_amount == Decimal("337.50") and doc.currency == "EUR"
    assert doc.accessorials == ("LIFTGATE",)  # detention is a charge, not a request
    assert doc.stops[0].party.region == "Hamburg" and doc.respond_by == t.deadline
    assert doc.weight_kg == Decimal("1250.0") and doc.equipment == "DRY_VAN"
    assert b'"tender_id":"' + t.id.encode() in build_offer_request(doc, callback_url=None).body


def test_the_edi_document_fits_x12_and_its_references_decode_back() -> None:
    c, t = _tender()
    doc = tender_document(c, t, sender_id="CARTAGE", edi=True)
    assert len(doc.tender_id) == 26 and long_id(doc.tender_id) == t.id
    assert long_id(doc.shipment_id) == t.shipment_id
    assert doc.stops[0].party.region == ""  # N4-02 holds a 2-letter code only
    ref = parse_204(build_204(doc, control_number=42, sender_id="CARTAGE", receiver_id="NORF",
                              now=NOW))
    assert (long_id(ref.tender_id), ref.carrier_scac) == (t.id, "NORF")
    # the long id itself does not fit: that is why the EDI channel shortens it
    with pytest.raises(ChannelError):
        build_204(tender_document(c, t, sender_id="CARTAGE"), control_number=43,
                  sender_id="CARTAGE", receiver_id="NORF", now=NOW)


@pytest.mark.parametrize("ref", ["", "ABC", "0" * 26, "a" * 26, short_ref("00" * 16) + "A"])
def test_a_reference_we_did_not_make_is_refused(ref: str) -> None:
    with pytest.raises(ChannelError):
        long_id(ref)


def test_equipment_without_a_channel_code_is_a_channel_error() -> None:
    c, t = _tender(equipment=carrier_pb2.EQUIPMENT_TAUTLINER)
    with pytest.raises(ChannelError, match="TAUTLINER"):
        tender_document(c, t, sender_id="CARTAGE")
