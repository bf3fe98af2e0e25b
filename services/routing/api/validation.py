"""Field-level checks of routing requests. Every problem is reported, each with its field path.

Checks that need stored data (unknown vehicles or orders, a dimension a vehicle of the plan
lacks) are in the use cases, which report them the same way.
"""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2
from google.type import latlng_pb2

from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2
from cartage.type.v1 import stop_pb2, time_window_pb2
from services.kit import constraints
from services.kit.validation import Violations

# The limits are declared in the contracts (`(cartage.type.v1.constraints)`), which the gateway's
# OpenAPI document also reads; rules across fields (a break inside the shift) are here only.
_VEHICLE = vehicle_pb2.Vehicle.DESCRIPTOR
_SHIPMENT = routing_service_pb2.Shipment.DESCRIPTOR
_INCIDENT = decision_pb2.TrafficIncident.DESCRIPTOR
_POLICY = decision_pb2.DomainPolicy.DESCRIPTOR
VEHICLE_ID = constraints.pattern(routing_service_pb2.CreateVehicleRequest.DESCRIPTOR, "vehicle_id")
SKILL = constraints.pattern(_VEHICLE, "skills")
MAX_SKILLS = constraints.max_items(_VEHICLE, "skills")
MAX_BREAKS = constraints.max_items(_VEHICLE, "breaks")
MAX_WINDOWS = constraints.max_items(stop_pb2.Stop.DESCRIPTOR, "time_windows")
MAX_SHIFT_S = float(constraints.bounds(_VEHICLE, "max_route_duration")[1] or 0)
MAX_SERVICE_S = float(constraints.bounds(stop_pb2.Stop.DESCRIPTOR, "service_duration")[1] or 0)
MAX_PRIORITY = int(constraints.bounds(_SHIPMENT, "priority")[1] or 0)
MAX_SLOWDOWN = float(constraints.bounds(_INCIDENT, "slowdown_factor")[1] or 0)
MAX_RADIUS_M = float(constraints.bounds(decision_pb2.Area.DESCRIPTOR, "radius_meters")[1] or 0)
MAX_COST_INCREASE = float(constraints.bounds(_POLICY, "max_cost_increase")[1] or 0)


