"""Bad document requests are INVALID_ARGUMENT naming each bad field."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from google.type import money_pb2
from PIL import Image

from cartage.document.v1 import content_pb2, document_service_pb2
from services.document.api.images import MAX_IMAGE_BYTES
from services.document.api.validation import check_generate, check_pod
from services.document.domain.model import Item, ItemException, delivery_exceptions
from services.kit.errors import InvalidArgument
from tests import document_samples as samples


def _violations(call, *args) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        call(*args)
    return {v.field: v.description for v in caught.value.violations}


def _pod_request(**overrides: object) -> document_service_pb2.CaptureProofOfDeliveryRequest:
    return document_service_pb2.CaptureProofOfDeliveryRequest(
        subject="orders/a", proof_of_delivery=samples.pod(**overrides))


def test_valid_requests_pass() -> None:
    assert check_generate(samples.generate()) == "bill_of_lading"
    assert check_generate(samples.generate(commercial_invoice=samples.invoice())) == \
        "commercial_invoice"
    assert check_generate(samples.generate(shipping_label=samples.label())) == "shipping_label"
    check_pod(_pod_request())


def test_trade_fields_are_checked() -> None:
    invoice = samples.invoice()
    invoice.incoterm = "FOO Hamburg"
    invoice.exporter_tax_id = "!"
    invoice.lines[0].hs_code = "84A1"
    invoice.lines[0].unit_value.CopyFrom(money_pb2.Money(currency_code="EUR", units=-5))
    invoice.lines[0].country_of_origin = "China"
    found = _violations(check_generate, samples.generate(commercial_invoice=invoice))
    assert set(found) >= {"commercial_invoice.incoterm", "commercial_invoice.exporter_tax_id",
                          "commercial_invoice.lines[0].hs_code",
                          "commercial_invoice.lines[0].unit_value",
                          "commercial_invoice.lines[0].country_of_origin"}
    assert "Incoterms 2020" in found["commercial_invoice.incoterm"]


@pytest.mark.parametrize("code", ["847130", "8471.30", "84713000", "8471.30.00", "8471300090"])
def test_hs_codes_of_the_right_shape_pass(code: str) -> None:
    invoice = samples.invoice()
    invoice.lines[0].hs_code = code
    check_generate(samples.generate(commercial_invoice=invoice))


@pytest.mark.parametrize("code", ["8471", "84713", "847130000", "84713000901", "8471-30", ""])
def test_hs_codes_of_the_wrong_shape_are_refused(code: str) -> None:
    invoice = samples.invoice()
    invoice.lines[0].hs_code = code
    assert "commercial_invoice.lines[0].hs_code" in _violations(
        check_generate, samples.generate(commercial_invoice=invoice))


def test_bol_fields_are_checked() -> None:
    bol = samples.bill_of_lading(scac="toolong", bol_number="bol 1", emergency_contact="",
                                 freight_terms=7)
    bol.handling_units[0].nmfc_class = "71"
    bol.handling_units[0].weight_kg = -1
    found = _violations(check_generate, samples.generate(bill_of_lading=bol))
    assert set(found) >= {"bill_of_lading.scac", "bill_of_lading.bol_number",
                          "bill_of_lading.emergency_contact", "bill_of_lading.freight_terms",
                          "bill_of_lading.handling_units[0].nmfc_class",
                          "bill_of_lading.handling_units[0].weight_kg"}


def test_no_content_is_refused() -> None:
    found = _violations(check_generate,
                        document_service_pb2.GenerateDocumentRequest(subject="orders/a"))
    assert "content" in found


def _png_bomb() -> bytes:
    """A valid PNG header claiming 30,000 x 30,000 pixels (900 M) with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("image", "needle"), [
    (content_pb2.Image(data=b"%PDF-1.4 not an image", content_type="image/png"),
     "application/pdf"),
    (content_pb2.Image(data=samples.image("JPEG")[:200], content_type="image/jpeg"),
     "cannot be decoded"),
    (content_pb2.Image(data=samples.image("JPEG"), content_type="image/png"), "is not image/png"),
    (content_pb2.Image(data=_png_bomb(), content_type="image/png"), "pixels"),
    (content_pb2.Image(data=b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)"
                            b"</script></svg>", content_type="image/svg+xml"), "SVG"),
    (content_pb2.Image(data=b"<svg><script/></svg>", content_type="image/png"), "SVG"),
    (content_pb2.Image(data=samples.image("GIF"), content_type="image/gif"),
     "image/jpeg or image/png"),
])
def test_bad_images_are_refused_with_a_field_violation(image, needle: str) -> None:
    found = _violations(check_pod, _pod_request(signature=image))
    [(field, description)] = found.items()
    assert field.startswith("proof_of_delivery.signature")
    assert needle in description


def test_an_11_mb_photo_and_11_photos_are_refused() -> None:
    big = content_pb2.Image(data=samples.image("JPEG") + b"\0" * (MAX_IMAGE_BYTES + 1),
                            content_type="image/jpeg")
    found = _violations(check_pod, _pod_request(photos=[samples.jpeg(), big]))
    assert "proof_of_delivery.photos[1].data" in found
    found = _violations(check_pod, _pod_request(photos=[samples.jpeg()] * 11))
    assert "at most 10" in found["proof_of_delivery.photos"]


def test_pillow_reads_what_we_accept() -> None:
    Image.open(io.BytesIO(samples.jpeg().data)).load()


def test_exceptions_are_shortages_overages_and_damage() -> None:
    found = delivery_exceptions([Item("A", 3), Item("B", 1), Item("C", 2)],
                                [Item("A", 2), Item("B", 1, True), Item("D", 1), Item("C", 2)])
    assert found == [ItemException("SHORTAGE", "A", 3, 2), ItemException("DAMAGED", "B", 1, 1),
                     ItemException("OVERAGE", "D", 0, 1)]
