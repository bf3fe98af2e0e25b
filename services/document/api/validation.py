"""Request checks for the document service: every problem reported at once, by field path."""

from __future__ import annotations

import re

from google.type import money_pb2

from cartage.document.v1 import content_pb2, document_service_pb2
from cartage.type.v1 import party_pb2
from services.document.api.images import check_image
from services.kit.validation import Violations

MAX_PHOTOS = 10
MAX_LINES = 1000
IDENTIFIER = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,34}$")
SCAC = re.compile(r"^[A-Z]{2,4}$")
# 6, 8 or 10 digits; dots allowed after the 4th, 6th and 8th digit (`8471.30`, `847130.00`).
HS_CODE = re.compile(r"^\d{4}\.?\d{2}(?:\.?\d{2}){0,2}$")
EORI = re.compile(r"^[A-Z]{2}[A-Z0-9]{1,15}$")
TAX_ID = re.compile(r"^[A-Z0-9][A-Z0-9 .\-/]{2,29}$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
INCOTERMS_2020 = frozenset({"EXW", "FCA", "CPT", "CIP", "DAP", "DPU", "DDP", "FAS", "FOB",
                            "CFR", "CIF"})
NMFC_CLASSES = frozenset({"50", "55", "60", "65", "70", "77.5", "85", "92.5", "100", "110",
                          "125", "150", "175", "200", "250", "300", "400", "500"})
PACKAGE_TYPES = frozenset({"PLT", "SKD", "CTN", "BOX", "DRM", "CRT", "BAG", "BDL", "PCS", "TOTE",
                           "ROLL", "CYL", "PAIL"})


def _party(party: party_pb2.Party, field: str, v: Violations, *, required: bool = True) -> None:
    if required and not party.name.strip():
        v.add(f"{field}.name", "is required", "REQUIRED")
    v.text(party.name, f"{field}.name", max_len=200)
    for i, line in enumerate(party.address.address_lines):
        v.text(line, f"{field}.address.address_lines[{i}]", max_len=200)


def _identifier(value: str, field: str, v: Violations) -> None:
    if not value:
        v.add(field, "is required", "REQUIRED")
    elif not IDENTIFIER.match(value):
        v.add(field, "must be 1 to 35 characters of A-Z, 0-9 and '-', starting with a letter "
                     "or digit", "INVALID_FORMAT")


def _tax_id(value: str, field: str, v: Violations) -> None:
    if not value:
        v.add(field, "is required", "REQUIRED")
    elif not (EORI.match(value) or TAX_ID.match(value)):
        v.add(field, "must be an EORI number (two letters, up to 15 letters or digits) or a "
                     "tax id", "INVALID_FORMAT")


def _money(value: money_pb2.Money, field: str, currency: str, v: Violations) -> None:
    if value.units < 0 or value.nanos < 0:
        v.add(field, "must not be negative", "OUT_OF_RANGE")
    elif value.nanos > 999_999_999:
        v.add(f"{field}.nanos", "must be below 1,000,000,000", "OUT_OF_RANGE")
    if value.currency_code and value.currency_code != currency:
        v.add(f"{field}.currency_code", f"must be the document's currency {currency}",
              "CURRENCY_MISMATCH")


def _incoterm(value: str, field: str, v: Violations) -> None:
    rule = value.split(" ", 1)[0] if value else ""
    if not rule:
        v.add(field, "is required", "REQUIRED")
    elif rule not in INCOTERMS_2020:
        v.add(field, f"unknown Incoterms 2020 rule {rule!r}; use one of "
                     f"{', '.join(sorted(INCOTERMS_2020))}", "UNKNOWN_INCOTERM")


def _goods(lines: list[content_pb2.GoodsLine], field: str, currency: str, v: Violations) -> None:
    if not lines:
        v.add(field, "needs at least one line", "REQUIRED")
    if len(lines) > MAX_LINES:
        v.add(field, f"must hold at most {MAX_LINES} lines", "TOO_MANY")
        return
    for i, line in enumerate(lines):
        path = f"{field}[{i}]"
        v.text(line.description, f"{path}.description", required=True, max_len=200)
        if not HS_CODE.match(line.hs_code):
            v.add(f"{path}.hs_code", "must be an HS code of 6, 8 or 10 digits (e.g. 8471.30 or "
                                     "84713000)", "INVALID_HS_CODE")
        if not COUNTRY.match(line.country_of_origin):
            v.add(f"{path}.country_of_origin", "must be an ISO 3166-1 alpha-2 code (DE)",
                  "INVALID_FORMAT")
        v.number(line.quantity, f"{path}.quantity", minimum=0, exclusive_minimum=True,
                 maximum=1e9)
        v.number(line.net_weight_kg, f"{path}.net_weight_kg", minimum=0, maximum=1e7)
        _money(line.unit_value, f"{path}.unit_value", currency, v)


def _trade(message: content_pb2.CommercialInvoice | content_pb2.CustomsDeclaration,
           field: str, v: Violations) -> None:
    _party(message.exporter, f"{field}.exporter", v)
    _party(message.importer, f"{field}.importer", v)
    _tax_id(message.exporter_tax_id, f"{field}.exporter_tax_id", v)
    _tax_id(message.importer_tax_id, f"{field}.importer_tax_id", v)
    _incoterm(message.incoterm, f"{field}.incoterm", v)
    if not CURRENCY.match(message.currency_code):
        v.add(f"{field}.currency_code", "must be an ISO 4217 code (EUR)", "INVALID_FORMAT")
    _goods(list(message.lines), f"{field}.lines", message.currency_code, v)


def _bill_of_lading(bol: content_pb2.BillOfLading, field: str, v: Violations) -> None:
    _identifier(bol.bol_number, f"{field}.bol_number", v)
    _identifier(bol.pro_number, f"{field}.pro_number", v)
    _party(bol.shipper, f"{field}.shipper", v)
    _party(bol.consignee, f"{field}.consignee", v)
    v.text(bol.carrier_name, f"{field}.carrier_name", required=True, max_len=200)
    if not SCAC.match(bol.scac):
        v.add(f"{field}.scac", "must be a SCAC of 2 to 4 capital letters", "INVALID_FORMAT")
    v.enum(bol.freight_terms, content_pb2.FreightTerms.DESCRIPTOR, f"{field}.freight_terms",
           allow_unspecified=False)
    if bol.freight_terms == content_pb2.FREIGHT_TERMS_THIRD_PARTY and not bol.HasField("bill_to"):
        v.add(f"{field}.bill_to", "is required for THIRD_PARTY freight terms", "REQUIRED")
    if not bol.handling_units:
        v.add(f"{field}.handling_units", "needs at least one line", "REQUIRED")
    for i, unit in enumerate(bol.handling_units[:MAX_LINES]):
        path = f"{field}.handling_units[{i}]"
        v.number(unit.quantity, f"{path}.quantity", minimum=0, exclusive_minimum=True,
                 maximum=100_000)
        if unit.package_type not in PACKAGE_TYPES:
            v.add(f"{path}.package_type", f"must be one of {', '.join(sorted(PACKAGE_TYPES))}",
                  "INVALID_FORMAT")
        v.number(unit.weight_kg, f"{path}.weight_kg", minimum=0, exclusive_minimum=True,
                 maximum=100_000)
        v.text(unit.description, f"{path}.description", required=True, max_len=200)
        if unit.nmfc_class not in NMFC_CLASSES:
            v.add(f"{path}.nmfc_class", "must be an NMFC class (50 ... 500)", "INVALID_FORMAT")
    if any(u.hazmat for u in bol.handling_units) and not bol.emergency_contact.strip():
        v.add(f"{field}.emergency_contact", "is required when a handling unit is hazmat",
              "REQUIRED")
    v.text(bol.special_instructions, f"{field}.special_instructions", max_len=2000)


def _packing_list(packing: content_pb2.PackingList, field: str, v: Violations) -> None:
    _party(packing.shipper, f"{field}.shipper", v)
    _party(packing.consignee, f"{field}.consignee", v)
    v.text(packing.reference, f"{field}.reference", required=True, max_len=100)
    if not packing.lines:
        v.add(f"{field}.lines", "needs at least one line", "REQUIRED")
    for i, line in enumerate(packing.lines[:MAX_LINES]):
        path = f"{field}.lines[{i}]"
        v.text(line.package_id, f"{path}.package_id", required=True, max_len=50)
        v.text(line.description, f"{path}.description", required=True, max_len=200)
        v.number(line.quantity, f"{path}.quantity", minimum=0, exclusive_minimum=True,
                 maximum=1e9)
        v.number(line.weight_kg, f"{path}.weight_kg", minimum=0, maximum=1e7)


def _shipping_label(label: content_pb2.ShippingLabel, field: str, v: Violations) -> None:
    _party(label.ship_from, f"{field}.ship_from", v)
    _party(label.ship_to, f"{field}.ship_to", v)
    _identifier(label.tracking_number, f"{field}.tracking_number", v)
    v.text(label.carrier_name, f"{field}.carrier_name", required=True, max_len=100)
    v.text(label.service, f"{field}.service", max_len=40)
    v.number(label.weight_kg, f"{field}.weight_kg", minimum=0, exclusive_minimum=True,
             maximum=100_000)
    count = label.piece_count or 1
    if label.piece_count < 0 or not 1 <= (label.piece_number or 1) <= count:
        v.add(f"{field}.piece_number", "must be between 1 and piece_count", "OUT_OF_RANGE")
    v.text(label.qr_payload, f"{field}.qr_payload", max_len=500)


CHECKS = {
    "bill_of_lading": _bill_of_lading,
    "commercial_invoice": lambda m, f, v: _trade(m, f, v),
    "customs_declaration": lambda m, f, v: (
        _trade(m, f, v),
        None if COUNTRY.match(m.destination_country) else v.add(
            f"{f}.destination_country", "must be an ISO 3166-1 alpha-2 code", "INVALID_FORMAT"),
        v.text(m.declaration_number, f"{f}.declaration_number", required=True, max_len=50)),
    "packing_list": _packing_list,
    "shipping_label": _shipping_label,
}


def _generate(request: document_service_pb2.GenerateDocumentRequest, v: Violations,
              prefix: str = "") -> str:
    v.text(request.subject, f"{prefix}subject", required=True, max_len=200)
    which = request.WhichOneof("content") or ""
    if not which:
        v.add(f"{prefix}content", "set exactly one of bill_of_lading, commercial_invoice, "
                                  "customs_declaration, packing_list, shipping_label", "REQUIRED")
        return ""
    if which == "commercial_invoice":
        v.text(request.commercial_invoice.invoice_number,
               f"{prefix}commercial_invoice.invoice_number", required=True, max_len=50)
    CHECKS[which](getattr(request, which), f"{prefix}{which}", v)
    return which


def check_generate(request: document_service_pb2.GenerateDocumentRequest) -> str:
    """The request's content field name, or INVALID_ARGUMENT with every violation."""
    v = Violations()
    which = _generate(request, v)
    v.raise_if_any()
    return which


def check_batch(request: document_service_pb2.BatchGenerateDocumentsRequest) -> None:
    """Every item is checked before any work: one bad item fails the request, naming it."""
    v = Violations()
    if not 1 <= len(request.requests) <= MAX_LINES:
        v.add("requests", f"must hold 1 to {MAX_LINES} items (got {len(request.requests)})",
              "OUT_OF_RANGE")
        v.raise_if_any()
    for i, item in enumerate(request.requests):
        if item.request_id:
            v.add(f"requests[{i}].request_id", "set request_id on the batch, not on its items")
        _generate(item, v, f"requests[{i}].")
        if len(v) > 100:
            break
    v.raise_if_any()


def check_pod(request: document_service_pb2.CaptureProofOfDeliveryRequest) -> None:
    v = Violations()
    v.text(request.subject, "subject", required=True, max_len=200)
    if not request.HasField("proof_of_delivery"):
        v.add("proof_of_delivery", "is required", "REQUIRED")
        v.raise_if_any()
    pod, field = request.proof_of_delivery, "proof_of_delivery"
    v.text(pod.recipient_name, f"{field}.recipient_name", required=True, max_len=200)
    if pod.HasField("signature"):
        check_image(pod.signature, f"{field}.signature", v)
    else:
        v.add(f"{field}.signature", "is required", "REQUIRED")
    if len(pod.photos) > MAX_PHOTOS:
        v.add(f"{field}.photos", f"must hold at most {MAX_PHOTOS} photos (got {len(pod.photos)})",
              "TOO_MANY")
    else:
        for i, photo in enumerate(pod.photos):
            check_image(photo, f"{field}.photos[{i}]", v)
    for name in ("expected_items", "scanned_items"):
        items = getattr(pod, name)
        if len(items) > MAX_LINES:
            v.add(f"{field}.{name}", f"must hold at most {MAX_LINES} items", "TOO_MANY")
            continue
        for i, item in enumerate(items):
            v.text(item.code, f"{field}.{name}[{i}].code", required=True, max_len=100)
            v.number(item.quantity, f"{field}.{name}[{i}].quantity", minimum=0, maximum=1_000_000)
    if pod.HasField("location"):
        v.number(pod.location.latitude, f"{field}.location.latitude", minimum=-90, maximum=90)
        v.number(pod.location.longitude, f"{field}.location.longitude", minimum=-180,
                 maximum=180)
    else:
        v.add(f"{field}.location", "is required", "REQUIRED")
    if not pod.HasField("capture_time"):
        v.add(f"{field}.capture_time", "is required", "REQUIRED")
    v.text(pod.device_id, f"{field}.device_id", required=True, max_len=100)
    v.enum(pod.delivered_to, content_pb2.DeliveredTo.DESCRIPTOR, f"{field}.delivered_to",
           allow_unspecified=False)
    v.text(pod.note, f"{field}.note", max_len=1000)
    v.raise_if_any()