def _nanos(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000_000 + stamp.nanos


def _duration_s(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def check_location(point: latlng_pb2.LatLng, v: Violations, path: str) -> None:
    v.number(point.latitude, f"{path}.latitude", minimum=-90, maximum=90)
    v.number(point.longitude, f"{path}.longitude", minimum=-180, maximum=180)


def check_window(window: time_window_pb2.TimeWindow, v: Violations, path: str) -> bool:
    """True when both ends are set and the window does not end before it starts."""
    ok = v.require(window.HasField("start_time"), f"{path}.start_time", "is required")
    ok = v.require(window.HasField("end_time"), f"{path}.end_time", "is required") and ok
    if ok and _nanos(window.end_time) <= _nanos(window.start_time):
        v.add(f"{path}.end_time", "must be after start_time", "WINDOW_ENDS_BEFORE_START")
        return False
    return ok


def _inside(inner: time_window_pb2.TimeWindow, outer: time_window_pb2.TimeWindow) -> bool:
    return (_nanos(outer.start_time) <= _nanos(inner.start_time)
            and _nanos(inner.end_time) <= _nanos(outer.end_time))


def _quantities(items: list[vehicle_pb2.Quantity], v: Violations, path: str) -> None:
    seen: set[int] = set()
    for i, quantity in enumerate(items):
        item = f"{path}[{i}]"
        v.enum(quantity.dimension, vehicle_pb2.Dimension.DESCRIPTOR, f"{item}.dimension",
               allow_unspecified=False)
        if quantity.dimension in seen:
            v.add(f"{item}.dimension", "appears twice", "DUPLICATE_DIMENSION")
        seen.add(quantity.dimension)
        v.number(quantity.amount, f"{item}.amount", minimum=0)


def _skills(skills: list[str], v: Violations, path: str) -> None:
    if len(skills) > MAX_SKILLS:
        v.add(path, f"at most {MAX_SKILLS} skills", "TOO_MANY")
    for i, skill in enumerate(skills):
        if not SKILL.match(skill):
            v.add(f"{path}[{i}]", "must be 1 to 40 lower-case letters, digits, `-` or `_`, "
                                  "starting with a letter (e.g. tail-lift)")


def _duration(duration: duration_pb2.Duration, v: Violations, path: str, *,
              maximum: float) -> None:
    seconds = _duration_s(duration)
    if seconds < 0:
        v.add(path, "must not be negative", "OUT_OF_RANGE")
    elif seconds > maximum:
        v.add(path, f"must be at most {maximum / 3600:g} hours", "OUT_OF_RANGE")


# --------------------------------------------------------------------------- vehicles


def check_vehicle(vehicle: vehicle_pb2.Vehicle, v: Violations, path: str = "vehicle") -> None:
    v.text(vehicle.display_name, f"{path}.display_name", max_len=200)
    if len(vehicle.capacities) > len(vehicle_pb2.Dimension.DESCRIPTOR.values) - 1:
        v.add(f"{path}.capacities", "one entry per dimension at most", "TOO_MANY")
    _quantities(list(vehicle.capacities), v, f"{path}.capacities")
    _skills(list(vehicle.skills), v, f"{path}.skills")
    for depot in ("start_depot", "end_depot"):
        if not vehicle.HasField(depot):
            if depot == "start_depot":
                v.add(f"{path}.start_depot", "is required", "REQUIRED")
            continue
        place = getattr(vehicle, depot)
        if place.HasField("location"):
            check_location(place.location, v, f"{path}.{depot}.location")
        else:
            v.add(f"{path}.{depot}.location", "is required", "REQUIRED")
        v.text(place.label, f"{path}.{depot}.label", max_len=200)
    shift_ok = False
    if not vehicle.HasField("shift"):
        v.add(f"{path}.shift", "is required", "REQUIRED")
    elif check_window(vehicle.shift, v, f"{path}.shift"):
        shift_ok = True
        if (_nanos(vehicle.shift.end_time) - _nanos(vehicle.shift.start_time)) / 1e9 > MAX_SHIFT_S:
            v.add(f"{path}.shift", "must be at most 7 days long", "OUT_OF_RANGE")
    if len(vehicle.breaks) > MAX_BREAKS:
        v.add(f"{path}.breaks", f"at most {MAX_BREAKS} breaks", "TOO_MANY")
    for i, pause in enumerate(vehicle.breaks):
        item = f"{path}.breaks[{i}]"
        window_ok = False
        if not pause.HasField("window"):
            v.add(f"{item}.window", "is required", "REQUIRED")
        elif check_window(pause.window, v, f"{item}.window"):
            window_ok = True
            if shift_ok and not _inside(pause.window, vehicle.shift):
                v.add(f"{item}.window", "must lie inside the shift", "BREAK_OUTSIDE_SHIFT")
        if not pause.HasField("duration") or _duration_s(pause.duration) <= 0:
            v.add(f"{item}.duration", "is required and must be positive", "REQUIRED")
        elif window_ok and _duration_s(pause.duration) > (
                _nanos(pause.window.end_time) - _nanos(pause.window.start_time)) / 1e9:
            v.add(f"{item}.duration", "is longer than its window", "BREAK_LONGER_THAN_WINDOW")
    for cost in ("fixed", "per_km", "per_hour"):
        v.number(getattr(vehicle.costs, cost), f"{path}.costs.{cost}", minimum=0)
    if vehicle.HasField("max_route_duration"):
        _duration(vehicle.max_route_duration, v, f"{path}.max_route_duration",
                  maximum=MAX_SHIFT_S)
    v.number(vehicle.max_route_distance_meters, f"{path}.max_route_distance_meters", minimum=0)


def check_vehicle_id(vehicle_id: str, v: Violations, field: str = "vehicle_id") -> None:
    if not VEHICLE_ID.match(vehicle_id):
        v.add(field, "must be 1 to 63 lower-case letters, digits and hyphens, starting with a "
                     "letter", "INVALID_ID")


def check_vehicle_name(name: str, v: Violations, field: str = "name") -> str:
    """The id inside `vehicles/{id}`, or a violation."""
    vehicle_id = name.removeprefix("vehicles/")
    if not name.startswith("vehicles/") or not VEHICLE_ID.match(vehicle_id):
        v.add(field, "must look like vehicles/{id}", "INVALID_NAME")
    return vehicle_id


# --------------------------------------------------------------------------- planning


def _stop(stop: stop_pb2.Stop, v: Violations, path: str) -> None:
    if stop.HasField("location"):
        check_location(stop.location, v, f"{path}.location")
    else:
        v.add(f"{path}.location", "is required", "REQUIRED")
    if len(stop.time_windows) > MAX_WINDOWS:
        v.add(f"{path}.time_windows", f"at most {MAX_WINDOWS} time windows", "TOO_MANY")
        return
    spans = []
    for i, window in enumerate(stop.time_windows):
        if check_window(window, v, f"{path}.time_windows[{i}]"):
            spans.append((_nanos(window.start_time), _nanos(window.end_time), i))
    spans.sort()
    for (_, end_a, _), (start_b, _, j) in zip(spans, spans[1:], strict=False):
        if start_b <= end_a:
            v.add(f"{path}.time_windows[{j}]", "overlaps another time window",
                  "OVERLAPPING_WINDOWS")
    if stop.HasField("service_duration"):
        _duration(stop.service_duration, v, f"{path}.service_duration", maximum=MAX_SERVICE_S)


def check_shipment(shipment: routing_service_pb2.Shipment, v: Violations, path: str) -> None:
    v.text(shipment.id, f"{path}.id", required=True,
           max_len=constraints.max_length(_SHIPMENT, "id"))
    if "#" in shipment.id:
        v.add(f"{path}.id", "must not contain `#`")
    if shipment.HasField("pickup"):
        _stop(shipment.pickup, v, f"{path}.pickup")
    if shipment.HasField("delivery"):
        _stop(shipment.delivery, v, f"{path}.delivery")
    else:
        v.add(f"{path}.delivery", "is required", "REQUIRED")
    _quantities(list(shipment.demands), v, f"{path}.demands")
    _skills(list(shipment.required_skills), v, f"{path}.required_skills")
    if not 0 <= shipment.priority <= MAX_PRIORITY:
        v.add(f"{path}.priority", f"must be 0 to {MAX_PRIORITY} (got {shipment.priority})",
              "OUT_OF_RANGE")


def check_time_limit(limit: duration_pb2.Duration, maximum: float, v: Violations,
                     path: str = "time_limit") -> None:
    seconds = _duration_s(limit)
    if seconds <= 0:
        v.add(path, "must be positive", "OUT_OF_RANGE")
    elif seconds > maximum:
        v.add(path, f"must be at most {maximum:g} s (got {seconds:g} s)", "OUT_OF_RANGE")


def check_objective(objective: route_plan_pb2.ObjectiveWeights, v: Violations,
                    path: str = "objective") -> None:
    for weight in ("cost", "distance", "duration"):
        v.number(getattr(objective, weight), f"{path}.{weight}", minimum=0)


def check_plan_request(request: routing_service_pb2.PlanRoutesRequest, v: Violations, *,
                       max_shipments: int, max_time_limit: float) -> None:
    """Everything that can be said without reading the database. A request over the shipment
    limit is refused on `shipments` (or `orders`) without looking at its items."""
    total = len(request.shipments) + len(request.orders)
    if total > max_shipments:
        field = "shipments" if request.shipments else "orders"
        v.add(field, f"at most {max_shipments:,} shipments per request (got {total:,})",
              "TOO_MANY")
        return
    seen_orders: set[str] = set()
    for i, name in enumerate(request.orders):
        before = len(v)
        v.resource_id(name, "orders", f"orders[{i}]")
        if len(v) == before and name in seen_orders:
            v.add(f"orders[{i}]", "appears twice", "DUPLICATE")
        seen_orders.add(name)
    seen_ids: set[str] = set()
    for i, shipment in enumerate(request.shipments):
        check_shipment(shipment, v, f"shipments[{i}]")
        if shipment.id in seen_ids or shipment.id in seen_orders:
            v.add(f"shipments[{i}].id", "appears twice in this request", "DUPLICATE")
        seen_ids.add(shipment.id)
    seen_vehicles: set[str] = set()
    for i, name in enumerate(request.vehicles):
        check_vehicle_name(name, v, f"vehicles[{i}]")
        if name in seen_vehicles:
            v.add(f"vehicles[{i}]", "appears twice", "DUPLICATE")
        seen_vehicles.add(name)
    if request.HasField("time_limit"):
        check_time_limit(request.time_limit, max_time_limit, v)
    check_objective(request.objective, v)


# --------------------------------------------------------------------------- incidents, policy


def check_incident(incident: decision_pb2.TrafficIncident, v: Violations,
                   path: str = "traffic_incident") -> None:
    if not incident.HasField("area"):
        v.add(f"{path}.area", "is required", "REQUIRED")
    else:
        area = incident.area
        v.number(area.latitude, f"{path}.area.latitude", minimum=-90, maximum=90)
        v.number(area.longitude, f"{path}.area.longitude", minimum=-180, maximum=180)
        v.number(area.radius_meters, f"{path}.area.radius_meters", minimum=0,
                 maximum=MAX_RADIUS_M, exclusive_minimum=True)
    v.number(incident.slowdown_factor, f"{path}.slowdown_factor", minimum=1,
             maximum=MAX_SLOWDOWN)
    window = time_window_pb2.TimeWindow(start_time=incident.start_time,
                                        end_time=incident.end_time)
    if not incident.HasField("start_time"):
        window.ClearField("start_time")
    if not incident.HasField("end_time"):
        window.ClearField("end_time")
    check_window(window, v, path)
    v.text(incident.description, f"{path}.description", max_len=1000)


def check_policy(policy: decision_pb2.AutonomyPolicy, v: Violations,
                 path: str = "autonomy_policy") -> None:
    if policy.name not in ("", "autonomyPolicy"):
        v.add(f"{path}.name", "must be autonomyPolicy", "INVALID_NAME")
    seen: set[int] = set()
    for i, entry in enumerate(policy.domains):
        item = f"{path}.domains[{i}]"
        v.enum(entry.domain, decision_pb2.DecisionDomain.DESCRIPTOR, f"{item}.domain",
               allow_unspecified=False)
        if entry.domain in seen:
            v.add(f"{item}.domain", "appears twice", "DUPLICATE")
        seen.add(entry.domain)
        v.enum(entry.level, decision_pb2.AutonomyLevel.DESCRIPTOR, f"{item}.level",
               allow_unspecified=False)
        if entry.HasField("max_moved_share"):
            v.number(entry.max_moved_share, f"{item}.max_moved_share", minimum=0, maximum=1)
        if entry.HasField("max_cost_increase"):
            v.number(entry.max_cost_increase, f"{item}.max_cost_increase", minimum=0,
                     maximum=MAX_COST_INCREASE)

