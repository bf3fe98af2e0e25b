"""The rules of a rate card, checked as a whole so that one answer names every problem.

Used for CreateRateCard, for ImportRateCard after the CSV is read, and nowhere else: a card
that passes compiles (domain.rates.compile_card) and prices without further checks.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

import pycountry
from google.type import date_pb2, money_pb2

from cartage.carrier.v1 import carrier_pb2
from services.carrier.domain.money import ZERO, known_currency, parse_decimal, valid_money
from services.kit.validation import Violations

MAX_LANES = 10_000
LANE_ID = re.compile(r"^[^\x00-\x1f]{1,64}$")
ZONE_CODE = re.compile(r"^[A-Z0-9_-]{1,32}$")
POSTAL = re.compile(r"^[A-Z0-9-]{1,12}$")
MAX_WEIGHT_KG = 100_000


def known_country(code: str) -> bool:
    return len(code) == 2 and code.isupper() and pycountry.countries.get(alpha_2=code) is not None


def as_date(value: date_pb2.Date) -> dt.date | None:
    try:
        return dt.date(value.year, value.month, value.day)
    except ValueError:
        return None


def check_date(value: date_pb2.Date, has: bool, path: str, v: Violations) -> dt.date | None:
    if not has:
        v.add(path, "is required", "REQUIRED")
        return None
    day = as_date(value)
    if day is None:
        v.add(path, f"is not a calendar date ({value.year}-{value.month}-{value.day})")
    return day


def check_amount(money: money_pb2.Money, path: str, currency: str, v: Violations, *,
                 positive: bool = False) -> None:
    """An amount of the card: valid Money, not negative, in the card's currency."""
    if not valid_money(money):
        v.add(path, "is not a valid google.type.Money (nanos out of range or of another sign)")
        return
    if money.currency_code and money.currency_code != currency:
        v.add(f"{path}.currency_code", f"is {money.currency_code} but the card is in "
                                       f"{currency or '(none)'}: one currency per card",
              "MIXED_CURRENCY")
    if money.units < 0 or money.nanos < 0:
        v.add(path, "must not be negative", "OUT_OF_RANGE")
    elif positive and money.units == 0 and money.nanos == 0:
        v.add(path, "must be greater than 0", "OUT_OF_RANGE")


def _finite(value: float, path: str, v: Violations, *, maximum: float | None = None) -> bool:
    if not math.isfinite(value):
        v.add(path, "must be a finite number", "OUT_OF_RANGE")
        return False
    if value < 0:
        v.add(path, f"must not be negative (got {value:g})", "OUT_OF_RANGE")
        return False
    if maximum is not None and value > maximum:
        v.add(path, f"must be at most {maximum:g} (got {value:g})", "OUT_OF_RANGE")
        return False
    return True


def _check_place(match: carrier_pb2.LocationMatch, path: str, zones: set[str], v: Violations,
                 *, zone_allowed: bool = True) -> None:
    kind = match.WhichOneof("postal")
    if kind == "zone":
        if not zone_allowed:
            v.add(f"{path}.zone", "a zone member cannot name another zone")
        elif match.zone not in zones:
            v.add(f"{path}.zone", f"names no zone of this card ({match.zone!r})", "UNKNOWN_ZONE")
        return
    if not known_country(match.country):
        v.add(f"{path}.country", f"must be an ISO 3166-1 alpha-2 code such as DE "
                                 f"(got {match.country!r})", "UNKNOWN_COUNTRY")
    if kind == "postal_prefix":
        if not POSTAL.match(match.postal_prefix.replace(" ", "").upper()):
            v.add(f"{path}.postal_prefix", "must be 1-12 letters, digits or dashes")
    elif kind == "postal_range":
        start = match.postal_range.start.replace(" ", "").upper()
        end = match.postal_range.end.replace(" ", "").upper()
        if not POSTAL.match(start) or not POSTAL.match(end):
            v.add(f"{path}.postal_range", "start and end must be 1-12 letters, digits or dashes")
        elif len(start) != len(end):
            v.add(f"{path}.postal_range", f"start {start!r} and end {end!r} must be as long")
        elif end < start:
            v.add(f"{path}.postal_range.end", f"{end!r} comes before start {start!r}: the "
                                              "range is inverted", "INVERTED_RANGE")


