"""From the fleet and the shipments of a request to the solver's Problem (the request builder of
the solver, in the karrio sense; `plans.py` reads its results). Pure functions, no I/O.

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
from datetime import datetime

import numpy as np
from google.protobuf import timestamp_pb2
from google.type import latlng_pb2

from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2
from cartage.type.v1 import stop_pb2
from services.routing.domain.ids import stop_ids
from services.routing.domain.shipments import shipment_demands
from services.routing.solver import matrix as solver_matrix
from services.routing.solver.model import (
    Break,
    Location,
    Problem,
    Stop,
    StopKind,
    TimeWindow,
    Vehicle,
)

Shipment = routing_service_pb2.Shipment

#: Integer solver units per contract unit, per dimension.
SCALE: dict[int, int] = {
    vehicle_pb2.DIMENSION_WEIGHT_KG: 1000,
    vehicle_pb2.DIMENSION_VOLUME_M3: 1000,
    vehicle_pb2.DIMENSION_PALLETS: 1000,
    vehicle_pb2.DIMENSION_UNITS: 1,
}
def epoch_seconds(epoch: datetime) -> int:
    return int(epoch.timestamp())


def solver_time(stamp: timestamp_pb2.Timestamp, epoch: int) -> int:
    return stamp.seconds - epoch


def timestamp_at(epoch: int, seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=epoch + seconds)


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
        (TimeWindow(solver_time(w.start_time, epoch), solver_time(w.end_time, epoch))
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
        shift=TimeWindow(solver_time(vehicle.shift.start_time, epoch),
                         solver_time(vehicle.shift.end_time, epoch)),
        breaks=tuple(Break(TimeWindow(solver_time(b.window.start_time, epoch),
                                      solver_time(b.window.end_time, epoch)), b.duration.seconds)
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
    base = epoch_seconds(epoch)
    for incident in incidents:
        start = solver_time(incident.start_time, base)
        end = solver_time(incident.end_time, base)
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
    base = epoch_seconds(epoch)
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


def cost_models(fleet: Iterable[vehicle_pb2.Vehicle]) -> dict[str, Vehicle]:
    """Solver vehicles that carry each vehicle's own cost model (and whether its route is
    open): what plans are compared with in money, whatever objective they were solved for."""
    return {
        v.name: Vehicle(id=v.name, start=0, end=0 if v.HasField("end_depot") else None,
                        fixed_cost=v.costs.fixed, cost_per_km=v.costs.per_km,
                        cost_per_hour=v.costs.per_hour)
        for v in fleet
    }
