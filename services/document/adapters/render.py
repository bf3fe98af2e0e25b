"""PDFs with reportlab: bills of lading, invoices, customs declarations, packing lists,
4 x 6 in labels, and the proof-of-delivery summary.

Deterministic output: `invariant=1` fixes the creation date and the document id reportlab
would otherwise take from the clock and a random source, and the metadata (creator, producer,
title) is ours and fixed, so the same content gives the same bytes and the same SHA-256. The
standard Helvetica fonts keep the text extractable (and nothing is embedded).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image as PILImage
from reportlab.graphics.barcode import code128, qrencoder
from reportlab.lib.pagesizes import A4, inch
from reportlab.lib.utils import ImageReader, simpleSplit
from reportlab.pdfgen import canvas

from cartage.document.v1 import content_pb2
from cartage.type.v1 import party_pb2
from services.document.domain.model import ItemException

PDF = "application/pdf"
LABEL_SIZE = (4 * inch, 6 * inch)
_MARGIN = 40
_LINE = 13

FREIGHT_TERMS = {1: "PREPAID", 2: "COLLECT", 3: "THIRD PARTY"}
DELIVERED_TO = {1: "PERSON", 2: "NEIGHBOUR", 3: "SAFE PLACE"}


class _Page:
    """A canvas with a cursor that writes lines downwards and starts new pages."""

    def __init__(self, title: str, size: tuple[float, float] = A4) -> None:
        self.buffer = io.BytesIO()
        self.size = size
        self.c = canvas.Canvas(self.buffer, pagesize=size, invariant=1, pageCompression=1)
        self.c.setTitle(title)
        self.c.setAuthor("Cartage")
        self.c.setCreator("Cartage document service")
        self.c.setProducer("Cartage (reportlab)")
        self.c.setSubject(title)
        self.y = size[1] - _MARGIN

    def need(self, height: float) -> None:
        if self.y - height < _MARGIN:
            self.c.showPage()
            self.y = self.size[1] - _MARGIN

    def text(self, value: str, *, size: float = 9, bold: bool = False, x: float = _MARGIN
             ) -> None:
        """A line, wrapped at the right margin (nothing a partner sent is cut off)."""
        font = "Helvetica-Bold" if bold else "Helvetica"
        width = self.size[0] - x - (_MARGIN if self.size[0] > LABEL_SIZE[0] else 14)
        for line in simpleSplit(value, font, size, width) or [""]:
            self.need(size + 4)
            self.c.setFont(font, size)
            self.c.drawString(x, self.y, line)
            self.y -= size + 4

    def heading(self, value: str) -> None:
        self.y -= 4
        self.text(value, size=11, bold=True)

    def barcode(self, value: str, *, height: float = 36, x: float = _MARGIN,
                bar_width: float = 1.0) -> None:
        self.need(height + 16)
        bars = code128.Code128(value, barHeight=height, barWidth=bar_width, humanReadable=True)
        bars.drawOn(self.c, x, self.y - height)
        self.y -= height + 16

    def qr(self, value: str, *, side: float, x: float, border: int = 4) -> None:
        """A QR code (level M) from reportlab's encoder, drawn as one filled path of its dark
        runs: the same modules its QrCodeWidget draws, at a tenth of the cost (the widget makes
        a shape object per run)."""
        code = qrencoder.QRCode(None, qrencoder.QRErrorCorrectLevel.M)
        code.addData(value)
        code.make()
        count = code.getModuleCount()
        box = side / (count + 2 * border)
        top = self.y
        path = self.c.beginPath()
        for r, row in enumerate(code.modules):
            column = 0
            for dark, run in itertools.groupby(bool(m) for m in row):
                length = len(list(run))
                if dark:
                    path.rect(x + (column + border) * box, top - (r + border + 1) * box,
                              length * box, box)
                column += length
        self.c.setFillColorRGB(0, 0, 0)
        self.c.drawPath(path, stroke=0, fill=1)

    def image(self, data: bytes, *, box: tuple[float, float], x: float) -> None:
        """A thumbnail of `data` fitted into `box` (width, height), top-left at (x, y)."""
        with PILImage.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            im.thumbnail((int(box[0] * 2), int(box[1] * 2)))
            out = io.BytesIO()
            im.save(out, format="JPEG", quality=80)
            w, h = im.size
        scale = min(box[0] / w, box[1] / h)
        self.c.drawImage(ImageReader(io.BytesIO(out.getvalue())), x, self.y - h * scale,
                         width=w * scale, height=h * scale)

    def finish(self) -> bytes:
        self.c.showPage()
        self.c.save()
        return self.buffer.getvalue()


def _party(page: _Page, label: str, party: party_pb2.Party) -> None:
    page.text(f"{label}: {party.name}", bold=True)
    address = party.address
    for line in address.address_lines:
        page.text(f"    {line}")
    place = " ".join(p for p in (address.postal_code, address.locality) if p)
    if place or address.region_code:
        page.text(f"    {place} {address.region_code}".rstrip())
    contact = ", ".join(p for p in (party.contact_name, party.phone, party.email) if p)
    if contact:
        page.text(f"    Contact: {contact}")


def bill_of_lading(bol: content_pb2.BillOfLading, subject: str) -> bytes:
    page = _Page(f"Bill of Lading {bol.bol_number}")
    page.text("STRAIGHT BILL OF LADING - SHORT FORM - NOT NEGOTIABLE", size=13, bold=True)
    page.text(f"Subject: {subject}")
    page.text(f"Bill of Lading Number: {bol.bol_number}", bold=True)
    page.barcode(bol.bol_number)
    page.text(f"Carrier: {bol.carrier_name}    SCAC: {bol.scac}")
    page.text(f"PRO Number: {bol.pro_number}", bold=True)
    page.barcode(bol.pro_number)
    if bol.HasField("ship_time"):
        page.text(f"Ship date: {bol.ship_time.ToDatetime().date().isoformat()}")
    _party(page, "Ship From", bol.shipper)
    _party(page, "Ship To", bol.consignee)
    if bol.HasField("bill_to"):
        _party(page, "Third Party Freight Charges Bill To", bol.bill_to)
    page.text(f"Freight Charge Terms: {FREIGHT_TERMS.get(bol.freight_terms, '')}", bold=True)
    page.heading("Carrier Information")
    page.text("Qty  Type  Weight (kg)  HM  Commodity description            NMFC #  Class")
    total_units, total_weight = 0, 0.0
    for unit in bol.handling_units:
        total_units += unit.quantity
        total_weight += unit.weight_kg
        page.text(f"{unit.quantity:<4} {unit.package_type:<5} {unit.weight_kg:>11.1f}  "
                  f"{'X' if unit.hazmat else ' ':<2}  {unit.description[:32]:<32} "
                  f"{unit.nmfc_item:<7} {unit.nmfc_class}")
    page.text(f"Grand total: {total_units} handling units, {total_weight:.1f} kg", bold=True)
    if any(unit.hazmat for unit in bol.handling_units):
        page.text("HAZARDOUS MATERIALS", bold=True)
        page.text(f"Emergency Response Contact: {bol.emergency_contact}", bold=True)
    if bol.special_instructions:
        page.heading("Special Instructions")
        page.text(bol.special_instructions)
    page.heading("Signatures")
    page.text("Shipper signature / date: ______________________   "
              "Carrier signature / pickup date: ______________________")
    page.text("Receiver signature / date: ______________________")
    return page.finish()


def _goods(page: _Page, lines: Sequence[content_pb2.GoodsLine], currency: str) -> None:
    page.text("Description                        HS code       Origin  Qty      Unit value"
              "      Net kg")
    total = 0
    for line in lines:
        value = line.unit_value.units + line.unit_value.nanos / 1e9
        total_line = value * line.quantity
        total += round(total_line * 100)
        page.text(f"{line.description[:32]:<32}   {line.hs_code:<12}  {line.country_of_origin:<6}"
                  f"  {line.quantity:<8g} {value:>12.2f} {currency}  {line.net_weight_kg:>8.2f}")
    page.text(f"Total value: {total / 100:.2f} {currency}", bold=True)


def commercial_invoice(invoice: content_pb2.CommercialInvoice, subject: str) -> bytes:
    page = _Page(f"Commercial Invoice {invoice.invoice_number}")
    page.text("COMMERCIAL INVOICE", size=14, bold=True)
    page.text(f"Invoice number: {invoice.invoice_number}    Subject: {subject}")
    if invoice.HasField("invoice_time"):
        page.text(f"Date: {invoice.invoice_time.ToDatetime().date().isoformat()}")
    _party(page, "Exporter", invoice.exporter)
    page.text(f"    EORI / tax id: {invoice.exporter_tax_id}")
    _party(page, "Importer", invoice.importer)
    page.text(f"    EORI / tax id: {invoice.importer_tax_id}")
    page.text(f"Incoterms 2020: {invoice.incoterm}    Currency: {invoice.currency_code}")
    page.heading("Goods")
    _goods(page, invoice.lines, invoice.currency_code)
    return page.finish()


def customs_declaration(declaration: content_pb2.CustomsDeclaration, subject: str) -> bytes:
    page = _Page(f"Customs Declaration {declaration.declaration_number}")
    page.text("CUSTOMS DECLARATION (EXPORT)", size=14, bold=True)
    page.text(f"Declaration number: {declaration.declaration_number}    Subject: {subject}")
    _party(page, "Exporter", declaration.exporter)
    page.text(f"    EORI / tax id: {declaration.exporter_tax_id}")
    _party(page, "Importer", declaration.importer)
    page.text(f"    EORI / tax id: {declaration.importer_tax_id}")
    page.text(f"Country of destination: {declaration.destination_country}    "
              f"Incoterms 2020: {declaration.incoterm}    Currency: {declaration.currency_code}")
    page.heading("Goods")
    _goods(page, declaration.lines, declaration.currency_code)
    return page.finish()


def packing_list(packing: content_pb2.PackingList, subject: str) -> bytes:
    page = _Page(f"Packing List {packing.reference}")
    page.text("PACKING LIST", size=14, bold=True)
    page.text(f"Reference: {packing.reference}    Subject: {subject}")
    _party(page, "Shipper", packing.shipper)
    _party(page, "Consignee", packing.consignee)
    page.heading("Contents")
    page.text("Package     SKU              Description                       Qty    Weight kg")
    weight = 0.0
    for line in packing.lines:
        weight += line.weight_kg
        page.text(f"{line.package_id:<11} {line.sku:<16} {line.description[:32]:<32}  "
                  f"{line.quantity:<6g} {line.weight_kg:>9.2f}")
    packages = len({line.package_id for line in packing.lines})
    page.text(f"Total: {packages} packages, {weight:.2f} kg", bold=True)
    return page.finish()


def shipping_label(label: content_pb2.ShippingLabel, subject: str) -> bytes:
    page = _Page(f"Shipping Label {label.tracking_number}", LABEL_SIZE)
    page.y = LABEL_SIZE[1] - 24
    left = 14.0
    page.text(f"FROM: {label.ship_from.name}", size=8, x=left)
    for line in label.ship_from.address.address_lines:
        page.text(line, size=8, x=left)
    address = label.ship_from.address
    page.text(f"{address.postal_code} {address.locality} {address.region_code}", size=8, x=left)
    page.y -= 6
    page.text("SHIP TO:", size=9, bold=True, x=left)
    page.text(label.ship_to.name, size=13, bold=True, x=left)
    for line in label.ship_to.address.address_lines:
        page.text(line, size=11, x=left)
    address = label.ship_to.address
    page.text(f"{address.postal_code} {address.locality} {address.region_code}", size=13,
              bold=True, x=left)
    page.y -= 6
    page.text(f"{label.carrier_name}  {label.service}", size=14, bold=True, x=left)
    page.text(f"Weight: {label.weight_kg:.1f} kg    Piece {label.piece_number} of "
              f"{label.piece_count}", size=9, x=left)
    page.text(f"Ref: {subject}", size=8, x=left)
    page.y -= 4
    page.qr(label.qr_payload or label.tracking_number, side=1.3 * inch,
            x=LABEL_SIZE[0] - 1.5 * inch)
    page.y -= 1.3 * inch + 8
    page.text(f"TRACKING #: {label.tracking_number}", size=10, bold=True, x=left)
    page.barcode(label.tracking_number, height=60, x=left, bar_width=1.1)
    return page.finish()


def proof_of_delivery(pod: content_pb2.ProofOfDelivery, subject: str,
                      exceptions: Sequence[ItemException]) -> bytes:
    page = _Page(f"Proof of Delivery {subject}")
    page.text("PROOF OF DELIVERY", size=14, bold=True)
    page.text(f"Subject: {subject}")
    page.text(f"Recipient: {pod.recipient_name}")
    page.text(f"Delivered to: {DELIVERED_TO.get(pod.delivered_to, '')}"
              + (f" - {pod.note}" if pod.note else ""))
    if pod.HasField("capture_time"):
        page.text(f"Captured at: {pod.capture_time.ToDatetime().isoformat()}Z")
    if pod.HasField("location"):
        page.text(f"Location: {pod.location.latitude:.6f}, {pod.location.longitude:.6f}")
    page.text(f"Device: {pod.device_id}")
    page.heading("Items")
    expected = {i.code: i.quantity for i in pod.expected_items}
    page.text(f"Expected: {sum(expected.values())} items in {len(expected)} codes; "
              f"scanned: {sum(i.quantity for i in pod.scanned_items)}")
    if exceptions:
        page.heading("Exceptions")
        for item in exceptions:
            page.text(f"{item.kind}: {item.code} expected {item.expected}, "
                      f"delivered {item.delivered}")
    else:
        page.text("No exceptions: everything expected was delivered undamaged.")
    page.heading("Signature")
    page.need(70)
    page.image(pod.signature.data, box=(200, 60), x=_MARGIN)
    page.y -= 70
    if pod.photos:
        page.heading(f"Photos ({len(pod.photos)})")
        for row in range(0, len(pod.photos), 4):
            page.need(110)
            for column, photo in enumerate(pod.photos[row:row + 4]):
                page.image(photo.data, box=(120, 100), x=_MARGIN + column * 130)
            page.y -= 110
    return page.finish()


RENDERERS: dict[str, Callable[[Any, str], bytes]] = {
    "bill_of_lading": bill_of_lading,
    "commercial_invoice": commercial_invoice,
    "customs_declaration": customs_declaration,
    "packing_list": packing_list,
    "shipping_label": shipping_label,
}


class PdfRenderer:
    """The use cases' `Renderer` port."""

    def render(self, content: Any, subject: str) -> bytes:
        """`content`: one of the GenerateDocumentRequest content messages."""
        field = {
            content_pb2.BillOfLading: "bill_of_lading",
            content_pb2.CommercialInvoice: "commercial_invoice",
            content_pb2.CustomsDeclaration: "customs_declaration",
            content_pb2.PackingList: "packing_list",
            content_pb2.ShippingLabel: "shipping_label",
        }[type(content)]
        return RENDERERS[field](content, subject)

    def render_pod(self, pod: Any, subject: str, exceptions: Sequence[ItemException]) -> bytes:
        return proof_of_delivery(pod, subject, exceptions)
