"""Rate cards compiled for quoting, and the pricing engine. Pure: no I/O.

A stored card (the contract's `RateCard` message) is compiled once per version into plain
decimals and matchers (`CompiledCard`), so that a quote over thousands of lanes does no protobuf
or string parsing; lanes are indexed by (origin country, destination country).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from cartage.carrier.v1 import carrier_pb2
from services.carrier.domain.money import ZERO, from_float, parse_decimal, round_minor, to_decimal

HUNDRED = Decimal(100)
SIXTY = Decimal(60)


def normalize_postal(code: str) -> str:
    return "".join(code.split()).upper()


@dataclass(frozen=True, slots=True)
class Place:
    """Where a shipment starts or ends."""

    country: str
    postal: str


@dataclass(frozen=True, slots=True)
class Matcher:
    """One LocationMatch, compiled: a country plus a prefix or range (or the whole country)."""

    country: str
    prefix: str = ""
    start: str = ""
    end: str = ""

    def matches(self, place: Place) -> bool:
        if place.country != self.country:
            return False
        if self.start:
            return len(place.postal) == len(self.start) and self.start <= place.postal <= self.end
        return place.postal.startswith(self.prefix)


def _matchers(match: carrier_pb2.LocationMatch, zones: dict[str, tuple[Matcher, ...]]
              ) -> tuple[Matcher, ...]:
    kind = match.WhichOneof("postal")
    if kind == "zone":
        return zones.get(match.zone, ())
    if kind == "postal_range":
        return (Matcher(match.country, start=normalize_postal(match.postal_range.start),
                        end=normalize_postal(match.postal_range.end)),)
    prefix = normalize_postal(match.postal_prefix) if kind == "postal_prefix" else ""
    return (Matcher(match.country, prefix=prefix),)


@dataclass(frozen=True, slots=True)
class Break:
    min_kg: Decimal
    max_kg: Decimal | None  # None: no upper bound
    rate: Decimal

    def covers(self, weight: Decimal) -> bool:
        return self.min_kg <= weight and (self.max_kg is None or weight < self.max_kg)


@dataclass(frozen=True, slots=True)
class CompiledLane:
    lane_id: str
    origins: tuple[Matcher, ...]
    destinations: tuple[Matcher, ...]
    mode: int
    service_level: str
    transit_days: int
    basis: str  # flat | per_km | per_kg | per_pallet
    rate: Decimal  # flat, per km or per pallet
    breaks: tuple[Break, ...]
    minimum: Decimal | None
    max_weight_kg: Decimal | None
    capacity_per_day: int  # 0: no commitment

    def serves(self, origin: Place, destination: Place, mode: int, service_level: str) -> bool:
        if mode and self.mode and mode != self.mode:
            return False
        if service_level and self.service_level and service_level != self.service_level:
            return False
        return (any(m.matches(origin) for m in self.origins)
                and any(m.matches(destination) for m in self.destinations))


@dataclass(frozen=True, slots=True)
class FuelBand:
    start: Decimal
    end: Decimal | None
    percent: Decimal


@dataclass(frozen=True, slots=True)
class AccessorialRate:
    code: int
    amount: Decimal
    free_minutes: int


@dataclass(frozen=True, slots=True)
class CompiledCard:
    name: str  # carriers/{c}/rateCards/{r}
    carrier_id: str
    currency: str
    valid_from: dt.date
    valid_to: dt.date
    lanes_by_countries: dict[tuple[str, str], tuple[CompiledLane, ...]]
    fuel: tuple[FuelBand, ...]
    accessorials: dict[int, AccessorialRate]

    def valid_on(self, day: dt.date) -> bool:
        return self.valid_from <= day <= self.valid_to

    def lanes_for(self, origin: Place, destination: Place) -> tuple[CompiledLane, ...]:
        return self.lanes_by_countries.get((origin.country, destination.country), ())


def _date(value: object) -> dt.date:
    return dt.date(value.year, value.month, value.day)  # type: ignore[attr-defined]


def _optional_money(lane: carrier_pb2.Lane) -> Decimal | None:
    return to_decimal(lane.minimum_charge) if lane.HasField("minimum_charge") else None


def compile_card(name: str, carrier_id: str, card: carrier_pb2.RateCard) -> CompiledCard:
    """A validated card (domain.ratecard.check_rate_card) compiled for quoting."""
    zones = {z.code: tuple(m for member in z.members for m in _matchers(member, {}))
             for z in card.zones}
    by_countries: dict[tuple[str, str], list[CompiledLane]] = {}
    for lane in card.lanes:
        basis = lane.pricing.WhichOneof("basis") or "flat"
        rate, breaks = ZERO, ()
        if basis == "per_kg":
            breaks = tuple(sorted(
                (Break(from_float(b.min_kg), from_float(b.max_kg) if b.max_kg else None,
                       to_decimal(b.rate_per_kg)) for b in lane.pricing.per_kg.breaks),
                key=lambda b: b.min_kg))
        else:
            rate = to_decimal(getattr(lane.pricing, basis))
        compiled = CompiledLane(
            lane_id=lane.lane_id, origins=_matchers(lane.origin, zones),
            destinations=_matchers(lane.destination, zones), mode=lane.mode,
            service_level=lane.service_level, transit_days=lane.transit_days, basis=basis,
            rate=rate, breaks=breaks, minimum=_optional_money(lane),
            max_weight_kg=from_float(lane.max_weight_kg) if lane.max_weight_kg else None,
            capacity_per_day=lane.capacity_loads_per_day)
        pairs = {(o.country, d.country) for o in compiled.origins for d in compiled.destinations}
        for pair in pairs:
            by_countries.setdefault(pair, []).append(compiled)
    fuel = tuple(sorted(
        (FuelBand(parse_decimal(b.index_from) or ZERO,
                  parse_decimal(b.index_to) if b.index_to else None,
                  parse_decimal(b.percent) or ZERO) for b in card.fuel_surcharge),
        key=lambda b: b.start))
    accessorials = {a.code: AccessorialRate(a.code, to_decimal(a.amount), a.free_minutes)
                    for a in card.accessorials}
    return CompiledCard(name, carrier_id, card.currency_code, _date(card.valid_from),
                        _date(card.valid_to),
                        {k: tuple(v) for k, v in by_countries.items()}, fuel, accessorials)


@dataclass(frozen=True, slots=True)
class Load:
    """What pricing and eligibility need to know about a shipment."""

    origin: Place
    destination: Place
    weight_kg: Decimal
    pallets: int
    distance_km: Decimal
    equipment: int
    mode: int
    service_level: str
    accessorials: tuple[tuple[int, int], ...] = ()  # (code, minutes)


@dataclass(frozen=True, slots=True)
class Line:
    code: str
    description: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Price:
    currency: str
    linehaul: Decimal
    minimum_applied: bool
    fuel: Decimal
    accessorials: tuple[Line, ...]
    total: Decimal
    lines: tuple[Line, ...] = field(default=())


class NotPriceable(Exception):
    """The lane cannot price this load; `reason` is an ExclusionReason name suffix."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _fmt(value: Decimal) -> str:
    return f"{value.normalize():f}"


