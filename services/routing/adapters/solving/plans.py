"""From the solver's Solution back to a plan people can read, and a stored plan back to a
Solution (what replanning and the decision's diff work on): the solver's response parser, in
the karrio sense (`problem.py` builds its requests). Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from google.protobuf import duration_pb2
from google.type import latlng_pb2

from cartage.routing.v1 import route_plan_pb2, routing_service_pb2, vehicle_pb2
from services.routing.adapters.solving.problem import (
    SCALE,
    PlanningProblem,
    cost_models,
    epoch_seconds,
    solver_time,
    timestamp_at,
)
from services.routing.domain import autonomy
from services.routing.domain.ids import shipment_of, stop_ids
from services.routing.domain.shipments import shipment_demands
from services.routing.solver.model import (
    PlannedBreak,
    Route,
    Solution,
    StopKind,
    Unassigned,
    UnassignedReason,
    Visit,
)

if TYPE_CHECKING:  # the worker process reads plans without the service's domain model
    from services.routing.domain.model import RoutePlan

Shipment = routing_service_pb2.Shipment
Reason = route_plan_pb2.UnassignedShipment.Reason

UNIT = {
    vehicle_pb2.DIMENSION_WEIGHT_KG: "kg",
    vehicle_pb2.DIMENSION_VOLUME_M3: "m³",
    vehicle_pb2.DIMENSION_PALLETS: "pallets",
    vehicle_pb2.DIMENSION_UNITS: "units",
}


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
    base = epoch_seconds(pp.epoch)
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
            vehicle=route.vehicle_id, start_time=timestamp_at(base, route.start_time),
            end_time=timestamp_at(base, route.end_time), distance_meters=route.distance)
        for visit in route.visits:
            stop = by_id[visit.stop_id]
            point = pp.problem.locations[stop.location]
            planned.add(shipment_of(visit.stop_id))
            message.stops.add(
                shipment=shipment_of(visit.stop_id),
                kind=(route_plan_pb2.RouteStop.KIND_PICKUP if stop.kind is StopKind.PICKUP
                      else route_plan_pb2.RouteStop.KIND_DELIVERY),
                location=latlng_pb2.LatLng(latitude=point.lat, longitude=point.lng),
                arrival_time=timestamp_at(base, visit.arrival),
                service_start_time=timestamp_at(base, visit.start),
                departure_time=timestamp_at(base, visit.departure),
                load_after=[vehicle_pb2.Quantity(dimension=d, amount=q / SCALE[d])
                            for d, q in zip(pp.dimensions, visit.load_after, strict=False)],
                distance_meters=visit.distance_from_prev,
                fixed=visit.stop_id in fixed,
            )
        for planned_break in route.breaks:
            message.breaks.add(start_time=timestamp_at(base, planned_break.start),
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
    base = epoch_seconds(epoch)

    def stop_id(stop: route_plan_pb2.RouteStop) -> str:
        ids = stop_ids(stop.shipment, shipments[stop.shipment].HasField("pickup"))
        return ids[0] if stop.kind == route_plan_pb2.RouteStop.KIND_PICKUP else ids[-1]

    def load(stop: route_plan_pb2.RouteStop) -> tuple[int, ...]:
        amounts = {q.dimension: q.amount for q in stop.load_after}
        return tuple(round(amounts.get(d, 0.0) * SCALE[d]) for d in dimensions)

    routes = tuple(
        Route(
            vehicle_id=route.vehicle,
            visits=tuple(Visit(stop_id(s), solver_time(s.arrival_time, base),
                               solver_time(s.service_start_time, base),
                               solver_time(s.departure_time, base), load(s),
                               int(s.distance_meters)) for s in route.stops),
            start_time=solver_time(route.start_time, base),
            end_time=solver_time(route.end_time, base),
            distance=int(route.distance_meters),
            breaks=tuple(PlannedBreak(solver_time(b.start_time, base), b.duration.seconds)
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


def _stop_ids(stop: route_plan_pb2.RouteStop, shipments: Mapping[str, Shipment]) -> list[str]:
    shipment = shipments.get(stop.shipment)
    if shipment is None:
        return []
    ids = stop_ids(stop.shipment, shipment.HasField("pickup"))
    return [ids[0] if stop.kind == route_plan_pb2.RouteStop.KIND_PICKUP else ids[-1]]


class PlanComparer:
    """The use cases' `ports.PlanComparer`: the diff of a solved plan against the active one,
    in the solver's terms (stops, the vehicles' own cost model)."""

    def diff(self, before: RoutePlan | None, proposed: RoutePlan) -> autonomy.PlanDiff:
        shipments = {s.id: s for s in proposed.request.shipments}
        after = solution_from_plan(proposed.content, shipments, proposed.epoch)
        previous = None
        fleets = list(proposed.fleet)
        if before is not None:
            previous = solution_from_plan(
                before.content, {s.id: s for s in before.request.shipments}, before.epoch)
            fleets += before.fleet
        # Stops the replan could not move (completed, in progress, next) are not compared.
        fixed = {sid for r in proposed.content.routes for s in r.stops if s.fixed
                 for sid in _stop_ids(s, shipments)}
        return autonomy.diff_plans(previous, after, vehicles=cost_models(fleets), fixed=fixed)
