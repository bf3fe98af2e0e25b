"""Our own referee: validates any solution against the problem, independent of the solver.

Solvers are trusted for nothing. ``check`` recomputes every route from the matrix and the stop
data (arrival times, capacities in every dimension, windows, breaks, shift, limits, skills,
pairing, coverage) and returns the violations; ``evaluate`` also returns the recomputed
distance, duration and cost, which is what the benchmark reports.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.routing.solver.model import (
    COST_SCALE,
    Problem,
    Route,
    Solution,
    Stop,
    StopKind,
    UnassignedReason,
    Vehicle,
    arc_cost,
)
from services.routing.solver.schedule import apply_stop, initial_load


class ViolationKind(enum.Enum):
    CAPACITY = "capacity"
    TIME_WINDOW = "time_window"
    TRAVEL_TIME = "travel_time"  # arrives earlier than the travel time allows
    SERVICE_TIME = "service_time"  # leaves before the service is done
    SHIFT = "shift"
    BREAK = "break"
    MAX_DURATION = "max_duration"
    MAX_DISTANCE = "max_distance"
    SKILL = "skill"
    PAIRING = "pairing"  # pickup and delivery not on the same vehicle / one missing
    PRECEDENCE = "precedence"  # delivery before its pickup
    DUPLICATE = "duplicate"  # stop visited twice, or vehicle used twice
    MISSING = "missing"  # neither visited nor listed unassigned
    UNKNOWN = "unknown"  # stop or vehicle id not in the problem
    FIXED_PREFIX = "fixed_prefix"  # a pinned (in-progress) stop moved


@dataclass(frozen=True, slots=True)
class Violation:
    kind: ViolationKind
    vehicle_id: str | None
    stop_id: str | None
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value}: vehicle={self.vehicle_id} stop={self.stop_id}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Evaluation:
    violations: tuple[Violation, ...]
    distance: int  # matrix units (metres), recomputed
    duration: int  # sum of route durations (s)
    cost: float  # currency: fixed + per km + per hour of used routes (no drop penalties)
    vehicles_used: int
    unassigned: int

    @property
    def feasible(self) -> bool:
        return not self.violations


def check_route(problem: Problem, v: Vehicle, r: Route, by_id: dict[str, Stop], out: list) -> int:
    """Append the violations of vehicle ``v``'s route ``r`` to ``out``; returns its
    recomputed distance. ``by_id`` maps every stop id of the route to its stop. The exact check
    of one route, without the plan-wide rules (coverage, duplicates, pairs across vehicles):
    ``evaluate`` runs it on every route, the replan heuristics on a candidate route."""
    m = problem.matrix

    def bad(kind: ViolationKind, stop: str | None, detail: str) -> None:
        out.append(Violation(kind, v.id, stop, detail))

    stops = [by_id[sid] for sid in r.stop_ids]
    n_fixed = len(v.fixed_prefix)
    if n_fixed and tuple(r.stop_ids[:n_fixed]) != v.fixed_prefix:
        bad(ViolationKind.FIXED_PREFIX, None, f"route must start with {list(v.fixed_prefix)}")
    if r.start_time < v.shift.start:
        bad(ViolationKind.SHIFT, None, f"starts at {r.start_time} before shift {v.shift.start}")

    # Load: plain goods leave the depot on board; pairs add at pickup, remove at delivery.
    load = initial_load(problem, stops)
    if any(q > c for q, c in zip(load, v.capacity, strict=False)):
        bad(ViolationKind.CAPACITY, None, f"departs with {load} > capacity {list(v.capacity)}")
    seen_pickups: set[str] = set()
    prev, t, dist = v.start, r.start_time, 0
    intervals: list[tuple[int, int]] = []  # busy service intervals, for break overlap checks
    legs: list[tuple[int, int, int]] = []  # (depart, next service start, travel) per leg
    for s, visit in zip(stops, r.visits, strict=True):
        travel = m.time(prev, s.location)
        dist += m.dist(prev, s.location)
        if visit.start < t + travel or visit.arrival < t + travel:
            bad(ViolationKind.TRAVEL_TIME, s.id, f"starts {visit.start}, earliest {t + travel}")
        if visit.arrival > visit.start:
            bad(ViolationKind.TRAVEL_TIME, s.id, "service starts before arrival")
        if s.windows and not any(w.contains(visit.start) for w in s.windows):
            wins = [(w.start, w.end) for w in s.windows]
            bad(ViolationKind.TIME_WINDOW, s.id, f"service starts {visit.start}, windows {wins}")
        if visit.departure < visit.start + s.service_s:
            bad(ViolationKind.SERVICE_TIME, s.id, f"leaves before {s.service_s}s of service")
        if not v.can_serve(s):
            bad(ViolationKind.SKILL, s.id, f"needs {sorted(s.skills - v.skills)}")
        if s.kind is StopKind.PICKUP:
            seen_pickups.add(s.id)
        elif s.kind is StopKind.DELIVERY and s.pair not in seen_pickups:
            bad(ViolationKind.PRECEDENCE, s.id, f"delivered before pickup {s.pair}")
        apply_stop(problem, load, s)
        if any(q > c for q, c in zip(load, v.capacity, strict=False)):
            bad(ViolationKind.CAPACITY, s.id, f"load {load} > capacity {list(v.capacity)}")
        legs.append((t, visit.start, travel))
        intervals.append((visit.start, visit.departure))
        prev, t = s.location, visit.departure
    end = t
    if v.end is not None:
        travel = m.time(prev, v.end)
        dist += m.dist(prev, v.end)
        legs.append((t, r.end_time, travel))
        end = r.end_time
        if r.end_time < t + travel:
            bad(ViolationKind.TRAVEL_TIME, None, f"back at {r.end_time}, earliest {t + travel}")
    if stops and end > v.shift.end:
        bad(ViolationKind.SHIFT, None, f"ends at {end} after shift end {v.shift.end}")
    if stops and v.max_duration_s is not None and end - r.start_time > v.max_duration_s:
        bad(ViolationKind.MAX_DURATION, None, f"{end - r.start_time}s > {v.max_duration_s}s")
    if v.max_distance_m is not None and dist > v.max_distance_m:
        bad(ViolationKind.MAX_DISTANCE, None, f"{dist} > {v.max_distance_m}")
    if stops:
        _check_breaks(v, r, end, intervals, legs, bad)
    return dist


def _check_breaks(v: Vehicle, r: Route, end: int, intervals, legs, bad) -> None:
    # Same semantics as OR-Tools: a break lies before the route, after it, or inside a leg
    # (between a departure and the next service start), and each leg must still have room for
    # its travel time plus the breaks taken in it.
    if len(r.breaks) != len(v.breaks):
        bad(ViolationKind.BREAK, None, f"{len(r.breaks)} breaks planned, {len(v.breaks)} needed")
        return
    for need, got in zip(sorted(v.breaks, key=lambda b: b.window.start),
                         sorted(r.breaks, key=lambda b: b.start), strict=True):
        if got.duration_s < need.duration_s or not (
            need.window.start <= got.start <= need.latest_start
        ):
            bad(ViolationKind.BREAK, None, f"break at {got.start} outside {need.window}")
        b0, b1 = got.start, got.start + got.duration_s
        if b1 <= r.start_time or b0 >= end:
            continue
        if any(b0 < s1 and s0 < b1 for s0, s1 in intervals):
            bad(ViolationKind.BREAK, None, f"break at {b0} overlaps a service")
        if not any(d <= b0 and b1 <= nxt for d, nxt, _ in legs):
            bad(ViolationKind.BREAK, None, f"break at {b0} does not fit in any leg")
    for d, nxt, travel in legs:
        inside = [b for b in r.breaks if d <= b.start and b.start + b.duration_s <= nxt]
        taken = sum(b.duration_s for b in inside)
        if taken and nxt - d < travel + taken:
            bad(ViolationKind.BREAK, None, f"leg from {d}: no time for travel and breaks")


def evaluate(problem: Problem, solution: Solution) -> Evaluation:
    out: list[Violation] = []
    by_id = {s.id: s for s in problem.stops}
    vehicles = {v.id: v for v in problem.vehicles}
    placed: dict[str, str] = {}  # stop id -> vehicle id
    used: set[str] = set()
    total_dist = total_dur = 0
    cost = 0.0
    for r in solution.routes:
        v = vehicles.get(r.vehicle_id)
        if v is None:
            out.append(Violation(ViolationKind.UNKNOWN, r.vehicle_id, None, "unknown vehicle"))
            continue
        if r.vehicle_id in used:
            out.append(Violation(ViolationKind.DUPLICATE, v.id, None, "vehicle has two routes"))
        used.add(r.vehicle_id)
        ok = True
        for sid in r.stop_ids:
            if sid not in by_id:
                out.append(Violation(ViolationKind.UNKNOWN, v.id, sid, "unknown stop"))
                ok = False
            elif sid in placed:
                out.append(Violation(ViolationKind.DUPLICATE, v.id, sid, "visited twice"))
            placed.setdefault(sid, v.id)
        if not ok or not r.visits:
            continue
        dist = check_route(problem, v, r, by_id, out)
        end = r.end_time if v.end is not None else r.visits[-1].departure
        dur = end - r.start_time
        total_dist += dist
        total_dur += dur
        cost += v.fixed_cost + arc_cost(v, dist, dur) / COST_SCALE
    listed = {u.stop_id for u in solution.unassigned}
    for sid in listed & placed.keys():
        out.append(Violation(ViolationKind.DUPLICATE, placed[sid], sid, "routed and unassigned"))
    for s in problem.stops:
        if s.id not in placed and s.id not in listed:
            out.append(Violation(ViolationKind.MISSING, None, s.id, "not routed nor unassigned"))
        if s.kind is StopKind.PICKUP and s.pair is not None:
            a, b = placed.get(s.id), placed.get(s.pair)
            if a != b:
                out.append(Violation(ViolationKind.PAIRING, a or b, s.id, f"pair {s.pair} split"))
    for v in problem.vehicles:  # pinned stops must be on their vehicle even if it has no route
        for sid in v.fixed_prefix:
            if placed.get(sid) != v.id:
                out.append(Violation(ViolationKind.FIXED_PREFIX, v.id, sid, "pinned stop moved"))
    return Evaluation(
        tuple(out), total_dist, total_dur, cost,
        sum(1 for r in solution.routes if r.visits), len(solution.unassigned),
    )


def check(problem: Problem, solution: Solution) -> list[Violation]:
    """All violations of ``solution`` (empty list = feasible)."""
    return list(evaluate(problem, solution).violations)


# --------------------------------------------------------------------------- diagnosis


def _alone(
    problem: Problem, v: Vehicle, s: Stop, by_id: dict[str, Stop]
) -> UnassignedReason | None:
    """Why ``v`` cannot serve ``s`` even on an otherwise empty route (None = it can)."""
    m = problem.matrix
    if not v.can_serve(s):
        return UnassignedReason.NO_VEHICLE_WITH_SKILL
    if any(q > c for q, c in zip(problem.demand(s), v.capacity, strict=False)):
        return UnassignedReason.CAPACITY
    # A vehicle with pinned (in-progress) stops is only free once it has served them.
    at, free = v.start, v.shift.start
    for sid in v.fixed_prefix:
        pinned = by_id[sid]
        if pinned.id == s.id:
            return None
        arr = free + m.time(at, pinned.location)
        begin = next((max(arr, w.start) for w in pinned.windows if arr <= w.end), arr)
        at, free = pinned.location, begin + pinned.service_s
    arrival = free + m.time(at, s.location)
    fits = [w for w in s.windows if w.end >= arrival and w.start <= v.shift.end] or (
        [] if s.windows else [None]
    )
    if not fits:
        return UnassignedReason.TIME_WINDOW_UNREACHABLE
    back = m.time(s.location, v.end) if v.end is not None else 0
    first = fits[0]
    start = arrival if first is None else max(arrival, first.start)
    if start + s.service_s + back > v.shift.end:
        return UnassignedReason.SHIFT_TOO_SHORT
    round_trip = m.dist(at, s.location) + (m.dist(s.location, v.end) if v.end is not None else 0)
    if v.max_distance_m is not None and round_trip > v.max_distance_m:
        return UnassignedReason.MAX_DISTANCE
    if v.max_duration_s is not None and (
        m.time(at, s.location) + s.service_s + back > v.max_duration_s
    ):
        return UnassignedReason.MAX_DURATION
    return None


# When vehicles disagree, report the reason of the "closest" vehicle: the order is how far a
# vehicle got through the checks above (a skilled-but-too-small truck beats an unskilled one).
_DEPTH = [
    UnassignedReason.NO_VEHICLE_WITH_SKILL,
    UnassignedReason.CAPACITY,
    UnassignedReason.TIME_WINDOW_UNREACHABLE,
    UnassignedReason.SHIFT_TOO_SHORT,
    UnassignedReason.MAX_DISTANCE,
    UnassignedReason.MAX_DURATION,
]


def diagnose_unassigned(
    problem: Problem, stop: Stop, *, by_id: dict[str, Stop] | None = None, _pair: bool = True
) -> UnassignedReason:
    """The most specific reason ``stop`` could not be served, independent of any solver."""
    by_id = by_id or {s.id: s for s in problem.stops}
    reasons = [_alone(problem, v, stop, by_id) for v in problem.vehicles]
    if not reasons:
        return UnassignedReason.FLEET_EXHAUSTED
    if None not in reasons:
        return max(reasons, key=_DEPTH.index)  # type: ignore[arg-type]
    if _pair and stop.pair is not None:
        partner = by_id[stop.pair]
        if diagnose_unassigned(problem, partner, by_id=by_id, _pair=False) not in (
            UnassignedReason.DROPPED_FOR_COST,
            UnassignedReason.FLEET_EXHAUSTED,
        ):
            return UnassignedReason.PAIR_INFEASIBLE
    return UnassignedReason.FLEET_EXHAUSTED if stop.required else UnassignedReason.DROPPED_FOR_COST
