"""Generated PDFs: deterministic bytes, the fields in their text, barcodes that decode back."""

from __future__ import annotations

import hashlib
import io

import pypdf
import pypdfium2
import zxingcpp

from services.document.adapters.render import PdfRenderer, proof_of_delivery
from services.document.domain.model import Item, delivery_exceptions
from tests import document_samples as samples


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def _barcodes(pdf: bytes) -> list[tuple[str, str]]:
    document = pypdfium2.PdfDocument(pdf)
    found = []
    for page in document:
        picture = page.render(scale=4).to_pil()
        found += [(r.format.name, r.text) for r in zxingcpp.read_barcodes(picture)]
    return found


def test_the_same_bol_gives_the_same_bytes_and_another_gives_others() -> None:
    renderer = PdfRenderer()
    first = renderer.render(samples.bill_of_lading(), "orders/a")
    second = renderer.render(samples.bill_of_lading(), "orders/a")
    other = renderer.render(samples.bill_of_lading(pro_number="PRO-1"), "orders/a")
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
    assert first == second
    assert other != first
    assert first.startswith(b"%PDF-")


def test_a_bol_carries_its_fields_and_its_barcodes_decode_to_its_numbers() -> None:
    pdf = PdfRenderer().render(samples.bill_of_lading(), "orders/a")
    text = _text(pdf)
    for expected in ("BOL-2030-0001", "PRO-778899", "FFRT", "Acme GmbH", "Beta AG",
                     "Canned tomatoes", "1250.5", "HAZARDOUS MATERIALS", "CHEMTREC",
                     "PREPAID", "dock 4", "Shipper signature", "70", "85"):
        assert expected in text, expected
    codes = _barcodes(pdf)
    assert ("Code128", "BOL-2030-0001") in codes
    assert ("Code128", "PRO-778899") in codes


def test_a_label_is_4_by_6_inches_with_code128_and_qr() -> None:
    pdf = PdfRenderer().render(samples.label("TRK-55"), "orders/a")
    page = pypdf.PdfReader(io.BytesIO(pdf)).pages[0]
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (288, 432)
    codes = _barcodes(pdf)
    assert ("Code128", "TRK-55") in codes
    assert ("QRCode", "https://track.example/TRK-55") in codes


def test_an_invoice_carries_the_trade_fields() -> None:
    text = _text(PdfRenderer().render(samples.invoice(), "orders/a"))
    for expected in ("INV-42", "DE123456789012345", "GB987654321000", "FCA Hamburg", "8471.30",
                     "CN", "899.50", "8995.00 EUR"):
        assert expected in text, expected


def test_the_pod_summary_lists_the_exceptions_and_shows_the_images() -> None:
    pod = samples.pod()
    exceptions = delivery_exceptions([Item("SKU-1", 3), Item("SKU-2", 1)],
                                     [Item("SKU-1", 2), Item("SKU-2", 1, True), Item("SKU-9", 1)])
    pdf = proof_of_delivery(pod, "orders/a", exceptions)
    text = _text(pdf)
    assert "SHORTAGE: SKU-1 expected 3, delivered 2" in text
    assert "DAMAGED: SKU-2" in text
    assert "OVERAGE: SKU-9 expected 0, delivered 1" in text
    assert "NEIGHBOUR" in text and "M. Mustermann" in text
    images = sum(len(page.images) for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    assert images == 2  # the signature and the one photo


def test_long_text_is_wrapped_not_cut() -> None:
    bol = samples.bill_of_lading(
        special_instructions=" ".join(f"word{i}" for i in range(400)))
    text = _text(PdfRenderer().render(bol, "orders/a"))
    assert "word0" in text and "word399" in text
