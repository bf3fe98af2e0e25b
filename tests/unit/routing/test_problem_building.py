"""Building the solver problem from contract messages, and reading a solution back as a plan."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.type import latlng_pb2

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2
from cartage.type.v1 import stop_pb2, time_window_pb2
from services.routing.adapters.solving import plans
from services.routing.adapters.solving import problem as building
from services.routing.adapters.solving.worker import solve_job
from services.routing.domain import shipments as shipping
from services.routing.domain import traffic
from services.routing.solver import check
from services.routing.solver.matrix import HaversineProvider
from services.routing.solver.model import (
    Route,
    Solution,
    StopKind,
    Unassigned,
    UnassignedReason,
    Visit,
)
from services.routing.use_cases.ports import SolveJob

DAY = 1_893_456_000  # 2030-01-01T00:00:00Z
EPOCH = datetime.fromtimestamp(DAY, UTC)
WEIGHT, VOLUME, UNITS = (vehicle_pb2.DIMENSION_WEIGHT_KG, vehicle_pb2.DIMENSION_VOLUME_M3,
                         vehicle_pb2.DIMENSION_UNITS)
DISTANCE_ONLY = route_plan_pb2.ObjectiveWeights()


def ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def window(a: int, b: int) -> time_window_pb2.TimeWindow:
    return time_window_pb2.TimeWindow(start_time=ts(DAY + a), end_time=ts(DAY + b))


def place(lat: float, lng: float, *windows: tuple[int, int], service: int = 0) -> stop_pb2.Stop:
    return stop_pb2.Stop(location=latlng_pb2.LatLng(latitude=lat, longitude=lng),
                         time_windows=[window(a, b) for a, b in windows],
                         service_duration=duration_pb2.Duration(seconds=service))


def vehicle(name: str, *, capacity: dict[int, float] | None = None, open_route: bool = False,
            costs: vehicle_pb2.Costs | None = None, **fields) -> vehicle_pb2.Vehicle:
    message = vehicle_pb2.Vehicle(
        name=f"vehicles/{name}",
        capacities=[vehicle_pb2.Quantity(dimension=d, amount=a)
                    for d, a in (capacity or {WEIGHT: 1000.0}).items()],
        start_depot=vehicle_pb2.Depot(location=latlng_pb2.LatLng(latitude=52.5, longitude=13.4)),
        shift=window(6 * 3600, 20 * 3600), costs=costs, **fields)
    if not open_route:
        message.end_depot.CopyFrom(message.start_depot)
    return message


def shipment(key: str, *, weight: float = 100.0, pickup: stop_pb2.Stop | None = None,
             **fields) -> routing_service_pb2.Shipment:
    fields.setdefault("delivery", place(52.6, 13.4, (8 * 3600, 12 * 3600)))
    message = routing_service_pb2.Shipment(
        id=key, demands=[vehicle_pb2.Quantity(dimension=WEIGHT, amount=weight)], **fields)
    if pickup is not None:
        message.pickup.CopyFrom(pickup)
    return message


def build(fleet, shipments, **kwargs) -> building.PlanningProblem:
    kwargs.setdefault("objective", DISTANCE_ONLY)
    kwargs.setdefault("provider", HaversineProvider())
    return building.build_problem(fleet, shipments, epoch=EPOCH, **kwargs)


def test_an_order_becomes_a_pickup_delivery_shipment() -> None:
    order = order_pb2.Order(
        name="orders/" + "a" * 32, pickup=place(52.5, 13.3, (0, 3600)),
        delivery=place(52.6, 13.5, (7200, 9000)), required_skills=["tail_lift"],
        line_items=[order_pb2.LineItem(quantity=10, weight_kg=420.5, volume_m3=1.2),
                    order_pb2.LineItem(quantity=2, weight_kg=80.0, volume_m3=0.3)])
    converted = shipping.order_shipment(order, measured={WEIGHT, UNITS})
    assert converted.id == order.name and converted.pickup == order.pickup
    assert converted.delivery == order.delivery
    assert {q.dimension: q.amount for q in converted.demands} == {WEIGHT: 500.5, UNITS: 12.0}
    assert list(converted.required_skills) == ["tail_lift"]
    assert converted.priority == order_pb2.PRIORITY_NORMAL and not converted.optional
    urgent = shipping.order_shipment(
        order_pb2.Order(name="orders/x", priority=order_pb2.PRIORITY_URGENT), measured={})
    assert urgent.priority == 4 and not urgent.demands



def test_orders_and_inline_shipments_share_one_priority_scale() -> None:
    """Order priorities (unset = NORMAL) and inline priorities 0..4 land on the same stop
    priority, so an URGENT order and an inline shipment of priority 4 weigh the same (a pair's
    stops share one shipment's penalty), and an inline shipment without a priority (0, the
    lowest) weighs less than a LOW order."""
    def weight(shipment_: routing_service_pb2.Shipment) -> tuple[set[int], int]:
        stops = build([vehicle("a")], [shipment_]).problem.stops
        return {s.priority for s in stops}, sum(s.drop_penalty for s in stops)

    def order(name: str, priority: int) -> routing_service_pb2.Shipment:
        return shipping.order_shipment(order_pb2.Order(
            name=f"orders/{name}", pickup=place(52.5, 13.3), delivery=place(52.6, 13.4),
            priority=priority), measured={})

    ranks = {"LOW": 1, "NORMAL": 2, "HIGH": 3, "URGENT": 4}
    for label, rank in ranks.items():
        from_order = weight(order(label, order_pb2.Priority.Value(f"PRIORITY_{label}")))
        assert from_order == weight(shipment("x", priority=rank))
        assert from_order[0] == {rank}
    assert weight(order("unset", order_pb2.PRIORITY_UNSPECIFIED))[0] == {ranks["NORMAL"]}
    assert weight(shipment("x"))[1] < weight(order("low", order_pb2.PRIORITY_LOW))[1]

def test_the_problem_follows_the_stop_id_convention_and_scales() -> None:
    fleet = [vehicle("a", capacity={WEIGHT: 1000.4, VOLUME: 2.0}, skills=["hazmat"],
                     max_route_duration=duration_pb2.Duration(seconds=36000),
                     max_route_distance_meters=250_000,
                     breaks=[vehicle_pb2.Break(window=window(12 * 3600, 14 * 3600),
                                               duration=duration_pb2.Duration(seconds=1800))]),
             vehicle("b", capacity={WEIGHT: 500.0, VOLUME: 1.0}, open_route=True)]
    pair = shipment("pair", weight=0.0004, pickup=place(52.55, 13.35, (0, 7200)),
                    required_skills=["hazmat"], priority=3, optional=True)
    plain = shipment("plain", delivery=place(52.5, 13.4, (3600, 7200), (9000, 10000),
                                             service=600))
    pp = build(fleet, [pair, plain])
    assert pp.dimensions == (WEIGHT, VOLUME)
    assert pp.epoch == EPOCH
    stops = {s.id: s for s in pp.problem.stops}
    assert set(stops) == {"pair#pickup", "pair#delivery", "plain"}
    assert stops["pair#pickup"].kind is StopKind.PICKUP
    assert stops["pair#pickup"].pair == "pair#delivery"
    assert stops["pair#delivery"].kind is StopKind.DELIVERY
    assert stops["plain"].kind is StopKind.VISIT
    assert stops["pair#pickup"].demand == (1, 0)  # 0.4 g rounds up to a gram, never down
    assert stops["plain"].demand == (100_000, 0)
    assert stops["pair#delivery"].skills == {"hazmat"}
    assert not stops["pair#delivery"].required and stops["pair#delivery"].priority == 3
    assert [(w.start, w.end) for w in stops["plain"].windows] == [(3600, 7200), (9000, 10000)]
    assert stops["plain"].service_s == 600
    # The depot and the plain delivery share a coordinate: one location.
    assert stops["plain"].location == pp.problem.vehicles[0].start
    a, b = pp.problem.vehicles
    assert a.id == "vehicles/a" and a.capacity == (1_000_400, 2000)
    assert a.shift.start == 6 * 3600 and a.breaks[0].duration_s == 1800
    assert a.max_duration_s == 36000 and a.max_distance_m == 250_000
    assert b.end is None and b.max_duration_s is None and b.max_distance_m is None
    assert a.cost_per_km == 1.0 and a.cost_per_hour == 0 and a.fixed_cost == 0


def test_objective_weights_scale_the_vehicles_cost_model() -> None:
    costs = vehicle_pb2.Costs(fixed=50, per_km=0.8, per_hour=30)
    weights = route_plan_pb2.ObjectiveWeights(cost=2, distance=0.5, duration=1)
    pp = build([vehicle("a", costs=costs)], [shipment("x")], objective=weights)
    a = pp.problem.vehicles[0]
    assert (a.fixed_cost, a.cost_per_km, a.cost_per_hour) == (100, 2.1, 61)


def test_incidents_slow_down_the_legs_through_their_area() -> None:
    fleet = [vehicle("a")]
    through = shipment("north", delivery=place(52.6, 13.4))
    beside = shipment("east", delivery=place(52.5, 13.6))
    calm = build(fleet, [through, beside])
    incident = decision_pb2.TrafficIncident(
        area=decision_pb2.Area(latitude=52.55, longitude=13.4, radius_meters=1000),
        slowdown_factor=3, start_time=ts(DAY), end_time=ts(DAY + 86400))
    slow = build(fleet, [through, beside], incidents=[incident])
    depot, north = calm.problem.vehicles[0].start, calm.problem.stop_index["north"]
    north_loc = calm.problem.stops[north].location
    east_loc = calm.problem.stops[calm.problem.stop_index["east"]].location
    assert slow.problem.matrix.time(depot, north_loc) == pytest.approx(
        3 * calm.problem.matrix.time(depot, north_loc), abs=1)
    assert slow.problem.matrix.time(depot, east_loc) == calm.problem.matrix.time(depot, east_loc)
    assert slow.problem.matrix.dist(depot, north_loc) == calm.problem.matrix.dist(depot, north_loc)
    # Over before the plan starts: ignored.
    over = decision_pb2.TrafficIncident(area=incident.area, slowdown_factor=3,
                                        start_time=ts(DAY), end_time=ts(DAY + 3600))
    assert build(fleet, [through], incidents=[over]).problem.matrix.time(depot, north_loc) == \
        calm.problem.matrix.time(depot, north_loc)


def _solution(pp: building.PlanningProblem) -> Solution:
    """vehicles/a serves the pair (pickup then delivery); `plain` is unassigned."""
    visits = (Visit("pair#pickup", 7000, 7200, 7500, (400_000,), 1200),
              Visit("pair#delivery", 9000, 9000, 9300, (0,), 3400))
    route = Route("vehicles/a", visits, 6000, 10000, 8000)
    return Solution((route,), (Unassigned("plain", UnassignedReason.NO_VEHICLE_WITH_SKILL),),
                    "portfolio/ortools", 1.5, feasible=True)


def test_a_solution_reads_as_a_plan_with_absolute_times_and_loads() -> None:
    costs = vehicle_pb2.Costs(fixed=10, per_km=2, per_hour=36)
    fleet = [vehicle("a", costs=costs)]
    pp = build(fleet, [shipment("pair", weight=400, pickup=place(52.55, 13.35)),
                       shipment("plain", required_skills=["crane"])])
    content = plans.plan_content(pp, _solution(pp), fixed=frozenset({"pair#pickup"}))
    (route,) = content.routes
    assert route.vehicle == "vehicles/a"
    assert route.start_time.seconds == DAY + 6000 and route.end_time.seconds == DAY + 10000
    pickup, delivery = route.stops
    assert (pickup.shipment, pickup.kind) == ("pair", route_plan_pb2.RouteStop.KIND_PICKUP)
    assert (delivery.shipment, delivery.kind) == ("pair", route_plan_pb2.RouteStop.KIND_DELIVERY)
    assert pickup.arrival_time.seconds == DAY + 7000
    assert pickup.service_start_time.seconds == DAY + 7200
    assert pickup.departure_time.seconds == DAY + 7500
    assert [(q.dimension, q.amount) for q in pickup.load_after] == [(WEIGHT, 400.0)]
    assert pickup.fixed and not delivery.fixed
    assert (pickup.location.latitude, pickup.location.longitude) == (52.55, 13.35)
    # 10 fixed + 8 km x 2 + 4000 s x 36/h = 10 + 16 + 40
    assert route.cost == pytest.approx(66.0)
    assert content.totals.cost == pytest.approx(66.0)
    assert content.totals.shipments_planned == 1 and content.totals.shipments_unassigned == 1
    assert content.totals.duration.seconds == 4000 and content.totals.vehicles_used == 1
    (unassigned,) = content.unassigned
    assert unassigned.shipment == "plain"
    assert unassigned.reason == route_plan_pb2.UnassignedShipment.REASON_NO_VEHICLE_WITH_SKILL
    assert unassigned.detail == "needs skill crane; no vehicle of the plan has it"
    assert content.solver == "portfolio/ortools"
    assert content.solve_duration.ToTimedelta().total_seconds() == 1.5


def test_a_plan_reads_back_as_the_same_solution() -> None:
    pp = build([vehicle("a")], [shipment("pair", weight=400, pickup=place(52.55, 13.35)),
                                shipment("plain")])
    solution = _solution(pp)
    content = plans.plan_content(pp, solution)
    back = plans.solution_from_plan(content, pp.shipments, EPOCH, pp.dimensions)
    assert back.routes == solution.routes
    assert back.unassigned == solution.unassigned


def test_a_pair_is_reported_once_with_its_specific_reason() -> None:
    pp = build([vehicle("a")], [shipment("big", weight=5000, pickup=place(52.55, 13.35))])
    solution = Solution((), (Unassigned("big#pickup", UnassignedReason.PAIR_INFEASIBLE),
                             Unassigned("big#delivery", UnassignedReason.CAPACITY)))
    (item,) = plans.plan_content(pp, solution).unassigned
    assert item.reason == route_plan_pb2.UnassignedShipment.REASON_CAPACITY
    assert item.detail == "needs 5,000 kg; the largest vehicle that may carry it takes 1,000 kg"


def test_route_legs_and_incidents_crossing_them() -> None:
    fleet = [vehicle("a")]
    pp = build(fleet, [shipment("north", delivery=place(52.6, 13.4))])
    visits = (Visit("north", 7000, 8 * 3600, 8 * 3600 + 60, (0,), 11000),)
    content = plans.plan_content(pp, Solution(
        (Route("vehicles/a", visits, 6 * 3600, 10 * 3600, 22000),), ()))
    legs = list(traffic.route_legs(content, {v.name: v for v in fleet}))
    assert len(legs) == 2  # out to the stop and back to the depot

    def incident(lat: float, start: int, end: int) -> decision_pb2.TrafficIncident:
        return decision_pb2.TrafficIncident(
            area=decision_pb2.Area(latitude=lat, longitude=13.4, radius_meters=500),
            slowdown_factor=2, start_time=ts(DAY + start), end_time=ts(DAY + end))

    assert traffic.passes_through(incident(52.55, 0, 86400), legs)
    assert not traffic.passes_through(incident(52.70, 0, 86400), legs)  # beyond the stop
    assert not traffic.passes_through(incident(52.55, 11 * 3600, 12 * 3600), legs)  # later


def test_solve_job_plans_a_small_instance_feasibly() -> None:
    """The worker's own computation, in this process: two trucks, four drops."""
    fleet = [vehicle("a"), vehicle("b")]
    shipments = [shipment(f"n{i}", weight=400, delivery=place(52.6 + i / 100, 13.4))
                 for i in range(2)] + [
        shipment(f"s{i}", weight=400, delivery=place(52.4 - i / 100, 13.4)) for i in range(2)]
    request = routing_service_pb2.PlanRoutesRequest(shipments=shipments,
                                                    vehicles=[v.name for v in fleet])
    job = SolveJob("test", request, tuple(fleet), EPOCH, (), time_limit=1.0)
    progress = []
    result = solve_job(job, threading.Event(), progress.append)
    assert result.feasible and not result.error and not result.cancelled
    content = result.content
    groups = sorted(sorted(s.shipment[0] for s in r.stops) for r in content.routes)
    assert groups == [["n", "n"], ["s", "s"]]
    assert content.progress.best_cost > 0 and progress
    pp = build(fleet, shipments)
    assert check(pp.problem, plans.solution_from_plan(content, pp.shipments, EPOCH,
                                                        pp.dimensions)) == []



