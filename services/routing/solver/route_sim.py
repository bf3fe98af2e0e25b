"""Fast evaluation of one vehicle's stop sequence: the hot loop of the replan heuristics.

``RouteSim`` answers "is this sequence feasible on this vehicle, and what does it cost?" from
the matrix in plain Python lists, far faster than scheduling and checking the route; for a
vehicle with driver breaks, which it does not simulate, it falls back to the exact checker.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from services.routing.solver.feasibility import check_route
from services.routing.solver.model import COST_SCALE, Problem, StopKind, Vehicle
from services.routing.solver.schedule import schedule_route

# Weights of the infeasibility measure: load and order errors dominate lateness.
_LOAD_W, _ORDER_W = 1000, 10**6


class RouteSim:
    """Fast evaluation of one vehicle's stop sequence (the hot loop of the heuristics).

    Mirrors ``schedule.schedule_route`` (earliest start, then the start delayed to cut idle
    time) and the checker's rules: windows, capacity with pickups and deliveries, precedence and
    pairing, skills, shift, maximum distance and duration. Driver breaks are not simulated;
    for a vehicle with breaks ``feasible`` also runs the exact checker on the scheduled route.
    """

    def __init__(self, problem: Problem, departed: Collection[str] = ()) -> None:
        self.problem = problem
        self.departed = frozenset(departed)  # vehicles whose start cannot be delayed
        self.dist = problem.matrix.distance.tolist()
        self.time = problem.matrix.duration.tolist()
        self.stop = {s.id: s for s in problem.stops}
        self.windows = {s.id: sorted((w.start, w.end) for w in s.windows) for s in problem.stops}
        self.demand = {s.id: problem.demand(s) for s in problem.stops}

    def _pass(self, v: Vehicle, seq: Sequence[str], t0: int) -> tuple[int, int, int, int, int]:
        """One forward pass from ``t0``: (excess, distance, end, total wait, delay room)."""
        d, tt, stop, demand = self.dist, self.time, self.stop, self.demand
        cap = v.capacity
        load = [0] * len(cap)
        for sid in seq:
            if stop[sid].kind is StopKind.VISIT:
                load = [a + b for a, b in zip(load, demand[sid], strict=False)]
        excess = sum(max(0, q - c) for q, c in zip(load, cap, strict=False)) * _LOAD_W
        prev, t, dist, waited, room = v.start, t0, 0, 0, 10**12
        open_pickups: set[str] = set()
        for sid in seq:
            s = stop[sid]
            arr = t + tt[prev][s.location]
            dist += d[prev][s.location]
            start = arr
            for a, b in self.windows[sid]:
                if arr <= b:
                    start = max(arr, a)
                    waited += start - arr
                    room = min(room, b - start + waited)
                    break
            else:
                if self.windows[sid]:
                    excess += arr - self.windows[sid][-1][1]
                    room = 0
            if not s.skills <= v.skills:
                excess += _ORDER_W
            if s.kind is StopKind.PICKUP:
                open_pickups.add(sid)
                load = [a + b for a, b in zip(load, demand[sid], strict=False)]
                excess += sum(max(0, q - c) for q, c in zip(load, cap, strict=False)) * _LOAD_W
            else:  # a drop only lowers the load
                if s.kind is StopKind.DELIVERY and s.pair not in open_pickups:
                    excess += _ORDER_W  # delivered before (or without) its pickup
                open_pickups.discard(s.pair)
                load = [a - b for a, b in zip(load, demand[sid], strict=False)]
            prev, t = s.location, start + s.service_s
        excess += len(open_pickups) * _ORDER_W  # picked up, never delivered on this route
        if v.end is not None:
            t += tt[prev][v.end]
            dist += d[prev][v.end]
        excess += max(0, t - v.shift.end)
        if v.max_distance_m is not None:
            excess += max(0, dist - v.max_distance_m)
        return excess, dist, t, waited, room

    def timed(self, v: Vehicle, seq: Sequence[str]) -> tuple[int, int, int, int]:
        """(excess, distance, start, end) of the route ``schedule_route`` would produce.

        The delayed start only changes the duration, so it is only computed when the vehicle's
        duration costs or is limited.
        """
        t0 = v.shift.start
        excess, dist, end, waited, room = self._pass(v, seq, t0)
        if (excess == 0 and seq and not v.breaks and v.id not in self.departed
                and (v.cost_per_hour or v.max_duration_s is not None)):
            delay = min(waited, room, v.shift.end - end + waited)
            if delay > 0:
                e2, dist2, end2, _, _ = self._pass(v, seq, t0 + delay)
                if e2 == 0:
                    return 0, dist2, t0 + delay, end2
        return excess, dist, t0, end

    def score(self, v: Vehicle, seq: Sequence[str]) -> tuple[int, float]:
        """(infeasibility, cost in internal units) - compare lexicographically."""
        if not seq:
            return 0, 0.0
        excess, dist, start, end = self.timed(v, seq)
        if v.max_duration_s is not None:
            excess += max(0, end - start - v.max_duration_s)
        cost = (v.fixed_cost * COST_SCALE + dist * v.cost_per_km
                + (end - start) * v.cost_per_hour * COST_SCALE / 3600)
        return excess, cost

    def excess(self, v: Vehicle, seq: Sequence[str]) -> int:
        return self.score(v, seq)[0]

    def cost(self, v: Vehicle, seq: Sequence[str]) -> float:
        return self.score(v, seq)[1]

    def feasible(self, v: Vehicle, seq: Sequence[str]) -> bool:
        if self.excess(v, seq):
            return False
        if not v.breaks or not seq:
            return True
        found: list = []
        route = schedule_route(self.problem, v, seq, by_id=self.stop)
        check_route(self.problem, v, route, self.stop, found)
        return not found

    def delta(self, v: Vehicle, seq: Sequence[str], pos: int, sid: str) -> float:
        """Approximate cost of inserting ``sid`` at ``pos`` (travel only; ranks candidates)."""
        a = v.start if pos == 0 else self.stop[seq[pos - 1]].location
        b = v.end if pos == len(seq) else self.stop[seq[pos]].location
        x = self.stop[sid].location
        rate = v.cost_per_hour * COST_SCALE / 3600
        fixed = v.fixed_cost * COST_SCALE if not seq else 0.0
        if b is None:  # open route, appended at the end
            return fixed + self.dist[a][x] * v.cost_per_km + self.time[a][x] * rate
        return fixed + ((self.dist[a][x] + self.dist[x][b] - self.dist[a][b]) * v.cost_per_km
                        + (self.time[a][x] + self.time[x][b] - self.time[a][b]) * rate)

    def best_insertion(self, v: Vehicle, seq: list[str], unit: str | tuple[str, ...]
                       ) -> tuple[float, tuple[int, ...]] | None:
        """Cheapest feasible insertion of a stop or a (pickup, delivery) unit after the pins."""
        unit = (unit,) if isinstance(unit, str) else unit
        if not all(self.stop[s].skills <= v.skills for s in unit):
            return None
        lo = min(len(v.fixed_prefix), len(seq))
        if len(unit) == 1:
            cands = sorted((self.delta(v, seq, i, unit[0]), (i,)) for i in range(lo, len(seq) + 1))
        else:
            cands = []
            for i in range(lo, len(seq) + 1):
                dp = self.delta(v, seq, i, unit[0])
                with_p = [*seq[:i], unit[0], *seq[i:]]
                cands += [(dp + self.delta(v, with_p, j, unit[1]), (i, j))
                          for j in range(i + 1, len(with_p) + 1)]
            cands.sort()
        for cost, pos in cands:
            if self.feasible(v, apply_insertion(seq, unit, pos)):
                return cost, pos
        return None


def apply_insertion(seq: list[str], unit: tuple[str, ...], pos: tuple[int, ...]) -> list[str]:
    """``seq`` with ``unit[k]`` inserted at ``pos[k]`` (positions in the growing list)."""
    out = list(seq)
    for sid, i in zip(unit, pos, strict=True):
        out.insert(i, sid)
    return out
