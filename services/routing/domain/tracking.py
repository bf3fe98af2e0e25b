"""What the tracking service's milestones mean for a plan: which stops are completed (a recorded
DEPARTED, PICKED_UP or DELIVERED) and which a vehicle is at (ARRIVED, or a failed delivery
attempt, without one of those). Pure, no I/O.

Tracking names an order's stops `pickup` and `delivery`; the solver's ids are `{order}#pickup`
and `{order}#delivery` (`domain.ids`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.routing.domain.ids import DELIVERY_SUFFIX, PICKUP_SUFFIX, shipment_of
from services.routing.solver.freeze import Tracked

# tracking's MilestoneType numbers
ARRIVED, PICKED_UP, DEPARTED, DELIVERY_ATTEMPTED, DELIVERED = 1, 2, 3, 4, 5
COMPLETING = frozenset({PICKED_UP, DEPARTED, DELIVERED})
ARRIVING = frozenset({ARRIVED, DELIVERY_ATTEMPTED})
_SUFFIX = {"pickup": PICKUP_SUFFIX, "delivery": DELIVERY_SUFFIX}


@dataclass(frozen=True, slots=True)
class StopMilestone:
    """One milestone type recorded for a stop of an order."""

    order: str  # orders/{order}
    stop_id: str  # pickup / delivery
    type: int  # tracking's MilestoneType number


def solver_stop_id(order: str, stop_id: str) -> str | None:
    """The solver's id of tracking's stop `stop_id` of `order`; None for a stop it does not
    name."""
    suffix = _SUFFIX.get(stop_id)
    return order + suffix if suffix else None


def tracked_stops(milestones: Iterable[StopMilestone]) -> Tracked | None:
    """The completed and arrived-at stops; None when there are no milestones at all (then the
    planned times decide, as before there was tracking)."""
    completed: set[str] = set()
    arrived: set[str] = set()
    seen = False
    for m in milestones:
        stop = solver_stop_id(m.order, m.stop_id)
        if stop is None:
            continue
        seen = True
        if m.type in COMPLETING:
            completed.add(stop)
        elif m.type in ARRIVING:
            arrived.add(stop)
    if not seen:
        return None
    return Tracked(frozenset(completed), frozenset(arrived - completed))


def started_shipments(tracked: Tracked) -> frozenset[str]:
    """The shipments with a stop that is completed or being served."""
    return frozenset(shipment_of(s) for s in tracked.completed | tracked.arrived)
