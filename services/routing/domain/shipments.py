"""Shipments: what an order becomes when it is planned, which shipments and vehicles a replan
plans, and the labels of capacity dimensions. Rules on the contract's messages (plan content
is stored as those), pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import route_plan_pb2, routing_service_pb2, vehicle_pb2

Dimension = vehicle_pb2.Dimension
Shipment = routing_service_pb2.Shipment


def dimension_label(dimension: int) -> str:
    return Dimension.Name(dimension).removeprefix("DIMENSION_")


def shipment_demands(shipment: Shipment) -> dict[int, float]:
    """Demand per dimension (entries of zero left out)."""
    out: dict[int, float] = {}
    for quantity in shipment.demands:
        if quantity.amount > 0:
            out[quantity.dimension] = out.get(quantity.dimension, 0.0) + quantity.amount
    return out


def order_shipment(order: order_pb2.Order, measured: Iterable[int]) -> Shipment:
    """An order as a shipment: its pickup and delivery stops, its skills and priority, and its
    demand from the line items in the dimensions the fleet `measured` (declared by at least one
    vehicle of the plan): weight and volume are the lines' totals (the contract's `weight_kg`
    and `volume_m3` are per line, not per unit), units the sum of quantities.

    The priority keeps the enum's number (LOW 1, NORMAL 2, HIGH 3, URGENT 4; unset is NORMAL),
    which is the scale of an inline shipment's priority (0 lowest to 4 urgent): an order and an
    inline shipment of the same number weigh the same when the fleet cannot serve everything
    (see `solver.model.Stop`)."""
    totals = {
        vehicle_pb2.DIMENSION_WEIGHT_KG: sum(line.weight_kg for line in order.line_items),
        vehicle_pb2.DIMENSION_VOLUME_M3: sum(line.volume_m3 for line in order.line_items),
        vehicle_pb2.DIMENSION_UNITS: float(sum(line.quantity for line in order.line_items)),
    }
    wanted = set(measured)
    return Shipment(
        id=order.name,
        pickup=order.pickup,
        delivery=order.delivery,
        demands=[vehicle_pb2.Quantity(dimension=d, amount=a)
                 for d, a in sorted(totals.items()) if d in wanted and a > 0],
        required_skills=list(order.required_skills),
        priority=order.priority or order_pb2.PRIORITY_NORMAL,
    )


def epoch_of(fleet: Sequence[vehicle_pb2.Vehicle]) -> datetime:
    """Midnight UTC of the earliest shift start."""
    first = min(v.shift.start_time.seconds for v in fleet)
    return datetime.fromtimestamp(first - first % 86400, UTC)


@dataclass(frozen=True)
class ReplanScope:
    """What a replan plans: its shipments and fleet, and what changed since the active plan
    (the `Change` the replanning module gets)."""

    shipments: tuple[Shipment, ...]
    fleet: tuple[vehicle_pb2.Vehicle, ...]
    cancelled: frozenset[str]
    broken: frozenset[str]
    added: frozenset[str]


def replan_scope(active: route_plan_pb2.RoutePlan, planned: Sequence[Shipment],
                 proposed: Sequence[Shipment], added: Iterable[str],
                 orders: Mapping[str, order_pb2.Order], vehicles: Sequence[vehicle_pb2.Vehicle],
                 now: datetime, started: frozenset[str] | None = None) -> ReplanScope:
    """The full-day problem of a replan as it should be now.

    Shipments: the active plan's (`planned`), those a pending decision proposed to add
    (`proposed`, so that a newer decision does not lose them) and the change's `added`, each
    order with its current content (`orders`, the read model). An order that is cancelled, gone
    or no longer on the own fleet is left out and named cancelled, unless one of its stops is
    already done (then it stays, so the plan's history stays whole; `started` names the
    shipments with a stop done by the milestones, None: by the planned departures). Fleet: the
    vehicles with a route in the active plan (those no longer AVAILABLE named broken) plus every
    AVAILABLE one.
    """
    previous = {s.id: s for s in planned}
    extra = {s.id: s for s in proposed if s.id not in previous}
    keys = [*previous, *extra, *sorted(set(added) - previous.keys() - extra.keys())]
    routed = {r.vehicle for r in active.routes}
    fleet = tuple(v for v in vehicles
                  if v.name in routed or v.status == vehicle_pb2.Vehicle.STATUS_AVAILABLE)
    measured = {q.dimension for v in fleet for q in v.capacities}
    if started is None:  # no tracking data: the planned departures say what has started
        started = frozenset(s.shipment for r in active.routes for s in r.stops
                            if s.departure_time.ToDatetime(tzinfo=UTC) <= now)
    shipments: list[Shipment] = []
    cancelled: set[str] = set()
    for key in keys:
        order = orders.get(key)
        if key.startswith("orders/") and (
                order is None or order.state == order_pb2.Order.STATE_CANCELLED
                or order.mode != order_pb2.TRANSPORT_MODE_OWN_FLEET):
            cancelled.add(key)
            if key in started and key in previous:
                shipments.append(previous[key])
        elif order is not None:
            shipments.append(order_shipment(order, measured))
        else:
            shipments.append(previous.get(key) or extra[key])
    broken = {v.name for v in fleet
              if v.name in routed and v.status != vehicle_pb2.Vehicle.STATUS_AVAILABLE}
    new = {k for k in keys if k not in previous and k not in cancelled}
    return ReplanScope(tuple(shipments), fleet, frozenset(cancelled), frozenset(broken),
                       frozenset(new))
