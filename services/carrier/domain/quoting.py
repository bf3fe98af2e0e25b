"""Rate shopping: which carriers may take a load (and why the others may not), their prices,
and the ranking by a cost/score weighting. Pure: the use case loads the inputs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from services.carrier.domain.rates import (
    CompiledCard,
    CompiledLane,
    Load,
    NotPriceable,
    Price,
    matching_lanes,
    price,
)

DEFAULT_COST_WEIGHT = 0.7
NEUTRAL_SCORE = 0.8  # a lane without history: trusted, but below a proven carrier


@dataclass(frozen=True, slots=True)
class CarrierFacts:
    """What eligibility needs of a carrier."""

    id: str
    display_name: str
    active: bool
    equipment: frozenset[int]
    max_weight_kg: Decimal | None
    insurance_expiry: dt.date | None
    authority_expiry: dt.date | None
    oauth_client_id: str = ""


@dataclass(frozen=True, slots=True)
class Quote:
    carrier: CarrierFacts
    card: CompiledCard
    lane: CompiledLane
    price: Price
    lane_score: float
    rank_score: float = 0.0
    rank: int = 0


@dataclass(frozen=True, slots=True)
class Exclusion:
    carrier: CarrierFacts
    reason: str  # an ExclusionReason name without its prefix: NO_LANE, SUSPENDED, ...
    detail: str


def _kg(value: Decimal) -> str:
    return f"{value.normalize():,f} kg"


def no_lane_detail(load: Load, day: dt.date) -> str:
    return (f"no rate card valid on {day} has a lane from {load.origin.country} "
            f"{load.origin.postal} to {load.destination.country} {load.destination.postal}")


def evaluate(carrier: CarrierFacts, cards: Sequence[CompiledCard], load: Load, day: dt.date,
             currency: str, fuel_index: Decimal, booked: Mapping[tuple[str, str], int],
             scores: Mapping[tuple[str, str], float], no_lane: str = "") -> Quote | Exclusion:
    """The carrier's best price for the load, or the first reason it is out. `booked` counts
    the loads already booked per (carrier id, lane id) on `day`; `scores` are lane scores."""
    if not carrier.active:
        return Exclusion(carrier, "SUSPENDED", "the carrier is suspended")
    if carrier.insurance_expiry is None or carrier.insurance_expiry < day:
        return Exclusion(carrier, "INSURANCE_EXPIRED",
                         f"insurance expired on {carrier.insurance_expiry} (ship date {day})")
    if carrier.authority_expiry is None or carrier.authority_expiry < day:
        return Exclusion(carrier, "AUTHORITY_EXPIRED", f"operating authority expired on "
                                                       f"{carrier.authority_expiry}")
    if load.equipment and load.equipment not in carrier.equipment:
        return Exclusion(carrier, "EQUIPMENT", "the carrier has no equipment of the kind asked")
    if carrier.max_weight_kg is not None and load.weight_kg > carrier.max_weight_kg:
        return Exclusion(carrier, "OVER_WEIGHT_LIMIT", f"{_kg(load.weight_kg)} is over the "
                                                       f"carrier's limit of "
                                                       f"{_kg(carrier.max_weight_kg)}")
    lanes = matching_lanes(cards, load, day)
    if not lanes:
        return Exclusion(carrier, "NO_LANE", no_lane or no_lane_detail(load, day))
    in_currency = [(c, ln) for c, ln in lanes if c.currency == currency]
    if not in_currency:
        return Exclusion(carrier, "CURRENCY", f"its lanes are priced in "
                                              f"{', '.join(sorted({c.currency for c, _ in lanes}))}"
                                              f", the quote is in {currency}")
    light = [(c, ln) for c, ln in in_currency
             if ln.max_weight_kg is None or load.weight_kg <= ln.max_weight_kg]
    if not light:
        limit = max(ln.max_weight_kg or Decimal(0) for _, ln in in_currency)
        return Exclusion(carrier, "OVER_WEIGHT_LIMIT", f"{_kg(load.weight_kg)} is over the "
                                                       f"lane limit of {_kg(limit)}")
    free = [(c, ln) for c, ln in light if not ln.capacity_per_day
            or booked.get((carrier.id, ln.lane_id), 0) < ln.capacity_per_day]
    if not free:
        _, lane = light[0]
        return Exclusion(carrier, "CAPACITY_FULL", f"lane {lane.lane_id} has its "
                                                   f"{lane.capacity_per_day} loads for {day}")
    best: Quote | None = None
    problem: NotPriceable | None = None
    for card, lane in free:
        try:
            offer = price(card, lane, load, fuel_index)
        except NotPriceable as error:
            problem = problem or error
            continue
        if best is None or offer.total < best.price.total:
            score = scores.get((carrier.id, lane.lane_id), NEUTRAL_SCORE)
            best = Quote(carrier, card, lane, offer, score)
    if best is None:
        assert problem is not None
        return Exclusion(carrier, problem.reason, problem.detail)
    return best


def rank(quotes: list[Quote], cost_weight: float = DEFAULT_COST_WEIGHT) -> list[Quote]:
    """Best first by w x (cheapest / price) + (1 - w) x lane score; ties by price, then id."""
    if not quotes:
        return []
    cheapest = min(q.price.total for q in quotes)

    def score(quote: Quote) -> float:
        total = quote.price.total
        relative = 1.0 if total <= 0 else float(cheapest / total) if cheapest > 0 else 0.0
        return cost_weight * relative + (1 - cost_weight) * quote.lane_score

    scored = sorted(((score(q), q) for q in quotes),
                    key=lambda sq: (-sq[0], sq[1].price.total, sq[1].carrier.id))
    return [Quote(q.carrier, q.card, q.lane, q.price, q.lane_score, round(s, 6), i + 1)
            for i, (s, q) in enumerate(scored)]


def shop(carriers: Sequence[tuple[CarrierFacts, Sequence[CompiledCard]]], load: Load,
         day: dt.date, currency: str, fuel_index: Decimal,
         booked: Mapping[tuple[str, str], int], scores: Mapping[tuple[str, str], float],
         cost_weight: float = DEFAULT_COST_WEIGHT) -> tuple[list[Quote], list[Exclusion]]:
    """Every carrier considered: the ranked quotes, and the exclusions in carrier order."""
    quotes: list[Quote] = []
    exclusions: list[Exclusion] = []
    no_lane = no_lane_detail(load, day)
    for carrier, cards in carriers:
        outcome = evaluate(carrier, cards, load, day, currency, fuel_index, booked, scores,
                           no_lane)
        (quotes if isinstance(outcome, Quote) else exclusions).append(outcome)  # type: ignore[arg-type]
    return rank(quotes, cost_weight), exclusions
