"""A tender as the channels' canonical `TenderDocument` (services/carrier/channels/model.py).

The HTTP channel carries our ids as they are. X12 allows at most 30 characters in an id, so the
EDI channel sends `short_ref` of the tender and shipment ids: their 16 bytes as 26 characters of
RFC 4648 base32 (A-Z, 2-7), which `long_id` turns back into the id when a 990 echoes it.
"""

from __future__ import annotations

import base64
import binascii

from cartage.carrier.v1 import carrier_pb2
from cartage.type.v1 import stop_pb2
from services.carrier.channels import ChannelError, Party, TenderDocument, TenderStop
from services.carrier.domain.model import Carrier, Tender
from services.carrier.domain.money import from_float, round_minor, to_decimal
from services.kit.clock import to_datetime

# Canonical codes of the channels (channels/codes.py); equipment without one (a tautliner) is
# a ChannelError: the offer stays open for the carrier to list through the API.
_EQUIPMENT = {
    carrier_pb2.EQUIPMENT_UNSPECIFIED: "DRY_VAN",
    carrier_pb2.EQUIPMENT_DRY_VAN: "DRY_VAN",
    carrier_pb2.EQUIPMENT_REEFER: "REEFER",
    carrier_pb2.EQUIPMENT_FLATBED: "FLATBED",
    carrier_pb2.EQUIPMENT_CONTAINER: "CONTAINER",
}
# Services the carrier must provide; detention and TONU are charges, not requests.
_ACCESSORIALS = {
    carrier_pb2.ACCESSORIAL_CODE_LIFTGATE: "LIFTGATE",
    carrier_pb2.ACCESSORIAL_CODE_RESIDENTIAL: "RESIDENTIAL",
    carrier_pb2.ACCESSORIAL_CODE_INSIDE_DELIVERY: "INSIDE_DELIVERY",
    carrier_pb2.ACCESSORIAL_CODE_HAZMAT: "HAZMAT",
}


def short_ref(entity_id: str) -> str:
    """A 32-hex-digit id as 26 base32 characters (fits X12's 30)."""
    return base64.b32encode(bytes.fromhex(entity_id)).decode("ascii").rstrip("=")


def long_id(ref: str) -> str:
    """The id `short_ref` made `ref` from; ChannelError for anything else."""
    if len(ref) != 26:
        raise ChannelError(f"not one of our tender references: {ref!r}", "N9*TN")
    try:
        return base64.b32decode(ref + "======", casefold=False).hex()
    except (binascii.Error, ValueError):
        raise ChannelError(f"not one of our tender references: {ref!r}", "N9*TN") from None


def _party(stop: stop_pb2.Stop, *, region_len: int | None) -> Party:
    a = stop.address
    name = (a.organization or (a.recipients[0] if a.recipients else "")
            or stop.contact_name or a.locality or a.postal_code)
    region = a.administrative_area
    if region_len is not None and len(region) > region_len:
        region = ""  # X12's N4-02 is a 2-letter state code; the country and postal code stay
    return Party(name=name, address_lines=tuple(a.address_lines), city=a.locality,
                 region=region, postal_code=a.postal_code, country=a.region_code)


def _stop(stop: stop_pb2.Stop, sequence: int, kind: str, *, region_len: int | None
          ) -> TenderStop:
    window = stop.time_windows[0] if stop.time_windows else None
    return TenderStop(
        sequence=sequence, kind=kind,  # type: ignore[arg-type]
        party=_party(stop, region_len=region_len),
        window_start=to_datetime(window.start_time) if window is not None
        and window.HasField("start_time") else None,
        window_end=to_datetime(window.end_time) if window is not None
        and window.HasField("end_time") else None,
        reference="")


def tender_document(carrier: Carrier, tender: Tender, *, sender_id: str,
                    edi: bool = False) -> TenderDocument:
    """The offer of `tender` to `carrier`; `edi` shortens ids and regions to fit X12."""
    load, price = tender.load, tender.quote.price.total
    equipment = _EQUIPMENT.get(load.equipment)
    if equipment is None:
        raise ChannelError(f"no channel code for equipment "
                           f"{carrier_pb2.Equipment.Name(load.equipment)}", "equipment")
    region_len = 2 if edi else None
    shipment_id = load.name.removeprefix("shipments/") or tender.shipment_id
    return TenderDocument(
        tender_id=short_ref(tender.id) if edi else tender.id,
        shipment_id=short_ref(shipment_id) if edi else shipment_id,
        sender_id=sender_id,
        carrier_scac=carrier.content.scac,
        equipment=equipment,
        weight_kg=from_float(load.weight_kg),
        pallets=load.pallets,
        volume_m3=from_float(load.volume_m3) if load.volume_m3 else None,
        accessorials=tuple(dict.fromkeys(
            _ACCESSORIALS[a.code] for a in load.accessorials if a.code in _ACCESSORIALS)),
        stops=(_stop(load.pickup, 1, "PICKUP", region_len=region_len),
               _stop(load.delivery, 2, "DELIVERY", region_len=region_len)),
        offered_amount=round_minor(to_decimal(price), price.currency_code),
        currency=price.currency_code,
        respond_by=tender.deadline,
    )
