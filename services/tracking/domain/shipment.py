"""Milestones and the monotonic shipment state they imply.

The state of an order is a function of the *set* of its milestones (`project`): each milestone
implies a state, and the order's state is the most advanced of those. A maximum over a set
does not depend on the order the elements came in, nor on repeats, so the same milestones in
any order, interleaving or duplication give the same record, and a new milestone can never
move the state back (a property test proves both: tests/unit/tracking/test_shipment.py).
Times are chosen the same way: the earliest event time among the milestones that count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

PICKUP, DELIVERY = "pickup", "delivery"
STOPS = (PICKUP, DELIVERY)


class Type(IntEnum):
    """cartage.tracking.v1.MilestoneType."""

    ARRIVED = 1
    PICKED_UP = 2
    DEPARTED = 3
    DELIVERY_ATTEMPTED = 4
    DELIVERED = 5
    EXCEPTION = 6


class State(IntEnum):
    """cartage.tracking.v1.ShipmentState; the numbers order the states."""

    PENDING = 1
    AT_PICKUP = 2
    IN_TRANSIT = 3
    AT_DELIVERY = 4
    DELIVERY_ATTEMPTED = 5
    DELIVERED = 6


# Which milestone types a stop may record.
ALLOWED: dict[str, frozenset[Type]] = {
    PICKUP: frozenset({Type.ARRIVED, Type.PICKED_UP, Type.DEPARTED, Type.EXCEPTION}),
    DELIVERY: frozenset({Type.ARRIVED, Type.DEPARTED, Type.DELIVERY_ATTEMPTED, Type.DELIVERED,
                         Type.EXCEPTION}),
}

# How far along a stop a milestone type is (for the stop's `last_milestone`).
_STOP_RANK = {Type.ARRIVED: 1, Type.PICKED_UP: 2, Type.DELIVERY_ATTEMPTED: 2,
              Type.DEPARTED: 3, Type.DELIVERED: 4}

_IMPLIES: dict[tuple[str, Type], State] = {
    (PICKUP, Type.ARRIVED): State.AT_PICKUP,
    (PICKUP, Type.PICKED_UP): State.IN_TRANSIT,
    (PICKUP, Type.DEPARTED): State.IN_TRANSIT,
    (DELIVERY, Type.ARRIVED): State.AT_DELIVERY,
    (DELIVERY, Type.DEPARTED): State.AT_DELIVERY,
    (DELIVERY, Type.DELIVERY_ATTEMPTED): State.DELIVERY_ATTEMPTED,
    (DELIVERY, Type.DELIVERED): State.DELIVERED,
}


@dataclass(frozen=True, slots=True)
class Milestone:
    """A recorded milestone. (stop_id, type, event_time, exception_reason) identifies it: the
    same again is a duplicate."""

    stop_id: str
    type: Type
    event_time: datetime
    exception_reason: int = 0
    source: int = 0

    @property
    def key(self) -> tuple[str, int, datetime, int]:
        return (self.stop_id, int(self.type), self.event_time, self.exception_reason)


@dataclass(frozen=True, slots=True)
class StopView:
    stop_id: str
    last_milestone: Type | None
    arrival_time: datetime | None
    departure_time: datetime | None


@dataclass(frozen=True, slots=True)
class ShipmentView:
    state: State
    state_time: datetime | None
    stops: tuple[StopView, ...]
    exceptions: tuple[int, ...]  # the exception reasons recorded, sorted, each once
    milestone_count: int  # distinct milestones


def implied_state(milestone: Milestone) -> State:
    return _IMPLIES.get((milestone.stop_id, milestone.type), State.PENDING)


def project(milestones: Iterable[Milestone]) -> ShipmentView:
    """The record the set of `milestones` implies (duplicates count once)."""
    distinct = {m.key: m for m in milestones}
    unique = list(distinct.values())
    state = max((implied_state(m) for m in unique), default=State.PENDING)
    state_time = min((m.event_time for m in unique if implied_state(m) == state
                      and state != State.PENDING), default=None)
    stops = []
    for stop_id in STOPS:
        own = [m for m in unique if m.stop_id == stop_id]
        ranked = [m for m in own if m.type in _STOP_RANK]
        top = max((_STOP_RANK[m.type] for m in ranked), default=0)
        last = min((m.type for m in ranked if _STOP_RANK[m.type] == top), default=None)
        stops.append(StopView(
            stop_id, last,
            min((m.event_time for m in own if m.type == Type.ARRIVED), default=None),
            min((m.event_time for m in own if m.type == Type.DEPARTED), default=None)))
    exceptions = tuple(sorted({m.exception_reason for m in unique if m.type == Type.EXCEPTION}))
    return ShipmentView(state, state_time, tuple(stops), exceptions, len(unique))
