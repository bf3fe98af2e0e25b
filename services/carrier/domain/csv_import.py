"""Rate card lanes from a CSV file (the standard library's csv module), all or nothing.

Every problem is reported with its row (the header is row 1) and column, and a file with any
problem imports nothing. Cells are data, never formulas: a cell such as `=cmd|' /C calc'!A0`
in a text column is stored as that text, and in a number column it is an error (not a number);
nothing here evaluates a cell.

Columns (header names, any order, case-insensitive; the README has the full table):
lane_id, origin_country, origin_postal_prefix, origin_postal_from, origin_postal_to,
origin_zone, destination_… (the same four), mode, service_level, transit_days, pricing
(FLAT | PER_KM | PER_KG | PER_PALLET), rate, weight_from_kg, weight_to_kg, minimum_charge,
max_weight_kg, capacity_loads_per_day, currency. A PER_KG lane has one row per weight break,
all with the same lane_id and lane columns.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal

from cartage.carrier.v1 import carrier_pb2
from services.carrier.domain.money import parse_decimal, to_money
from services.carrier.domain.ratecard import check_rate_card
from services.kit.errors import FieldViolation
from services.kit.validation import Violations

REQUIRED = ("lane_id", "origin_country", "destination_country", "mode", "pricing", "rate")
OPTIONAL = ("origin_postal_prefix", "origin_postal_from", "origin_postal_to", "origin_zone",
            "destination_postal_prefix", "destination_postal_from", "destination_postal_to",
            "destination_zone", "service_level", "transit_days", "weight_from_kg",
            "weight_to_kg", "minimum_charge", "max_weight_kg", "capacity_loads_per_day",
            "currency")
COLUMNS = REQUIRED + OPTIONAL
# The columns that describe a lane (the same on every row of a PER_KG lane).
LANE_COLUMNS = tuple(c for c in COLUMNS if c not in ("rate", "weight_from_kg", "weight_to_kg"))
PRICING = ("FLAT", "PER_KM", "PER_KG", "PER_PALLET")
MAX_ROWS = 50_000


@dataclass
class _Lane:
    first_row: int
    cells: dict[str, str]
    message: carrier_pb2.Lane
    break_rows: list[int] = field(default_factory=list)


class _Sheet:
    def __init__(self) -> None:
        self.v = Violations()
        self.header: list[str] = []

    def error(self, row: int, column: str, description: str, reason: str = "INVALID") -> None:
        number = self.header.index(column) + 1 if column in self.header else 0
        where = f"row {row}, column {number} ({column})" if number else f"row {row}"
        self.v.add(f"csv_content.rows[{row}].{column}", f"{where}: {description}", reason)


def _number(sheet: _Sheet, row: int, cells: dict[str, str], column: str,
            *, integer: bool = False) -> Decimal | None:
    text = cells.get(column, "").strip()
    if not text:
        return None
    value = parse_decimal(text)
    if value is None or (integer and value != value.to_integral_value()):
        kind = "a whole number" if integer else "a finite decimal number such as 12.50"
        sheet.error(row, column, f"{text[:40]!r} is not {kind}", "NOT_A_NUMBER")
        return None
    return value


def _place(cells: dict[str, str], side: str) -> carrier_pb2.LocationMatch:
    match = carrier_pb2.LocationMatch(country=cells.get(f"{side}_country", "").strip().upper())
    zone = cells.get(f"{side}_zone", "").strip()
    prefix = cells.get(f"{side}_postal_prefix", "").strip()
    start = cells.get(f"{side}_postal_from", "").strip()
    end = cells.get(f"{side}_postal_to", "").strip()
    if zone:
        match.zone = zone
    elif start or end:
        match.postal_range.start, match.postal_range.end = start, end
    elif prefix:
        match.postal_prefix = prefix
    return match


def _lane(sheet: _Sheet, row: int, cells: dict[str, str], currency: str
          ) -> carrier_pb2.Lane | None:
    for side in ("origin", "destination"):
        forms = [c for c in ("postal_prefix", "postal_from", "zone") if cells.get(f"{side}_{c}")]
        if len(forms) > 1:
            sheet.error(row, f"{side}_{forms[1]}", f"give one of {side}_postal_prefix, "
                                                   f"{side}_postal_from/_to or {side}_zone")
    mode = cells["mode"].strip().upper().removeprefix("MODE_")
    if f"MODE_{mode}" not in carrier_pb2.Mode.keys():
        sheet.error(row, "mode", f"{cells['mode'][:40]!r} is not FTL, LTL, PARCEL or "
                                 "INTERMODAL")
    pricing = cells["pricing"].strip().upper()
    if pricing not in PRICING:
        sheet.error(row, "pricing", f"{cells['pricing'][:40]!r} is not one of "
                                    f"{', '.join(PRICING)}")
    lane = carrier_pb2.Lane(
        lane_id=cells["lane_id"].strip(), origin=_place(cells, "origin"),
        destination=_place(cells, "destination"),
        mode=carrier_pb2.Mode.Value(f"MODE_{mode}") if f"MODE_{mode}" in
        carrier_pb2.Mode.keys() else 0,
        service_level=cells.get("service_level", "").strip())
    transit = _number(sheet, row, cells, "transit_days", integer=True)
    lane.transit_days = int(transit) if transit is not None and abs(transit) < 1000 else 0
    minimum = _number(sheet, row, cells, "minimum_charge")
    if minimum is not None:
        lane.minimum_charge.CopyFrom(to_money(minimum, currency))
    heaviest = _number(sheet, row, cells, "max_weight_kg")
    lane.max_weight_kg = float(heaviest) if heaviest is not None else 0.0
    capacity = _number(sheet, row, cells, "capacity_loads_per_day", integer=True)
    if capacity is not None:
        lane.capacity_loads_per_day = int(max(min(capacity, 10**6), -1))
    return lane if pricing in PRICING else None


def _rate(sheet: _Sheet, row: int, cells: dict[str, str], lane: carrier_pb2.Lane,
          currency: str) -> None:
    rate = _number(sheet, row, cells, "rate")
    if rate is None:
        if not cells.get("rate", "").strip():
            sheet.error(row, "rate", "is required", "REQUIRED")
        return
    money = to_money(rate, currency)
    pricing = cells["pricing"].strip().upper()
    if pricing == "PER_KG":
        lo = _number(sheet, row, cells, "weight_from_kg") or Decimal(0)
        hi = _number(sheet, row, cells, "weight_to_kg") or Decimal(0)
        lane.pricing.per_kg.breaks.add(min_kg=float(lo), max_kg=float(hi), rate_per_kg=money)
    else:
        getattr(lane.pricing, pricing.lower()).CopyFrom(money)


def parse_lanes(text: str, template: carrier_pb2.RateCard
                ) -> tuple[carrier_pb2.RateCard | None, tuple[FieldViolation, ...]]:
    """The template card with the file's lanes, or every problem (card rules included, mapped
    back to the row and column they come from)."""
    sheet = _Sheet()
    currency = template.currency_code
    lanes: dict[str, _Lane] = {}
    broken: set[str] = set()  # lanes with an error of their own rows: not checked further
    try:
        rows = csv.reader(io.StringIO(text, newline=""), strict=True)
        for number, values in enumerate(rows, start=1):
            if number == 1:
                sheet.header = [h.strip().lower() for h in values]
                unknown = [h for h in sheet.header if h not in COLUMNS]
                for name in unknown:
                    sheet.v.add(f"csv_content.rows[1].{name[:40]}",
                                f"row 1: unknown column {name[:40]!r}", "UNKNOWN_COLUMN")
                for name in REQUIRED:
                    if name not in sheet.header:
                        sheet.v.add(f"csv_content.rows[1].{name}",
                                    f"row 1: the required column {name!r} is missing",
                                    "REQUIRED")
                if sheet.v:
                    return None, sheet.v.items
                continue
            if not any(value.strip() for value in values):
                continue
            if number > MAX_ROWS + 1:
                sheet.v.add("csv_content", f"more than {MAX_ROWS:,} rows", "TOO_LARGE")
                break
            if len(values) != len(sheet.header):
                sheet.v.add(f"csv_content.rows[{number}]", f"row {number}: {len(values)} cells, "
                                                           f"the header has {len(sheet.header)}")
                continue
            cells = dict(zip(sheet.header, values, strict=True))
            before = len(sheet.v)
            row_currency = cells.get("currency", "").strip().upper()
            if row_currency and row_currency != currency:
                sheet.error(number, "currency", f"{row_currency[:10]} differs from the card's "
                                                f"{currency}: one currency per card",
                            "MIXED_CURRENCY")
            lane_id = cells["lane_id"].strip()
            known = lanes.get(lane_id)
            if known is None:
                lane = _lane(sheet, number, cells, currency)
                if lane is None:
                    broken.add(lane_id)
                    continue
                known = lanes[lane_id] = _Lane(number, cells, lane)
            else:
                pricing = cells["pricing"].strip().upper()
                if pricing != "PER_KG" or known.cells["pricing"].strip().upper() != "PER_KG":
                    sheet.error(number, "lane_id", f"lane {lane_id[:64]!r} is already on row "
                                                   f"{known.first_row} (only PER_KG lanes have "
                                                   "several rows, one per weight break)",
                                "DUPLICATE")
                    continue
                for column in LANE_COLUMNS:
                    if cells.get(column, "").strip() != known.cells.get(column, "").strip():
                        sheet.error(number, column, f"differs from row {known.first_row} of "
                                                    f"lane {lane_id[:64]!r}")
            known.break_rows.append(number)
            _rate(sheet, number, cells, known.message, currency)
            if len(sheet.v) > before:
                broken.add(lane_id)
    except csv.Error as error:
        sheet.v.add("csv_content", f"not a readable CSV file: {error}", "MALFORMED_CSV")
    if not lanes and not sheet.v:
        sheet.v.add("csv_content", "the file has no lanes", "REQUIRED")
    if not sheet.header:
        return None, sheet.v.items
    # The card's own rules, on the lanes whose rows read cleanly, so that one answer names
    # the file's errors and the card's together.
    clean = [entry for lane_id, entry in lanes.items() if lane_id not in broken]
    card = carrier_pb2.RateCard()
    card.CopyFrom(template)
    card.ClearField("lanes")
    card.lanes.extend(entry.message for entry in clean)
    rules = Violations()
    check_rate_card(card, rules, lanes_required=False)
    problems = sheet.v.items + tuple(_located(v, clean, sheet) for v in rules.items)
    if problems:
        return None, problems
    return card, ()


_LANE_PATH = re.compile(r"^rate_card\.lanes\[(\d+)\](?:\.(.*))?$")
_BREAK_PATH = re.compile(r"^pricing\.per_kg\.breaks\[(\d+)\](?:\.(.*))?$")
_COLUMN_OF = {
    "lane_id": "lane_id", "mode": "mode", "transit_days": "transit_days",
    "minimum_charge": "minimum_charge", "max_weight_kg": "max_weight_kg",
    "capacity_loads_per_day": "capacity_loads_per_day", "service_level": "service_level",
    "min_kg": "weight_from_kg", "max_kg": "weight_to_kg", "rate_per_kg": "rate",
}


def _located(violation: FieldViolation, lanes: list[_Lane], sheet: _Sheet) -> FieldViolation:
    """A card rule's violation on `rate_card.lanes[i]…` as the row and column it came from."""
    found = _LANE_PATH.match(violation.field)
    if not found:
        return violation
    lane = lanes[int(found.group(1))]
    rest = found.group(2) or ""
    row, column = lane.first_row, "lane_id"
    brk = _BREAK_PATH.match(rest)
    if brk:
        row = lane.break_rows[int(brk.group(1))]
        column = _COLUMN_OF.get((brk.group(2) or "min_kg").split(".")[0], "rate")
    elif rest.startswith(("origin", "destination")):
        side, _, leaf = rest.partition(".")
        leaf = leaf.split(".")[0]
        column = {"country": f"{side}_country", "zone": f"{side}_zone",
                  "postal_prefix": f"{side}_postal_prefix",
                  "postal_range": f"{side}_postal_to"}.get(leaf, f"{side}_country")
    elif rest.startswith("pricing"):
        column = "rate"
    elif rest:
        column = _COLUMN_OF.get(rest.split(".")[0], "lane_id")
    local = _Sheet()
    local.header = sheet.header
    local.error(row, column, violation.description, violation.reason)
    return local.v.items[0]