def _check_breaks(breaks: list[carrier_pb2.WeightBreak], path: str, currency: str,
                  v: Violations) -> None:
    if not breaks:
        v.add(path, "per-kg pricing needs at least one weight break", "REQUIRED")
        return
    bands: list[tuple[float, float, int]] = []
    for i, brk in enumerate(breaks):
        here = f"{path}[{i}]"
        ok = _finite(brk.min_kg, f"{here}.min_kg", v, maximum=MAX_WEIGHT_KG)
        ok = _finite(brk.max_kg, f"{here}.max_kg", v, maximum=MAX_WEIGHT_KG) and ok
        if ok and brk.max_kg and brk.max_kg <= brk.min_kg:
            v.add(f"{here}.max_kg", f"must be greater than min_kg {brk.min_kg:g} (or 0 for no "
                                    "upper bound)")
            ok = False
        if not brk.HasField("rate_per_kg"):
            v.add(f"{here}.rate_per_kg", "is required", "REQUIRED")
        else:
            check_amount(brk.rate_per_kg, f"{here}.rate_per_kg", currency, v)
        if ok:
            bands.append((brk.min_kg, brk.max_kg or math.inf, i))
    bands.sort()
    for (lo_a, hi_a, a), (lo_b, _hi_b, b) in zip(bands, bands[1:], strict=False):
        if lo_b < hi_a:
            v.add(f"{path}[{b}]", f"overlaps break {a} ({lo_a:g}-"
                                  f"{'open' if hi_a == math.inf else f'{hi_a:g}'} kg)",
                  "OVERLAPPING_BREAKS")


def _check_lane(lane: carrier_pb2.Lane, path: str, currency: str, zones: set[str],
                v: Violations) -> None:
    if not LANE_ID.match(lane.lane_id):
        v.add(f"{path}.lane_id", "is required: 1-64 printable characters", "REQUIRED")
    for side in ("origin", "destination"):
        if not lane.HasField(side):
            v.add(f"{path}.{side}", "is required", "REQUIRED")
        else:
            _check_place(getattr(lane, side), f"{path}.{side}", zones, v)
    v.enum(lane.mode, carrier_pb2.Mode.DESCRIPTOR, f"{path}.mode", allow_unspecified=False)
    if not 0 <= lane.transit_days <= 60:
        v.add(f"{path}.transit_days", "must be 0-60 days", "OUT_OF_RANGE")
    basis = lane.pricing.WhichOneof("basis")
    if basis is None:
        v.add(f"{path}.pricing", "needs one of flat, per_km, per_kg, per_pallet", "REQUIRED")
    elif basis == "per_kg":
        _check_breaks(list(lane.pricing.per_kg.breaks), f"{path}.pricing.per_kg.breaks",
                      currency, v)
    else:
        check_amount(getattr(lane.pricing, basis), f"{path}.pricing.{basis}", currency, v)
    if lane.HasField("minimum_charge"):
        check_amount(lane.minimum_charge, f"{path}.minimum_charge", currency, v)
    _finite(lane.max_weight_kg, f"{path}.max_weight_kg", v, maximum=MAX_WEIGHT_KG)
    if lane.capacity_loads_per_day < 0:
        v.add(f"{path}.capacity_loads_per_day", "must not be negative", "OUT_OF_RANGE")


