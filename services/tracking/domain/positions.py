"""Positions: which fixes of a request are stored, refused or dropped, and where each vehicle
last was. Pure: no I/O, no clock (the caller passes `now`).

Per vehicle, a request's fixes are taken in time order. A fix is refused for bad numbers, a
time more than `MAX_FUTURE` ahead, or a jump from the previous accepted fix (the vehicle's last
known position, or an earlier fix of the same request) that implies more than `MAX_SPEED_KMH`.
A fix at a time the vehicle already has is a duplicate. A fix older than the last known one is
stored (it fills the history) but never becomes the last known position.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

MAX_FUTURE = timedelta(minutes=5)
MAX_SPEED_KMH = 250.0
EARTH_RADIUS_M = 6_371_008.8
# Two fixes a few metres apart within the same second are GPS noise, not a 250 km/h jump.
MIN_JUMP_M = 50.0


class Refusal(IntEnum):
    """Why a fix is refused (the numbers are the contract's PositionRefusal.Reason)."""

    MISSING_FIELD = 1
    OUT_OF_RANGE = 2
    NOT_A_NUMBER = 3
    IN_THE_FUTURE = 4
    IMPLAUSIBLE_SPEED = 5


@dataclass(frozen=True, slots=True)
class Fix:
    vehicle: str  # the vehicle id (without `vehicles/`)
    time: datetime
    lat: float
    lng: float
    accuracy: float = 0.0
    speed: float = 0.0
    heading: float = 0.0


@dataclass(frozen=True, slots=True)
class LastKnown:
    time: datetime
    lat: float
    lng: float


@dataclass(frozen=True, slots=True)
class Refused:
    index: int
    reason: Refusal
    description: str


@dataclass(slots=True)
class Sorted:
    """What a request's fixes come to."""

    accepted: list[tuple[int, Fix]] = field(default_factory=list)  # (index, fix), time order
    refused: list[Refused] = field(default_factory=list)
    duplicates: int = 0
    late: int = 0


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def check_fix(fix: Fix, now: datetime) -> tuple[Refusal, str] | None:
    """The problem with one fix on its own, or None."""
    numbers = (("latitude", fix.lat), ("longitude", fix.lng), ("accuracy_meters", fix.accuracy),
               ("speed_mps", fix.speed), ("heading_degrees", fix.heading))
    for name, value in numbers:
        if not math.isfinite(value):
            return Refusal.NOT_A_NUMBER, f"{name} must be a finite number"
    ranges = (("latitude", fix.lat, -90.0, 90.0), ("longitude", fix.lng, -180.0, 180.0),
              ("accuracy_meters", fix.accuracy, 0.0, 100_000.0),
              ("speed_mps", fix.speed, 0.0, 200.0), ("heading_degrees", fix.heading, 0.0, 360.0))
    for name, value, low, high in ranges:
        if not low <= value <= high:
            return Refusal.OUT_OF_RANGE, f"{name} {value:g} is outside [{low:g}, {high:g}]"
    if fix.time > now + MAX_FUTURE:
        return Refusal.IN_THE_FUTURE, (
            f"time {fix.time.isoformat()} is more than {MAX_FUTURE} in the future")
    return None


def implied_speed_kmh(a: LastKnown | Fix, b: Fix) -> float:
    metres = haversine_m(a.lat, a.lng, b.lat, b.lng)
    if metres < MIN_JUMP_M:
        return 0.0
    seconds = abs((b.time - a.time).total_seconds())
    return math.inf if seconds == 0 else metres / seconds * 3.6


def sort_fixes(fixes: Iterable[tuple[int, Fix]], now: datetime,
               last: dict[str, LastKnown]) -> Sorted:
    """Sort one request's fixes (index, fix) against each vehicle's last known position."""
    out = Sorted()
    by_vehicle: dict[str, list[tuple[int, Fix]]] = {}
    for index, fix in fixes:
        problem = check_fix(fix, now)
        if problem is not None:
            out.refused.append(Refused(index, *problem))
        else:
            by_vehicle.setdefault(fix.vehicle, []).append((index, fix))
    for vehicle, items in by_vehicle.items():
        items.sort(key=lambda item: (item[1].time, item[0]))
        known = last.get(vehicle)
        previous_new: LastKnown | Fix | None = known  # the last accepted fix at or after `known`
        previous_late: Fix | None = None  # the last accepted fix older than `known`
        seen: set[datetime] = set()
        for index, fix in items:
            if fix.time in seen or (known is not None and fix.time == known.time):
                out.duplicates += 1
                continue
            late = known is not None and fix.time < known.time
            before = previous_late if late else previous_new
            if before is not None and implied_speed_kmh(before, fix) > MAX_SPEED_KMH:
                out.refused.append(Refused(index, Refusal.IMPLAUSIBLE_SPEED, (
                    f"the jump from the position at {before.time.isoformat()} implies "
                    f"{implied_speed_kmh(before, fix):.0f} km/h (more than {MAX_SPEED_KMH:g})")))
                continue
            seen.add(fix.time)
            out.accepted.append((index, fix))
            if late:
                out.late += 1
                previous_late = fix
            else:
                previous_new = fix
    out.accepted.sort(key=lambda item: (item[1].time, item[0]))
    out.refused.sort(key=lambda r: r.index)
    return out


def newest(fixes: Iterable[Fix], last: dict[str, LastKnown]) -> dict[str, LastKnown]:
    """Each vehicle's last known position after `fixes`: only ever forward in time."""
    result = dict(last)
    for fix in fixes:
        current = result.get(fix.vehicle)
        if current is None or fix.time > current.time:
            result[fix.vehicle] = LastKnown(fix.time, fix.lat, fix.lng)
    return result