def test_a_replan_plans_what_should_be_served_now() -> None:
    """Cancelled orders leave (unless a stop of theirs is done), updated orders bring their
    new content, a pending decision's additions are kept, broken vehicles are named."""

    def order(key: str, state: int = order_pb2.Order.STATE_RELEASED, weight: float = 10
              ) -> order_pb2.Order:
        return order_pb2.Order(
            name=f"orders/{key}", state=state, mode=order_pb2.TRANSPORT_MODE_OWN_FLEET,
            pickup=place(52.55, 13.35), delivery=place(52.6, 13.4),
            line_items=[order_pb2.LineItem(quantity=1, weight_kg=weight)])

    a, broken, spare, off = (vehicle("a"), vehicle("b"), vehicle("spare"), vehicle("off"))
    broken.status = vehicle_pb2.Vehicle.STATUS_BROKEN_DOWN
    spare.status = vehicle_pb2.Vehicle.STATUS_AVAILABLE
    off.status = vehicle_pb2.Vehicle.STATUS_OFF_DUTY
    a.status = vehicle_pb2.Vehicle.STATUS_AVAILABLE
    measured = {WEIGHT}
    planned = [shipping.order_shipment(order(k), measured) for k in ("done", "gone", "kept")]
    planned.append(shipment("inline"))
    active = route_plan_pb2.RoutePlan(routes=[
        route_plan_pb2.Route(vehicle="vehicles/a", stops=[
            route_plan_pb2.RouteStop(shipment="orders/done", departure_time=ts(DAY + 3600)),
            route_plan_pb2.RouteStop(shipment="orders/gone", departure_time=ts(DAY + 9000))]),
        route_plan_pb2.Route(vehicle="vehicles/b", stops=[
            route_plan_pb2.RouteStop(shipment="orders/kept", departure_time=ts(DAY + 9000))])])
    proposed = [*planned, shipping.order_shipment(order("urgent"), measured)]
    current = {
        "orders/done": order("done", order_pb2.Order.STATE_CANCELLED),
        "orders/gone": order("gone", order_pb2.Order.STATE_CANCELLED),
        "orders/kept": order("kept", weight=250),
        "orders/urgent": order("urgent"),
        "orders/late": order("late"),
    }
    scope = shipping.replan_scope(active, planned, proposed, ["orders/late"], current,
                                 [a, broken, spare, off], EPOCH + timedelta(seconds=7200))
    assert [s.id for s in scope.shipments] == [
        "orders/done", "orders/kept", "inline", "orders/urgent", "orders/late"]
    kept = next(s for s in scope.shipments if s.id == "orders/kept")
    assert [(q.dimension, q.amount) for q in kept.demands] == [(WEIGHT, 250.0)]
    assert scope.cancelled == {"orders/done", "orders/gone"}
    assert scope.added == {"orders/urgent", "orders/late"}
    assert [v.name for v in scope.fleet] == ["vehicles/a", "vehicles/b", "vehicles/spare"]
    assert scope.broken == {"vehicles/b"}
