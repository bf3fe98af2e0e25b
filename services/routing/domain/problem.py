"""From the fleet and the shipments of a request to the solver's Problem, and from the solver's
Solution back to a plan people can read. Pure functions, no I/O.

Time: the solver counts integer seconds from the plan's `epoch` (midnight UTC of the earliest
shift start), so that the speed profile's hour of day means something; the plan shows absolute
times. Load: the solver counts integers, so each dimension has a scale (grams, litres,
thousandths of a pallet, units); demands round up and capacities down, so rounding can never
let an overload through. Dimensions: the problem measures the dimensions a shipment demands plus
those every vehicle declares, in enum order.

Objective: all weights zero means distance only (1 per km). Otherwise a vehicle's arc and fixed
costs are `cost x (its cost model) + distance x km + duration x hours`; route costs shown in the
plan are always the vehicles' own cost model, whatever was optimised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2
from google.type import latlng_pb2

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2
from cartage.type.v1 import stop_pb2
from services.routing.domain.ids import shipment_of, stop_ids
from services.routing.solver import matrix as solver_matrix
from services.routing.solver.model import (
    Break,
    Location,
    PlannedBreak,
    Problem,
    Route,
    Solution,
    Stop,
    StopKind,
    TimeWindow,
    Unassigned,
    UnassignedReason,
    Vehicle,
    Visit,
)

Dimension = vehicle_pb2.Dimension
Shipment = routing_service_pb2.Shipment
Reason = route_plan_pb2.UnassignedShipment.Reason

#: Integer solver units per contract unit, per dimension.
SCALE: dict[int, int] = {
    vehicle_pb2.DIMENSION_WEIGHT_KG: 1000,
    vehicle_pb2.DIMENSION_VOLUME_M3: 1000,
    vehicle_pb2.DIMENSION_PALLETS: 1000,
    vehicle_pb2.DIMENSION_UNITS: 1,
}
UNIT = {
    vehicle_pb2.DIMENSION_WEIGHT_KG: "kg",
    vehicle_pb2.DIMENSION_VOLUME_M3: "m³",
    vehicle_pb2.DIMENSION_PALLETS: "pallets",
    vehicle_pb2.DIMENSION_UNITS: "units",
}


def dimension_label(dimension: int) -> str:
    return Dimension.Name(dimension).removeprefix("DIMENSION_")


# --------------------------------------------------------------------------- inputs


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


def _unix(epoch: datetime) -> int:
    return int(epoch.timestamp())


def _seconds(stamp: timestamp_pb2.Timestamp, epoch: int) -> int:
    return stamp.seconds - epoch


def _stamp(epoch: int, seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=epoch + seconds)


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class PlanningProblem:
    """A solver Problem plus what is needed to read its Solution as a plan."""

    problem: Problem
    epoch: datetime
    dimensions: tuple[int, ...]
    shipments: Mapping[str, Shipment]
    fleet: Mapping[str, vehicle_pb2.Vehicle]


class _Places:
    """Location indices, one per distinct coordinate (a warehouse many orders share is one
    location, which keeps the matrix small)."""

    def __init__(self) -> None:
        self.locations: list[Location] = []
        self._index: dict[tuple[float, float], int] = {}

    def of(self, point: latlng_pb2.LatLng) -> int:
        key = (round(point.latitude, 6), round(point.longitude, 6))
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.locations)
            self.locations.append(Location.latlng(*key))
        return index


def _dimensions(fleet: Sequence[vehicle_pb2.Vehicle], shipments: Iterable[Shipment]
                ) -> tuple[int, ...]:
    declared = [{q.dimension for q in v.capacities} for v in fleet]
    common = set.intersection(*declared) if declared else set()
    demanded = {d for s in shipments for d in shipment_demands(s)}
    return tuple(sorted(common | demanded))


def _stop(places: _Places, stop: stop_pb2.Stop, epoch: int, **fields: object) -> Stop:
    windows = tuple(sorted(
        (TimeWindow(_seconds(w.start_time, epoch), _seconds(w.end_time, epoch))
         for w in stop.time_windows), key=lambda w: w.start))
    return Stop(location=places.of(stop.location), windows=windows,
                service_s=stop.service_duration.seconds, **fields)  # type: ignore[arg-type]


def _stops(places: _Places, shipment: Shipment, dims: Sequence[int], epoch: int
           ) -> list[Stop]:
    wanted = shipment_demands(shipment)
    demand = tuple(math.ceil(wanted.get(d, 0.0) * SCALE[d] - 1e-9) for d in dims)
    # The priority sets the drop penalty of both stops; a pair's stops share it (one shipment).
    common = {"demand": demand, "skills": frozenset(shipment.required_skills),
              "required": not shipment.optional, "priority": shipment.priority}
    has_pickup = shipment.HasField("pickup")
    ids = stop_ids(shipment.id, has_pickup)
    if not has_pickup:
        return [_stop(places, shipment.delivery, epoch, id=ids[0], **common)]
    pickup, delivery = ids
    return [
        _stop(places, shipment.pickup, epoch, id=pickup, kind=StopKind.PICKUP, pair=delivery,
              **common),
        _stop(places, shipment.delivery, epoch, id=delivery, kind=StopKind.DELIVERY,
              pair=pickup, **common),
    ]


def _vehicle(places: _Places, vehicle: vehicle_pb2.Vehicle, dims: Sequence[int], epoch: int,
             objective: route_plan_pb2.ObjectiveWeights) -> Vehicle:
    capacity = {q.dimension: q.amount for q in vehicle.capacities}
    costs = vehicle.costs
    if objective.cost or objective.distance or objective.duration:
        fixed = objective.cost * costs.fixed
        per_km = objective.cost * costs.per_km + objective.distance
        per_hour = objective.cost * costs.per_hour + objective.duration
    else:
        fixed, per_km, per_hour = 0.0, 1.0, 0.0
    return Vehicle(
        id=vehicle.name,
        start=places.of(vehicle.start_depot.location),
        end=places.of(vehicle.end_depot.location) if vehicle.HasField("end_depot") else None,
        capacity=tuple(math.floor(capacity.get(d, 0.0) * SCALE[d] + 1e-9) for d in dims),
        skills=frozenset(vehicle.skills),
        shift=TimeWindow(_seconds(vehicle.shift.start_time, epoch),
                         _seconds(vehicle.shift.end_time, epoch)),
        breaks=tuple(Break(TimeWindow(_seconds(b.window.start_time, epoch),
                                      _seconds(b.window.end_time, epoch)), b.duration.seconds)
                     for b in vehicle.breaks),
        fixed_cost=fixed,
        cost_per_km=per_km,
        cost_per_hour=per_hour,
        max_duration_s=(vehicle.max_route_duration.seconds
                        if vehicle.HasField("max_route_duration") else None),
        max_distance_m=int(vehicle.max_route_distance_meters) or None,
    )


def solver_incidents(incidents: Iterable[decision_pb2.TrafficIncident], epoch: datetime,
                     depart_at: int) -> tuple[solver_matrix.TrafficIncident, ...]:
    """Incidents not over by `depart_at`, in solver time. The matrix is static for one
    departure time, so an incident that starts later the same day counts from `depart_at`:
    pessimistic for the legs driven before it starts, but a plan that avoids it stays valid."""
    out = []
    base = _unix(epoch)
    for incident in incidents:
        start = _seconds(incident.start_time, base)
        end = _seconds(incident.end_time, base)
        if end <= depart_at:
            continue
        out.append(solver_matrix.TrafficIncident(
            Location.latlng(incident.area.latitude, incident.area.longitude),
            incident.area.radius_meters, incident.slowdown_factor, min(start, depart_at), end))
    return tuple(out)


def _slow_down(matrix: solver_matrix.TravelMatrix, locations: Sequence[Location],
               incidents: Iterable[solver_matrix.TrafficIncident], depart_at: int
               ) -> solver_matrix.TravelMatrix:
    """Apply incidents to any provider's matrix: a leg whose straight segment passes within an
    incident's radius takes `slowdown` times longer (the solver's rule, vectorised by blocks of
    rows so that memory stays bounded on large matrices)."""
    duration = matrix.duration.astype(np.float64)
    lat = np.array([p.lat for p in locations])
    lng = np.array([p.lng for p in locations])
    for incident in incidents:
        if not incident.active(depart_at):
            continue
        centre = incident.centre
        kx = math.cos(math.radians(centre.lat)) * math.pi * solver_matrix.EARTH_RADIUS_M / 180
        ky = math.pi * solver_matrix.EARTH_RADIUS_M / 180
        x, y = (lng - centre.lng) * kx, (lat - centre.lat) * ky
        for first in range(0, len(locations), _BLOCK):
            rows = slice(first, first + _BLOCK)
            ax, ay = x[rows, None], y[rows, None]
            dx, dy = x[None, :] - ax, y[None, :] - ay
            seg2 = dx * dx + dy * dy
            with np.errstate(invalid="ignore", divide="ignore"):
                t = np.where(seg2 == 0, 0.0, -(ax * dx + ay * dy) / seg2)
            t = np.clip(t, 0.0, 1.0)
            px, py = ax + t * dx, ay + t * dy
            hit = px * px + py * py <= incident.radius_m ** 2
            hit[np.arange(hit.shape[0]), np.arange(first, first + hit.shape[0])] = False
            block = duration[rows]
            duration[rows] = np.where(hit, block * incident.slowdown, block)
    return solver_matrix.TravelMatrix(matrix.distance, np.rint(duration).astype(np.int64))


_BLOCK = 512


def build_problem(
    fleet: Sequence[vehicle_pb2.Vehicle],
    shipments: Sequence[Shipment],
    *,
    epoch: datetime,
    objective: route_plan_pb2.ObjectiveWeights,
    provider: solver_matrix.MatrixProvider,
    incidents: Iterable[decision_pb2.TrafficIncident] = (),
    depart_at: int | None = None,
    name: str = "",
) -> PlanningProblem:
    """The solver problem of `shipments` on `fleet` (vehicles with their names). The matrix is
    built for `depart_at` (solver seconds; default the earliest shift start), with the
    incidents that are not over by then."""
    base = _unix(epoch)
    dims = _dimensions(fleet, shipments)
    places = _Places()
    vehicles = tuple(_vehicle(places, v, dims, base, objective) for v in fleet)
    stops = tuple(s for shipment in shipments for s in _stops(places, shipment, dims, base))
    if depart_at is None:
        depart_at = min(v.shift.start for v in vehicles)
    matrix = provider.build(places.locations, depart_at)
    slow = solver_incidents(incidents, epoch, depart_at)
    if slow:
        matrix = _slow_down(matrix, places.locations, slow, depart_at)
    problem = Problem(tuple(places.locations), stops, vehicles, matrix, name=name)
    return PlanningProblem(problem, epoch, dims, {s.id: s for s in shipments},
                           {v.name: v for v in fleet})


# --------------------------------------------------------------------------- reading results


_REASONS: dict[UnassignedReason, int] = {
    UnassignedReason.CAPACITY: Reason.REASON_CAPACITY,
    UnassignedReason.TIME_WINDOW_UNREACHABLE: Reason.REASON_TIME_WINDOW_UNREACHABLE,
    UnassignedReason.NO_VEHICLE_WITH_SKILL: Reason.REASON_NO_VEHICLE_WITH_SKILL,
    UnassignedReason.SHIFT_TOO_SHORT: Reason.REASON_SHIFT_TOO_SHORT,
    UnassignedReason.MAX_DISTANCE: Reason.REASON_MAX_DISTANCE,
    UnassignedReason.MAX_DURATION: Reason.REASON_MAX_DURATION,
    UnassignedReason.PAIR_INFEASIBLE: Reason.REASON_PAIR_INFEASIBLE,
    UnassignedReason.DROPPED_FOR_COST: Reason.REASON_DROPPED_FOR_COST,
    UnassignedReason.FLEET_EXHAUSTED: Reason.REASON_FLEET_EXHAUSTED,
    UnassignedReason.SOLVER_FAILED: Reason.REASON_SOLVER_FAILED,
}
_FROM_PROTO = {number: reason for reason, number in _REASONS.items()}
_DETAILS = {
    UnassignedReason.TIME_WINDOW_UNREACHABLE:
        "no vehicle can reach it inside any of its time windows",
    UnassignedReason.SHIFT_TOO_SHORT:
        "reachable, but no shift is long enough to get there and back",
    UnassignedReason.MAX_DISTANCE: "a round trip alone exceeds every vehicle's maximum distance",
    UnassignedReason.MAX_DURATION:
        "a round trip alone exceeds every vehicle's maximum route duration",
    UnassignedReason.PAIR_INFEASIBLE:
        "its pickup and delivery cannot both be served by one vehicle",
    UnassignedReason.DROPPED_FOR_COST: "optional, and cheaper to leave out under the objective",
    UnassignedReason.FLEET_EXHAUSTED: "feasible on its own, but the fleet has no room left for it",
    UnassignedReason.SOLVER_FAILED: "the solver found no usable plan",
}


def _amount(value: float) -> str:
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def unassigned_detail(pp: PlanningProblem, key: str, reason: UnassignedReason) -> str:
    """A sentence for people, naming the skill or the dimension where that is the reason."""
    shipment = pp.shipments[key]
    fleet = list(pp.fleet.values())
    if reason is UnassignedReason.NO_VEHICLE_WITH_SKILL:
        needed = sorted(shipment.required_skills)
        missing = [s for s in needed if not any(s in v.skills for v in fleet)]
        if missing:
            noun = "skill" if len(missing) == 1 else "skills"
            pronoun = "it" if len(missing) == 1 else "them"
            return f"needs {noun} {', '.join(missing)}; no vehicle of the plan has {pronoun}"
        return f"needs skills {', '.join(needed)}; no vehicle of the plan has all of them"
    if reason is UnassignedReason.CAPACITY:
        able = [v for v in fleet if set(shipment.required_skills) <= set(v.skills)] or fleet
        for dim, amount in sorted(shipment_demands(shipment).items()):
            largest = max((q.amount for v in able for q in v.capacities if q.dimension == dim),
                          default=0.0)
            if amount > largest:
                return (f"needs {_amount(amount)} {UNIT[dim]}; the largest vehicle that may "
                        f"carry it takes {_amount(largest)} {UNIT[dim]}")
        return "heavier or bigger than any vehicle that may carry it"
    return _DETAILS[reason]


_SPECIFIC_FIRST = [r for r in UnassignedReason if r is not UnassignedReason.PAIR_INFEASIBLE]


def plan_content(pp: PlanningProblem, solution: Solution,
                 fixed: frozenset[str] = frozenset()) -> route_plan_pb2.RoutePlan:
    """Routes (in vehicle-name order) with absolute times and per-dimension loads, totals, and
    every unassigned shipment once with its reason (for a pair the more specific of its two
    stops' reasons)."""
    base = _unix(pp.epoch)
    by_id = {s.id: s for s in pp.problem.stops}
    out = route_plan_pb2.RoutePlan(solver=solution.solver,
                                   violations=list(solution.violations))
    out.solve_duration.FromNanoseconds(int(solution.wall_time_s * 1e9))
    planned: set[str] = set()
    total_distance = total_duration = 0
    total_cost = 0.0
    for route in sorted(solution.routes, key=lambda r: r.vehicle_id):
        if not route.visits:
            continue
        vehicle = pp.fleet[route.vehicle_id]
        message = out.routes.add(
            vehicle=route.vehicle_id, start_time=_stamp(base, route.start_time),
            end_time=_stamp(base, route.end_time), distance_meters=route.distance)
        for visit in route.visits:
            stop = by_id[visit.stop_id]
            point = pp.problem.locations[stop.location]
            planned.add(shipment_of(visit.stop_id))
            message.stops.add(
                shipment=shipment_of(visit.stop_id),
                kind=(route_plan_pb2.RouteStop.KIND_PICKUP if stop.kind is StopKind.PICKUP
                      else route_plan_pb2.RouteStop.KIND_DELIVERY),
                location=latlng_pb2.LatLng(latitude=point.lat, longitude=point.lng),
                arrival_time=_stamp(base, visit.arrival),
                service_start_time=_stamp(base, visit.start),
                departure_time=_stamp(base, visit.departure),
                load_after=[vehicle_pb2.Quantity(dimension=d, amount=q / SCALE[d])
                            for d, q in zip(pp.dimensions, visit.load_after, strict=False)],
                distance_meters=visit.distance_from_prev,
                fixed=visit.stop_id in fixed,
            )
        for planned_break in route.breaks:
            message.breaks.add(start_time=_stamp(base, planned_break.start),
                               duration=duration_pb2.Duration(seconds=planned_break.duration_s))
        seconds = route.end_time - route.start_time
        message.cost = (vehicle.costs.fixed + vehicle.costs.per_km * route.distance / 1000
                        + vehicle.costs.per_hour * seconds / 3600)
        total_distance += route.distance
        total_duration += seconds
        total_cost += message.cost
    reasons: dict[str, UnassignedReason] = {}
    for item in solution.unassigned:
        key = shipment_of(item.stop_id)
        known = reasons.get(key)
        if known is None or _rank(item.reason) < _rank(known):
            reasons[key] = item.reason
    for key, reason in reasons.items():
        out.unassigned.add(shipment=key, reason=_REASONS[reason],
                           detail=unassigned_detail(pp, key, reason))
    out.totals.distance_meters = total_distance
    out.totals.duration.FromSeconds(total_duration)
    out.totals.cost = total_cost
    out.totals.vehicles_used = len(out.routes)
    out.totals.shipments_planned = len(planned)
    out.totals.shipments_unassigned = len(reasons)
    return out


def _rank(reason: UnassignedReason) -> int:
    return _SPECIFIC_FIRST.index(reason) if reason in _SPECIFIC_FIRST else len(_SPECIFIC_FIRST)


def solution_from_plan(content: route_plan_pb2.RoutePlan, shipments: Mapping[str, Shipment],
                       epoch: datetime, dimensions: Sequence[int] = ()) -> Solution:
    """A stored plan as the solver's Solution (what replanning and the diff work on).
    `shipments` are the plan's own, which say whether a shipment has a pickup stop."""
    base = _unix(epoch)

    def stop_id(stop: route_plan_pb2.RouteStop) -> str:
        ids = stop_ids(stop.shipment, shipments[stop.shipment].HasField("pickup"))
        return ids[0] if stop.kind == route_plan_pb2.RouteStop.KIND_PICKUP else ids[-1]

    def load(stop: route_plan_pb2.RouteStop) -> tuple[int, ...]:
        amounts = {q.dimension: q.amount for q in stop.load_after}
        return tuple(round(amounts.get(d, 0.0) * SCALE[d]) for d in dimensions)

    routes = tuple(
        Route(
            vehicle_id=route.vehicle,
            visits=tuple(Visit(stop_id(s), _seconds(s.arrival_time, base),
                               _seconds(s.service_start_time, base),
                               _seconds(s.departure_time, base), load(s),
                               int(s.distance_meters)) for s in route.stops),
            start_time=_seconds(route.start_time, base),
            end_time=_seconds(route.end_time, base),
            distance=int(route.distance_meters),
            breaks=tuple(PlannedBreak(_seconds(b.start_time, base), b.duration.seconds)
                         for b in route.breaks),
        )
        for route in content.routes
    )
    unassigned = tuple(
        Unassigned(sid, _FROM_PROTO.get(item.reason, UnassignedReason.SOLVER_FAILED))
        for item in content.unassigned
        for sid in stop_ids(item.shipment, shipments[item.shipment].HasField("pickup"))
    )
    return Solution(routes, unassigned, content.solver, feasible=not content.violations,
                    violations=tuple(content.violations))


def route_legs(content: route_plan_pb2.RoutePlan, fleet: Mapping[str, vehicle_pb2.Vehicle]
               ) -> Iterable[tuple[latlng_pb2.LatLng, latlng_pb2.LatLng, datetime, datetime]]:
    """Every leg a plan drives: from, to, when it leaves and when it arrives."""
    for route in content.routes:
        vehicle = fleet.get(route.vehicle)
        if vehicle is None:
            continue
        here, leave = vehicle.start_depot.location, route.start_time.ToDatetime(tzinfo=UTC)
        for stop in route.stops:
            yield here, stop.location, leave, stop.arrival_time.ToDatetime(tzinfo=UTC)
            here, leave = stop.location, stop.departure_time.ToDatetime(tzinfo=UTC)
        if vehicle.HasField("end_depot"):
            yield here, vehicle.end_depot.location, leave, route.end_time.ToDatetime(tzinfo=UTC)


def passes_through(incident: decision_pb2.TrafficIncident, legs: Iterable[
        tuple[latlng_pb2.LatLng, latlng_pb2.LatLng, datetime, datetime]]) -> bool:
    """Whether any leg crosses the incident's area while the incident lasts."""
    start = incident.start_time.ToDatetime(tzinfo=UTC)
    end = incident.end_time.ToDatetime(tzinfo=UTC)
    centre = Location.latlng(incident.area.latitude, incident.area.longitude)
    for a, b, leave, arrive in legs:
        if arrive < start or leave >= end:
            continue
        if solver_matrix.segment_passes_within(
                Location.latlng(a.latitude, a.longitude), Location.latlng(b.latitude, b.longitude),
                centre, incident.area.radius_meters):
            return True
    return False


def cost_models(fleet: Iterable[vehicle_pb2.Vehicle]) -> dict[str, Vehicle]:
    """Solver vehicles that carry each vehicle's own cost model (and whether its route is
    open): what plans are compared with in money, whatever objective they were solved for."""
    return {
        v.name: Vehicle(id=v.name, start=0, end=0 if v.HasField("end_depot") else None,
                        fixed_cost=v.costs.fixed, cost_per_km=v.costs.per_km,
                        cost_per_hour=v.costs.per_hour)
        for v in fleet
    }


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
                 now: datetime) -> ReplanScope:
    """The full-day problem of a replan as it should be now.

    Shipments: the active plan's (`planned`), those a pending decision proposed to add
    (`proposed`, so that a newer decision does not lose them) and the change's `added`, each
    order with its current content (`orders`, the read model). An order that is cancelled, gone
    or no longer on the own fleet is left out and named cancelled, unless one of its stops is
    already done (then it stays, so the plan's history stays whole). Fleet: the vehicles with a
    route in the active plan (those no longer AVAILABLE named broken) plus every AVAILABLE one.
    """
    previous = {s.id: s for s in planned}
    extra = {s.id: s for s in proposed if s.id not in previous}
    keys = [*previous, *extra, *sorted(set(added) - previous.keys() - extra.keys())]
    routed = {r.vehicle for r in active.routes}
    fleet = tuple(v for v in vehicles
                  if v.name in routed or v.status == vehicle_pb2.Vehicle.STATUS_AVAILABLE)
    measured = {q.dimension for v in fleet for q in v.capacities}
    started = {s.shipment for r in active.routes for s in r.stops
               if s.departure_time.ToDatetime(tzinfo=UTC) <= now}
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