ACCESSORIAL_NAMES = {v.number: v.name.removeprefix("ACCESSORIAL_CODE_")
                     for v in carrier_pb2.AccessorialCode.DESCRIPTOR.values if v.number}


def price(card: CompiledCard, lane: CompiledLane, load: Load, fuel_index: Decimal) -> Price:
    """The itemised price of `load` on `lane` (raises NotPriceable). Each line is rounded to
    the currency's minor unit, half up; the total is the sum of the rounded lines."""
    cur = card.currency
    if lane.basis == "flat":
        raw, how = lane.rate, f"flat {_fmt(lane.rate)} {cur}"
    elif lane.basis == "per_km":
        raw = lane.rate * load.distance_km
        how = f"{_fmt(load.distance_km)} km x {_fmt(lane.rate)} {cur}/km"
    elif lane.basis == "per_pallet":
        if load.pallets <= 0:
            raise NotPriceable("NOT_PRICEABLE", f"lane {lane.lane_id} prices per pallet and "
                                                "the shipment has no pallets")
        raw = lane.rate * load.pallets
        how = f"{load.pallets} pallets x {_fmt(lane.rate)} {cur}"
    else:
        band = next((b for b in lane.breaks if b.covers(load.weight_kg)), None)
        if band is None:
            raise NotPriceable("NOT_PRICEABLE", f"lane {lane.lane_id} has no weight break for "
                                                f"{_fmt(load.weight_kg)} kg")
        raw = band.rate * load.weight_kg
        upper = f"-{_fmt(band.max_kg)}" if band.max_kg is not None else "+"
        how = (f"{_fmt(load.weight_kg)} kg x {_fmt(band.rate)} {cur}/kg "
               f"(break {_fmt(band.min_kg)}{upper} kg)")
    linehaul = round_minor(raw, cur)
    minimum_applied = lane.minimum is not None and linehaul < lane.minimum
    if minimum_applied:
        linehaul = round_minor(lane.minimum, cur)  # type: ignore[arg-type]
        how += f", raised to the minimum charge {_fmt(linehaul)} {cur}"
    lines = [Line("LINEHAUL", how, linehaul)]
    band = next((b for b in card.fuel if b.start <= fuel_index
                 and (b.end is None or fuel_index < b.end)), None)
    percent = band.percent if band is not None else ZERO
    fuel = round_minor(linehaul * percent / HUNDRED, cur)
    lines.append(Line("FUEL", f"{_fmt(percent)} % of linehaul at fuel index "
                              f"{_fmt(fuel_index)}", fuel))
    extras = []
    for code, minutes in load.accessorials:
        rate = card.accessorials.get(code)
        label = ACCESSORIAL_NAMES.get(code, str(code))
        if rate is None:
            raise NotPriceable("ACCESSORIAL", f"{label} is not priced on {card.name}")
        if code == carrier_pb2.ACCESSORIAL_CODE_DETENTION:
            billable = max(0, minutes - rate.free_minutes)
            amount = round_minor(rate.amount * Decimal(billable) / SIXTY, cur)
            text = (f"{billable} min after {rate.free_minutes} free x "
                    f"{_fmt(rate.amount)} {cur}/h")
        else:
            amount, text = round_minor(rate.amount, cur), f"{_fmt(rate.amount)} {cur}"
        extras.append(Line(label, text, amount))
    lines.extend(extras)
    total = linehaul + fuel + sum((e.amount for e in extras), ZERO)
    return Price(cur, linehaul, minimum_applied, fuel, tuple(extras), total, tuple(lines))


def matching_lanes(cards: Iterable[CompiledCard], load: Load, day: dt.date
                   ) -> list[tuple[CompiledCard, CompiledLane]]:
    """Every lane of the cards valid on `day` that serves the load's places, mode and level."""
    return [(card, lane) for card in cards if card.valid_on(day)
            for lane in card.lanes_for(load.origin, load.destination)
            if lane.serves(load.origin, load.destination, load.mode, load.service_level)]
