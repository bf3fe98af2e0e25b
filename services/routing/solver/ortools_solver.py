"""OR-Tools routing backend: the solver that models every constraint of ``model.Problem``.

Why it exists next to PyVRP: it is the only backend here with multiple time windows per stop,
driver breaks, skills, pickup-and-delivery pairs and pinned in-progress stops. It is weaker on
plain VRPTW (2.84 % mean gap on Solomon at 10 s vs 0.10 % for PyVRP on this machine), so the
portfolio uses it where PyVRP cannot model the problem, or as a fallback.

Search: PARALLEL_CHEAPEST_INSERTION + guided local search. PATH_CHEAPEST_ARC was measured to find
NO solution within 30 s on R101/R105/RC101/RC105 (it builds routes arc by arc and dead-ends on
tight windows); insertion builds feasible partial routes and always ends with a solution because
every stop has a drop penalty (required stops: a prohibitive one, growing with the priority, so
that a fleet too small for every required stop leaves out the lowest priorities).
"""

from __future__ import annotations

import threading
import time

from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from services.routing.solver.base import (
    Progress,
    ProgressFn,
    WarmStart,
    assemble,
    cost_scale_factor,
    empty_solution,
    hopeless_stops,
    warm_sequences,
)
from services.routing.solver.matrix import UNREACHABLE
from services.routing.solver.model import (
    COST_SCALE,
    PlannedBreak,
    Problem,
    Route,
    Solution,
    StopKind,
)
from services.routing.solver.schedule import route_from_times

FIRST_SOLUTION = routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
METAHEURISTIC = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH


class ORToolsSolver:
    name = "ortools"

    def __init__(self, first_solution=FIRST_SOLUTION, metaheuristic=METAHEURISTIC) -> None:
        self.first_solution = first_solution
        self.metaheuristic = metaheuristic

    def unsupported(self, problem: Problem) -> list[str]:
        return []

    def supports(self, problem: Problem) -> bool:
        return True

    def solve(
        self,
        problem: Problem,
        time_limit: float,
        *,
        cancel: threading.Event | None = None,
        on_progress: ProgressFn | None = None,
        warm_start: WarmStart | None = None,
    ) -> Solution:
        t0 = time.perf_counter()
        skip = hopeless_stops(problem)
        m = _Model(problem, set(skip))
        routing = m.routing
        k = m.k
        solver = routing.solver()

        best = [float("inf")]

        def at_solution() -> None:
            # Guided local search also accepts worse neighbours: report only new bests.
            cost = routing.CostVar().Value() / (k * COST_SCALE)
            if on_progress is not None and cost < best[0]:
                best[0] = cost
                on_progress(Progress(self.name, time.perf_counter() - t0, cost))
            if cancel is not None and cancel.is_set():
                solver.FinishCurrentSearch()

        routing.AddAtSolutionCallback(at_solution)
        if cancel is not None:
            # Also stops a first-solution phase that has not produced any solution yet.
            routing.AddSearchMonitor(solver.CustomLimit(cancel.is_set))

        params = pywrapcp.DefaultRoutingSearchParameters()
        params.first_solution_strategy = self.first_solution
        params.local_search_metaheuristic = self.metaheuristic
        assignment = None
        initial = m.warm_assignment(warm_sequences(warm_start))
        remaining = max(0.05, time_limit - (time.perf_counter() - t0))  # after model building
        params.time_limit.FromMilliseconds(int(remaining * 1000))
        if initial is not None:
            assignment = routing.SolveFromAssignmentWithParameters(initial, params)
        if assignment is None:
            remaining = max(0.05, time_limit - (time.perf_counter() - t0))
            params.time_limit.FromMilliseconds(int(remaining * 1000))
            assignment = routing.SolveWithParameters(params)
        wall = time.perf_counter() - t0
        if assignment is None:
            return empty_solution(problem, self.name, wall, f"ortools status {routing.status()}")
        return m.extract(assignment, self.name, wall, skip)


