"""ETAs for the stops a vehicle has still to serve, from its position and the active plan.

The speed model is a straight line (haversine) times a road factor at a constant speed, the
same simple model as the routing service's default matrix: good enough to see a stop slip
past its window, not a road-network ETA. Service at a stop starts no earlier than its window
opens and takes its planned service time (the plan's departure minus its service start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.tracking.domain.positions import LastKnown, haversine_m

ETA_THRESHOLD = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class PlannedStop:
    order_id: str
    stop_id: str
    lat: float
    lng: float
    service: timedelta
    window_start: datetime | None = None
    window_end: datetime | None = None
    arrived: datetime | None = None  # the stop's ARRIVED milestone, when recorded
    done: bool = False  # departed (or picked up / delivered): no ETA any more


@dataclass(frozen=True, slots=True)
class Speed:
    metres_per_second: float = 50 / 3.6
    road_factor: float = 1.3


def etas(position: LastKnown, stops: Sequence[PlannedStop], speed: Speed = Speed()
         ) -> list[datetime | None]:
    """Per stop (in route order): its ETA, or None when it is done or being served."""
    out: list[datetime | None] = []
    at = position.time
    lat, lng = position.lat, position.lng
    for stop in stops:
        if stop.done:
            out.append(None)
            continue
        if stop.arrived is not None:  # there now: leave after its service
            out.append(None)
            start = max(stop.arrived, stop.window_start or stop.arrived)
            at = max(at, start + stop.service)
            lat, lng = stop.lat, stop.lng
            continue
        metres = haversine_m(lat, lng, stop.lat, stop.lng) * speed.road_factor
        at = at + timedelta(seconds=metres / speed.metres_per_second)
        out.append(at)
        start = max(at, stop.window_start) if stop.window_start else at
        at = start + stop.service
        lat, lng = stop.lat, stop.lng
    return out


def moved(previous: datetime | None, current: datetime, threshold: timedelta = ETA_THRESHOLD
          ) -> bool:
    """Whether an ETA moved enough to publish (the first one always does)."""
    return previous is None or abs(current - previous) > threshold


def late(eta: datetime | None, window_end: datetime | None) -> bool:
    return eta is not None and window_end is not None and eta > window_end
