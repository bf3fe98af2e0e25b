"""Events from outside as the routing rules read them: the adapters decode the wire messages
(`adapters/events.py`) into these, so the event handlers in `use_cases/jobs.py` see only what
they act on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cartage.order.v1 import order_pb2
from services.routing.domain.model import VehicleStatus


@dataclass(frozen=True, slots=True)
class OrderChanged:
    """An order service event (`order.created`, `order.updated`, `order.released`,
    `order.cancelled`): the order as it is now, which routing keeps in its read model of
    orders (the order's content is the order contract's message), and, for an update, the
    fields it changed."""

    subject: str
    order: order_pb2.Order
    event_id: str
    changed_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VehicleStatusChanged:
    """`vehicle.status_changed`, ours or a telematics integration's. `status` is None for a
    status this service does not know (nothing is replanned for it)."""

    client_id: str
    vehicle: str  # vehicles/{id}
    status: VehicleStatus | None
    reason: str
    event_id: str


@dataclass(frozen=True, slots=True)
class MilestoneRecorded:
    """The tracking service's `milestone.recorded`: what happened at a stop of an order."""

    client_id: str
    order: str  # orders/{order}
    stop_id: str  # pickup / delivery
    type: int  # tracking's MilestoneType number
    event_time: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class LateRisk:
    """The tracking service's `exception.raised` with reason LATE_RISK: the vehicle's ETA at a
    stop passed the end of the stop's window."""

    client_id: str
    order: str  # orders/{order}
    stop_id: str
    vehicle: str  # vehicles/{vehicle}, or empty
    eta: datetime | None
    window_end: datetime | None
    event_id: str
