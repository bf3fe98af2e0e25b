"""Sample document requests and images the document tests share (made at test time)."""

from __future__ import annotations

import io

from google.protobuf import timestamp_pb2
from google.type import latlng_pb2, money_pb2, postal_address_pb2
from PIL import Image

from cartage.document.v1 import content_pb2, document_service_pb2
from cartage.type.v1 import party_pb2


def party(name: str, city: str = "Hamburg", country: str = "DE") -> party_pb2.Party:
    return party_pb2.Party(name=name, address=postal_address_pb2.PostalAddress(
        region_code=country, postal_code="20095", locality=city,
        address_lines=[f"{name} Str. 1"]), contact_name="Dispatch", phone="+49 40 123")


def bill_of_lading(**overrides: object) -> content_pb2.BillOfLading:
    bol = content_pb2.BillOfLading(
        bol_number="BOL-2030-0001", pro_number="PRO-778899", shipper=party("Acme GmbH"),
        consignee=party("Beta AG", "Berlin"), carrier_name="Fast Freight", scac="FFRT",
        handling_units=[
            content_pb2.HandlingUnit(quantity=4, package_type="PLT", weight_kg=1250.5,
                                     description="Canned tomatoes", nmfc_class="70",
                                     nmfc_item="12345"),
            content_pb2.HandlingUnit(quantity=1, package_type="DRM", weight_kg=200,
                                     description="Paint, flammable", nmfc_class="85",
                                     hazmat=True)],
        freight_terms=content_pb2.FREIGHT_TERMS_PREPAID,
        emergency_contact="CHEMTREC +1 800 424 9300",
        special_instructions="Deliver to dock 4, call ahead",
        ship_time=timestamp_pb2.Timestamp(seconds=1_893_456_000))
    for key, value in overrides.items():
        setattr(bol, key, value)
    return bol


def invoice() -> content_pb2.CommercialInvoice:
    return content_pb2.CommercialInvoice(
        invoice_number="INV-42", exporter=party("Acme GmbH"), importer=party("Gamma Ltd",
                                                                            "London", "GB"),
        exporter_tax_id="DE123456789012345", importer_tax_id="GB987654321000",
        incoterm="FCA Hamburg", currency_code="EUR",
        lines=[content_pb2.GoodsLine(description="Laptops", hs_code="8471.30", quantity=10,
                                     country_of_origin="CN", net_weight_kg=25,
                                     unit_value=money_pb2.Money(currency_code="EUR",
                                                                units=899, nanos=500_000_000))])


def label(tracking: str = "TRK-0001") -> content_pb2.ShippingLabel:
    return content_pb2.ShippingLabel(
        ship_from=party("Acme GmbH"), ship_to=party("Beta AG", "Berlin"),
        tracking_number=tracking, carrier_name="Fast Freight", service="EXPRESS",
        weight_kg=12.5, piece_number=1, piece_count=2,
        qr_payload=f"https://track.example/{tracking}")


def image(kind: str = "PNG", size: tuple[int, int] = (64, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=kind)
    return out.getvalue()


def png(size: tuple[int, int] = (64, 32)) -> content_pb2.Image:
    return content_pb2.Image(data=image("PNG", size), content_type="image/png",
                             file_name="signature.png")


def jpeg(size: tuple[int, int] = (320, 240)) -> content_pb2.Image:
    return content_pb2.Image(data=image("JPEG", size), content_type="image/jpeg",
                             file_name="photo.jpg")


def pod(**overrides: object) -> content_pb2.ProofOfDelivery:
    message = content_pb2.ProofOfDelivery(
        recipient_name="M. Mustermann", signature=png(), photos=[jpeg()],
        expected_items=[content_pb2.ScannedItem(code="SKU-1", quantity=3),
                        content_pb2.ScannedItem(code="SKU-2", quantity=1)],
        scanned_items=[content_pb2.ScannedItem(code="SKU-1", quantity=2),
                       content_pb2.ScannedItem(code="SKU-2", quantity=1, damaged=True),
                       content_pb2.ScannedItem(code="SKU-9", quantity=1)],
        location=latlng_pb2.LatLng(latitude=52.52, longitude=13.40),
        capture_time=timestamp_pb2.Timestamp(seconds=1_893_500_000), device_id="scanner-7",
        delivered_to=content_pb2.DELIVERED_TO_NEIGHBOUR, note="No. 12, Schmidt")
    for key, value in overrides.items():
        if isinstance(value, list):
            del getattr(message, key)[:]
            getattr(message, key).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(message, key).CopyFrom(value)
        else:
            setattr(message, key, value)
    return message


def generate(subject: str = "orders/abc", request_id: str = "", **content: object
             ) -> document_service_pb2.GenerateDocumentRequest:
    if not content:
        content = {"bill_of_lading": bill_of_lading()}
    return document_service_pb2.GenerateDocumentRequest(subject=subject, request_id=request_id,
                                                        **content)  # type: ignore[arg-type]
