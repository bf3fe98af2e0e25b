"""Traffic incidents against a plan: does an active route drive through an incident's area
while it lasts (then the incident triggers a TRAFFIC replan)? Pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from google.type import latlng_pb2

from cartage.routing.v1 import decision_pb2, route_plan_pb2, vehicle_pb2
from services.routing.solver import matrix as solver_matrix
from services.routing.solver.model import Location


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