def _check_fuel(bands: list[carrier_pb2.FuelSurchargeBand], v: Violations) -> None:
    spans: list[tuple[Decimal, Decimal | None, int]] = []
    for i, band in enumerate(bands):
        here = f"rate_card.fuel_surcharge[{i}]"
        start = parse_decimal(band.index_from)
        end = parse_decimal(band.index_to) if band.index_to else None
        percent = parse_decimal(band.percent)
        if start is None or start < ZERO:
            v.add(f"{here}.index_from", "must be a finite decimal >= 0 such as 1.40")
        if band.index_to and (end is None or (start is not None and end <= start)):
            v.add(f"{here}.index_to", "must be a finite decimal greater than index_from")
        if percent is None or not ZERO <= percent <= Decimal(100):
            v.add(f"{here}.percent", "must be a finite decimal from 0 to 100", "OUT_OF_RANGE")
        if start is not None and (not band.index_to or (end is not None and end > start)):
            spans.append((start, end, i))
    spans.sort(key=lambda s: s[0])
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:], strict=False):
        if end_a is None or start_b < end_a:
            v.add(f"rate_card.fuel_surcharge[{b}]", f"overlaps band {a}", "OVERLAPPING_BANDS")


def check_rate_card(card: carrier_pb2.RateCard, v: Violations, *, lanes_required: bool = True
                    ) -> None:
    """Every problem of `card`, as violations on `rate_card.…` paths."""
    currency = card.currency_code
    if not known_currency(currency):
        v.add("rate_card.currency_code", f"must be an ISO 4217 currency code such as EUR "
                                         f"(got {currency!r})", "UNKNOWN_CURRENCY")
    v.text(card.display_name, "rate_card.display_name", max_len=200)
    start = check_date(card.valid_from, card.HasField("valid_from"), "rate_card.valid_from", v)
    end = check_date(card.valid_to, card.HasField("valid_to"), "rate_card.valid_to", v)
    if start and end and end < start:
        v.add("rate_card.valid_to", f"{end} is before valid_from {start}", "INVERTED_VALIDITY")
    zones: set[str] = set()
    for i, zone in enumerate(card.zones):
        here = f"rate_card.zones[{i}]"
        if not ZONE_CODE.match(zone.code):
            v.add(f"{here}.code", "must be 1-32 of A-Z, 0-9, _ and -")
        elif zone.code in zones:
            v.add(f"{here}.code", f"zone {zone.code} appears twice", "DUPLICATE")
        zones.add(zone.code)
        if not zone.members:
            v.add(f"{here}.members", "a zone needs at least one member", "REQUIRED")
        for j, member in enumerate(zone.members):
            _check_place(member, f"{here}.members[{j}]", zones, v, zone_allowed=False)
    if lanes_required and not card.lanes:
        v.add("rate_card.lanes", "at least one lane is required", "REQUIRED")
    if len(card.lanes) > MAX_LANES:
        v.add("rate_card.lanes", f"at most {MAX_LANES:,} lanes (got {len(card.lanes):,})")
        return
    seen: set[str] = set()
    for i, lane in enumerate(card.lanes):
        _check_lane(lane, f"rate_card.lanes[{i}]", currency, zones, v)
        if lane.lane_id in seen:
            v.add(f"rate_card.lanes[{i}].lane_id", f"{lane.lane_id!r} appears twice", "DUPLICATE")
        seen.add(lane.lane_id)
    _check_fuel(list(card.fuel_surcharge), v)
    codes: set[int] = set()
    for i, extra in enumerate(card.accessorials):
        here = f"rate_card.accessorials[{i}]"
        v.enum(extra.code, carrier_pb2.AccessorialCode.DESCRIPTOR, f"{here}.code",
               allow_unspecified=False)
        if extra.code in codes:
            v.add(f"{here}.code", "appears twice", "DUPLICATE")
        codes.add(extra.code)
        if not extra.HasField("amount"):
            v.add(f"{here}.amount", "is required", "REQUIRED")
        else:
            check_amount(extra.amount, f"{here}.amount", currency, v)
        if extra.free_minutes < 0:
            v.add(f"{here}.free_minutes", "must not be negative", "OUT_OF_RANGE")