class _Model:
    """Builds the routing model; node ids: stops first, then depots, then the open-route sink."""

    def __init__(self, problem: Problem, skip: set[str]) -> None:
        self.p = problem
        self.k = k = cost_scale_factor(problem)
        self.stops = [s for s in problem.stops if s.id not in skip]
        n_stops = len(self.stops)
        depot_locs = sorted({v.start for v in problem.vehicles} | {
            v.end for v in problem.vehicles if v.end is not None
        })
        self.depot_node = {loc: n_stops + i for i, loc in enumerate(depot_locs)}
        open_routes = any(v.end is None for v in problem.vehicles)
        # The sink is a node only when some route is open (an unused node would be "visited").
        self.sink = n_stops + len(depot_locs)
        node_loc = [s.location for s in self.stops] + depot_locs + [depot_locs[0]] * open_routes
        n_nodes = len(node_loc)
        vehicles = problem.vehicles
        starts = [self.depot_node[v.start] for v in vehicles]
        ends = [self.depot_node[v.end] if v.end is not None else self.sink for v in vehicles]
        self.manager = manager = pywrapcp.RoutingIndexManager(n_nodes, len(vehicles), starts, ends)
        self.routing = routing = pywrapcp.RoutingModel(manager)
        self.node_of = {s.id: i for i, s in enumerate(self.stops)}

        dist = problem.matrix.distance[node_loc][:, node_loc].copy()
        travel = problem.matrix.duration[node_loc][:, node_loc].copy()
        if open_routes:
            dist[:, self.sink] = 0  # arriving at the open-route sink is free
            travel[:, self.sink] = 0
        dist[dist > UNREACHABLE] = UNREACHABLE
        travel[travel > UNREACHABLE] = UNREACHABLE
        service = [s.service_s for s in self.stops] + [0] * (n_nodes - n_stops)
        transit_time = travel + [[x] for x in service]  # service at i, then travel i -> j

        # Arc costs: one evaluator per distinct (per-km, per-hour) vehicle cost class. Matrices
        # are registered natively, so no Python callback runs inside the search.
        cost_cb: dict[tuple, int] = {}
        for vi, v in enumerate(vehicles):
            key = (v.cost_per_km,)
            if key not in cost_cb:
                cost = dist * round(v.cost_per_km * k)
                cost_cb[key] = routing.RegisterTransitMatrix(cost.tolist())
            routing.SetArcCostEvaluatorOfVehicle(cost_cb[key], vi)
            if v.fixed_cost:
                routing.SetFixedCostOfVehicle(round(v.fixed_cost * COST_SCALE * k), vi)

        time_cb = routing.RegisterTransitMatrix(transit_time.tolist())
        horizon = max(v.shift.end for v in vehicles)
        routing.AddDimension(time_cb, horizon, horizon, False, "Time")
        self.time = td = routing.GetDimensionOrDie("Time")
        for vi, v in enumerate(vehicles):
            for idx in (routing.Start(vi), routing.End(vi)):
                td.CumulVar(idx).SetRange(v.shift.start, v.shift.end)
            if v.max_duration_s is not None:
                td.SetSpanUpperBoundForVehicle(v.max_duration_s, vi)
            if v.cost_per_hour:  # paid by the hour: the whole span (incl. waiting) costs
                td.SetSpanCostCoefficientForVehicle(
                    round(v.cost_per_hour * COST_SCALE / 3600 * k), vi
                )
        for node, s in enumerate(self.stops):
            if not s.windows:
                continue
            var = td.CumulVar(manager.NodeToIndex(node))
            ws = sorted(s.windows, key=lambda w: w.start)
            var.SetRange(ws[0].start, ws[-1].end)
            for a, b in zip(ws, ws[1:], strict=False):  # holes between the windows
                if b.start - a.end > 1:
                    var.RemoveInterval(a.end + 1, b.start - 1)

        if any(v.max_distance_m is not None for v in vehicles):
            dist_cb = routing.RegisterTransitMatrix(dist.tolist())
            caps = [v.max_distance_m if v.max_distance_m is not None else UNREACHABLE
                    for v in vehicles]
            routing.AddDimensionWithVehicleCapacity(dist_cb, 0, caps, True, "Distance")

        self._capacities(n_nodes)
        self._stop_rules(n_nodes, service)

    def _capacities(self, n_nodes: int) -> None:
        p, routing = self.p, self.routing
        pairs = p.uses_pairs
        for d in range(p.dimensions):
            demand = [0] * n_nodes
            for node, s in enumerate(self.stops):
                q = p.demand(s)[d]
                # Without pairs, "delivered so far" <= capacity is equivalent to the onboard
                # load (a route's total) and keeps the start cumul fixed at 0, which the
                # insertion heuristics handle best. With pairs the cumul is the onboard load:
                # it starts at the route's plain total (free start cumul), drops at plain stops
                # and deliveries, rises at pickups and must end at 0.
                if not pairs:
                    demand[node] = q
                else:
                    demand[node] = q if s.kind is StopKind.PICKUP else -q
            cb = routing.RegisterUnaryTransitVector(demand)
            caps = [v.capacity[d] for v in p.vehicles]
            name = f"Load{d}"
            routing.AddDimensionWithVehicleCapacity(cb, 0, caps, not pairs, name)
            if pairs:
                dim = routing.GetDimensionOrDie(name)
                for vi in range(len(p.vehicles)):
                    dim.CumulVar(routing.End(vi)).SetValue(0)

    def _stop_rules(self, n_nodes: int, service: list[int]) -> None:
        p, routing, manager, td = self.p, self.routing, self.manager, self.time
        solver = routing.solver()
        vehicles = p.vehicles
        pinned = {sid for v in vehicles for sid in v.fixed_prefix}
        for node, s in enumerate(self.stops):
            idx = manager.NodeToIndex(node)
            if s.id not in pinned:
                # Every stop may be dropped at a price; a required stop's price is prohibitive
                # (and higher for a higher priority), so the search always has a solution and
                # the reason is diagnosed afterwards. A pair's two disjunctions are both active
                # or both not, and each carries half of the shipment's penalty.
                routing.AddDisjunction([idx], s.drop_penalty * self.k)
            if s.skills:
                banned = [vi for vi, v in enumerate(vehicles) if not v.can_serve(s)]
                if banned:
                    routing.VehicleVar(idx).RemoveValues(banned)
        for pick, drop in p.pairs():
            if pick.id not in self.node_of or drop.id not in self.node_of:
                continue
            a = manager.NodeToIndex(self.node_of[pick.id])
            b = manager.NodeToIndex(self.node_of[drop.id])
            routing.AddPickupAndDelivery(a, b)
            solver.Add(routing.VehicleVar(a) == routing.VehicleVar(b))
            solver.Add(td.CumulVar(a) <= td.CumulVar(b))
        for vi, v in enumerate(vehicles):
            prev = routing.Start(vi)
            for sid in v.fixed_prefix:  # pinned stops: fixed successor chain from the start
                idx = manager.NodeToIndex(self.node_of[sid])
                routing.NextVar(prev).SetValue(idx)
                prev = idx
        if p.uses_breaks:
            size = routing.Size() + routing.vehicles()
            visit = [service[manager.IndexToNode(i)] for i in range(size)]
            self.breaks: dict[int, list] = {}
            for vi, v in enumerate(vehicles):
                if not v.breaks:
                    continue
                ivs = [
                    solver.FixedDurationIntervalVar(
                        b.window.start, b.latest_start, b.duration_s, False, f"break-{v.id}-{j}"
                    )
                    for j, b in enumerate(v.breaks)
                ]
                td.SetBreakIntervalsOfVehicle(ivs, vi, visit)
                for iv in ivs:  # so the solution reports where each break was placed
                    routing.AddIntervalToAssignment(iv)
                self.breaks[vi] = ivs

    def warm_assignment(self, seqs: dict[str, list[str]]):
        if not seqs:
            return None
        routes = []
        for v in self.p.vehicles:
            seq = [s for s in seqs.get(v.id, []) if s in self.node_of]
            routes.append([self.manager.NodeToIndex(self.node_of[s]) for s in seq])
        self.routing.CloseModelWithParameters(pywrapcp.DefaultRoutingSearchParameters())
        return self.routing.ReadAssignmentFromRoutes(routes, True)

    def extract(self, a, name: str, wall: float, skip) -> Solution:
        routing, manager, td = self.routing, self.manager, self.time
        sequences: dict[str, list[str]] = {}
        timed: dict[str, Route] = {}
        for vi, v in enumerate(self.p.vehicles):
            idx = a.Value(routing.NextVar(routing.Start(vi)))
            seq, starts = [], []
            while not routing.IsEnd(idx):
                seq.append(self.stops[manager.IndexToNode(idx)].id)
                starts.append(a.Value(td.CumulVar(idx)))
                idx = a.Value(routing.NextVar(idx))
            if not seq:
                continue
            sequences[v.id] = seq
            ivs = getattr(self, "breaks", {}).get(vi)
            if ivs:
                # Keep OR-Tools' own schedule: it placed the breaks consistently with it.
                breaks = [PlannedBreak(a.StartValue(iv), a.DurationValue(iv)) for iv in ivs]
                timed[v.id] = route_from_times(
                    self.p, v, seq, starts,
                    a.Value(td.CumulVar(routing.Start(vi))),
                    a.Value(td.CumulVar(routing.End(vi))),
                    breaks,
                )
        return assemble(self.p, sequences, name, wall, routes=timed, known_reasons=skip)
