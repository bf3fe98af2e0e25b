"""Lane scorecards: how a carrier performs on a lane, and the score QuoteRates ranks by.

Each rate is smoothed towards NEUTRAL_SCORE with PRIOR_WEIGHT pseudo-observations, so a lane
with one rejected tender is not ranked last forever and a lane without history scores neutral:

    score = 0.35 x acceptance + 0.15 x responsiveness + 0.25 x on-time pickup
            + 0.25 x on-time delivery

responsiveness is 1 for a mean answer within 15 minutes, falling linearly to 0 at 4 hours.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from services.carrier.domain.quoting import NEUTRAL_SCORE

PRIOR_WEIGHT = 2.0
FAST_S = 15 * 60.0
SLOW_S = 4 * 3600.0
WEIGHTS = (0.35, 0.15, 0.25, 0.25)


@dataclass(frozen=True, slots=True)
class LaneStats:
    carrier_id: str
    lane_id: str
    offered: int = 0
    accepted: int = 0
    answered: int = 0
    response_seconds: float = 0.0  # summed over the answered tenders
    pickups: int = 0
    pickups_on_time: int = 0
    deliveries: int = 0
    deliveries_on_time: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.offered if self.offered else 0.0

    @property
    def mean_response_s(self) -> float:
        return self.response_seconds / self.answered if self.answered else 0.0


def _smoothed(successes: float, total: float) -> float:
    return (successes + PRIOR_WEIGHT * NEUTRAL_SCORE) / (total + PRIOR_WEIGHT)


def responsiveness(mean_response_s: float) -> float:
    if mean_response_s <= FAST_S:
        return 1.0
    return max(0.0, 1.0 - (mean_response_s - FAST_S) / (SLOW_S - FAST_S))


def lane_score(stats: LaneStats) -> float:
    parts = (
        _smoothed(stats.accepted, stats.offered),
        _smoothed(responsiveness(stats.mean_response_s) * stats.answered, stats.answered),
        _smoothed(stats.pickups_on_time, stats.pickups),
        _smoothed(stats.deliveries_on_time, stats.deliveries),
    )
    return round(sum(w * p for w, p in zip(WEIGHTS, parts, strict=True)), 6)


def on_time(actual: dt.datetime, windows: Sequence[tuple[dt.datetime, dt.datetime]]) -> bool:
    """Inside one of the stop's time windows (or no window was promised), ends inclusive."""
    return not windows or any(start <= actual <= end for start, end in windows)
