"""Events from outside as the routing rules read them: the adapters decode the wire messages
(`adapters/events.py`) into these, so the event handlers in `use_cases/jobs.py` see only what
they act on."""

from __future__ import annotations

from dataclasses import dataclass

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
