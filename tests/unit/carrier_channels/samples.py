"""The fixed tender the golden files are built from."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.carrier.channels.model import Party, TenderDocument, TenderStop

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

DOCUMENT = TenderDocument(
    tender_id="TND0001",
    shipment_id="SHP-4711",
    sender_id="CARTAGEDEMO",
    carrier_scac="ABCD",
    equipment="REEFER",
    weight_kg=Decimal("12500.5"),
    pallets=18,
    volume_m3=Decimal("42.25"),
    accessorials=("LIFTGATE", "HAZMAT"),
    stops=(
        TenderStop(1, "PICKUP", Party("Nordfrost Lager", ("Am Hafen 5", "Tor 3"), "Hamburg", "HH",
                                      "20457", "DE"),
                   datetime(2026, 3, 3, 7, 0, tzinfo=UTC), datetime(2026, 3, 3, 10, 0, tzinfo=UTC),
                   "PU-991"),
        TenderStop(2, "DELIVERY", Party("Müller Frischmarkt", ("Königstraße 12",), "München", "BY",
                                        "80331", "DE"),
                   None, datetime(2026, 3, 4, 16, 0, tzinfo=UTC), "PO-55"),
    ),
    offered_amount=Decimal("1250.00"),
    currency="EUR",
    respond_by=datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
)
