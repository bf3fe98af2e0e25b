"""The order aggregate: identity, ownership, lifecycle and the rules for changing them.

The order's content (parties, stops, line items, notes) is held as the contract's `Order`
message, treated as an immutable value: mirroring every field in parallel dataclasses would
add a second place to change for each new field and a conversion on the hot write path, for
no rule that needs it. The rules live here; field-level checks of the content live in
`api/validation.py`, next to the field paths they report.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, replace
from datetime import datetime

from cartage.order.v1 import order_pb2
from services.kit.domain import check_etag, check_transition
from services.kit.errors import FailedPrecondition


class State(enum.IntEnum):
    """Mirrors `Order.State` numbers, so storage and the contract agree."""

    CREATED = 1
    RELEASED = 2
    PLANNED = 3
    IN_TRANSIT = 4
    DELIVERED = 5
    CANCELLED = 6


# Every allowed lifecycle move. Anything else is FAILED_PRECONDITION.
# The tracking service's milestones move a released order forward (`follow_shipment`):
# RELEASED as well as PLANNED, because an order that goes by carrier has no route plan, and the
# plan event and the pickup travel on different streams; straight to DELIVERED, because a
# DELIVERED milestone may arrive before the PICKED_UP one. Nothing moves an order back.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.CREATED: frozenset({State.RELEASED, State.CANCELLED}),
    State.RELEASED: frozenset({State.PLANNED, State.IN_TRANSIT, State.DELIVERED,
                               State.CANCELLED}),
    State.PLANNED: frozenset({State.RELEASED, State.IN_TRANSIT, State.DELIVERED,
                              State.CANCELLED}),
    State.IN_TRANSIT: frozenset({State.DELIVERED}),
    State.DELIVERED: frozenset(),
    State.CANCELLED: frozenset(),
}
# A planned order can still change (the routing service replans on `order.updated`); once it is
# on a truck it cannot.
EDITABLE_STATES = frozenset({State.CREATED, State.RELEASED, State.PLANNED})


def new_order_id() -> str:
    # 128 random bits as 32 hex characters (a UUID4 without the cost of building the object).
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    client_id: str
    external_reference: str
    state: State
    content: order_pb2.Order
    create_time: datetime
    update_time: datetime
    version: int = 1
    cancel_reason: str = ""

    @property
    def name(self) -> str:
        return f"orders/{self.id}"

    @property
    def etag(self) -> str:
        return f"v{self.version}"

    @classmethod
    def create(cls, client_id: str, content: order_pb2.Order, now: datetime) -> Order:
        return cls(
            id=new_order_id(),
            client_id=client_id,
            external_reference=content.external_reference,
            state=State.CREATED,
            content=content,
            create_time=now,
            update_time=now,
        )

    def check_etag(self, etag: str) -> None:
        check_etag(etag, self.etag, "order")

    def _move(self, target: State, now: datetime, **changes: object) -> Order:
        check_transition(TRANSITIONS, self.state, target, "an order")
        return replace(self, state=target, update_time=now, version=self.version + 1, **changes)

    def release(self, now: datetime) -> Order:
        return self._move(State.RELEASED, now)

    def follow_plan(self, planned: bool, now: datetime) -> Order | None:
        """The order as the fleet's active plan has it: PLANNED when a route serves it, RELEASED
        again when the plan leaves it out. None when that changes nothing (or no longer applies:
        a cancelled or delivered order stays as it is)."""
        source, target = ((State.RELEASED, State.PLANNED) if planned
                          else (State.PLANNED, State.RELEASED))
        return self._move(target, now) if self.state is source else None

    def follow_shipment(self, target: State, now: datetime) -> Order | None:
        """The order after a milestone that puts its goods in `target` (IN_TRANSIT or
        DELIVERED, `shipment_target`). None when that changes nothing: the order is there or
        beyond already (a late PICKED_UP after DELIVERED), is CANCELLED, or was never
        released (CREATED: not handed to dispatch, so no shipment of ours moves it)."""
        if target not in TRANSITIONS[self.state]:
            return None
        return self._move(target, now)

    def cancel(self, reason: str, now: datetime) -> Order:
        return self._move(State.CANCELLED, now, cancel_reason=reason)

    def update_content(self, content: order_pb2.Order, now: datetime) -> Order:
        if content.external_reference != self.external_reference:
            # The client's reference identifies the order in its own systems: never re-keyed.
            raise FailedPrecondition("external_reference cannot change",
                                     reason="EXTERNAL_REFERENCE_IMMUTABLE")
        if self.state not in EDITABLE_STATES:
            raise FailedPrecondition(
                f"an order in state {self.state.name} can no longer be changed",
                reason="ORDER_NOT_EDITABLE",
                metadata={"state": self.state.name},
            )
        return replace(self, content=content, update_time=now, version=self.version + 1)


@dataclass(frozen=True)
class ActivePlan:
    """Which of a client's orders the fleet's new active plan serves and which it leaves out,
    including those only the plan it replaced had (ids, not names; ad-hoc shipments are
    skipped). Routing's route.planned / route.updated events say so."""

    client_id: str
    planned: frozenset[str]
    unassigned: frozenset[str]


class MilestoneType(enum.IntEnum):
    """The tracking contract's `MilestoneType` numbers this service acts on."""

    ARRIVED = 1
    PICKED_UP = 2
    DEPARTED = 3
    DELIVERY_ATTEMPTED = 4
    DELIVERED = 5
    EXCEPTION = 6


# The stops of an order as the tracking service names them.
PICKUP_STOP = "pickup"
DELIVERY_STOP = "delivery"


@dataclass(frozen=True, slots=True)
class ShipmentMilestone:
    """A milestone the tracking service recorded for one of a client's orders
    (`milestone.recorded`)."""

    client_id: str
    order_id: str
    milestone: str  # orders/{order}/milestones/{milestone}
    stop_id: str
    type: int  # a MilestoneType number, or one this service does not know
    event_time: datetime


def shipment_target(stop_id: str, milestone_type: int) -> State | None:
    """The order state a milestone puts the goods in: IN_TRANSIT once they left the pickup
    (PICKED_UP, or DEPARTED from the pickup stop), DELIVERED when they were handed over at the
    delivery stop (an order has one; DELIVERY_ATTEMPTED is not a delivery). None for any other
    milestone (ARRIVED, an exception, …)."""
    if milestone_type == MilestoneType.PICKED_UP or (
            milestone_type == MilestoneType.DEPARTED and stop_id == PICKUP_STOP):
        return State.IN_TRANSIT
    if milestone_type == MilestoneType.DELIVERED and stop_id == DELIVERY_STOP:
        return State.DELIVERED
    return None
