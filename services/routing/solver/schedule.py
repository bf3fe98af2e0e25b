"""Turn a stop sequence into a timed :class:`Route` (earliest-start schedule).

Solvers return sequences; the times, loads and distances users see are computed here, from the
same matrix the checker uses, so a route's numbers never depend on which solver produced it.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.routing.solver.model import (
    PlannedBreak,
    Problem,
    Route,
    Stop,
    StopKind,
    Vehicle,
    Visit,
)


def initial_load(problem: Problem, stops: Sequence[Stop]) -> list[int]:
    """Plain stops' goods are loaded at the start depot (see the model's load semantics)."""
    load = [0] * problem.dimensions
    for s in stops:
        if s.kind is StopKind.VISIT:
            for k, q in enumerate(problem.demand(s)):
                load[k] += q
    return load


def apply_stop(problem: Problem, load: list[int], stop: Stop) -> None:
    sign = 1 if stop.kind is StopKind.PICKUP else -1
    for k, q in enumerate(problem.demand(stop)):
        load[k] += sign * q


def service_start(stop: Stop, arrival: int) -> int | None:
    """Earliest service start at or after ``arrival`` inside any window; None if too late."""
    if not stop.windows:
        return arrival
    for w in sorted(stop.windows, key=lambda w: w.start):
        if arrival <= w.end:
            return max(arrival, w.start)
    return None


def _forward(
    problem: Problem,
    vehicle: Vehicle,
    stops: Sequence[Stop],
    t0: int,
) -> tuple[list[Visit], int, int, list[PlannedBreak], bool]:
    """Earliest-time pass from ``t0``. Late visits keep their late start (flagged, not hidden)."""
    m = problem.matrix
    load = initial_load(problem, stops)
    pending = sorted(vehicle.breaks, key=lambda b: b.window.start)
    planned: list[PlannedBreak] = []
    visits: list[Visit] = []
    prev, t, dist, ok = vehicle.start, t0, 0, True

    def take_breaks_before(depart: int, travel: int, next_open: int) -> int:
        # Greedy: take a pending break at departure when its window is already open, or when it
        # fits in the waiting time before the next window opens; otherwise defer it to a later
        # leg. Exact break placement comes from OR-Tools; this is only the fallback schedule.
        while pending:
            b = pending[0]
            start = max(depart, b.window.start)
            if start > b.latest_start:
                break  # missed: the checker reports it
            fits_in_wait = start + b.duration_s + travel <= max(next_open, depart + travel)
            if depart < b.window.start and not fits_in_wait:
                break
            planned.append(PlannedBreak(start, b.duration_s))
            pending.pop(0)
            depart = start + b.duration_s
        return depart

    for s in stops:
        travel = m.time(prev, s.location)
        opens = min((w.start for w in s.windows), default=0)
        depart = take_breaks_before(t, travel, opens - travel)
        arrival = depart + travel
        start = service_start(s, arrival)
        if start is None:
            ok, start = False, arrival
        dist += m.dist(prev, s.location)
        apply_stop(problem, load, s)
        visits.append(
            Visit(s.id, arrival, start, start + s.service_s, tuple(load), m.dist(prev, s.location))
        )
        prev, t = s.location, start + s.service_s
    if vehicle.end is not None:
        t = take_breaks_before(t, m.time(prev, vehicle.end), 0) + m.time(prev, vehicle.end)
        dist += m.dist(prev, vehicle.end)
    for b in pending:  # the shift has ended before these windows: break after the route
        planned.append(PlannedBreak(max(t, b.window.start), b.duration_s))
    return visits, t, dist, planned, ok


def schedule_route(
    problem: Problem,
    vehicle: Vehicle,
    stop_ids: Sequence[str],
    *,
    by_id: dict[str, Stop] | None = None,
) -> Route:
    """Earliest-start schedule, then the start is delayed to cut idle time (duration cost)."""
    by_id = by_id or {s.id: s for s in problem.stops}
    stops = [by_id[i] for i in stop_ids]
    t0 = vehicle.shift.start
    visits, end, dist, breaks, ok = _forward(problem, vehicle, stops, t0)
    if ok and visits and not vehicle.breaks:
        # Latest start that keeps every service start inside its window: waiting absorbs delay.
        waited, delay = 0, None
        for v, s in zip(visits, stops, strict=True):
            waited += v.start - v.arrival
            if s.windows:
                w_end = next(w.end for w in s.windows if w.start <= v.start <= w.end)
                room = w_end - v.start + waited
                delay = room if delay is None else min(delay, room)
        room_end = vehicle.shift.end - end + waited
        delay = min(waited, delay if delay is not None else waited, room_end)
        if delay > 0:
            v2, e2, d2, b2, ok2 = _forward(problem, vehicle, stops, t0 + delay)
            if ok2:
                visits, end, dist, breaks = v2, e2, d2, b2
                t0 += delay
    if not visits:
        end = t0
    return Route(vehicle.id, tuple(visits), t0, end, dist, tuple(breaks))


def route_from_times(
    problem: Problem,
    vehicle: Vehicle,
    stop_ids: Sequence[str],
    starts: Sequence[int],
    start_time: int,
    end_time: int,
    breaks: Sequence[PlannedBreak] = (),
    *,
    by_id: dict[str, Stop] | None = None,
) -> Route:
    """Build a Route from a solver's own service-start times (used when it placed breaks)."""
    by_id = by_id or {s.id: s for s in problem.stops}
    stops = [by_id[i] for i in stop_ids]
    m = problem.matrix
    load = initial_load(problem, stops)
    visits, prev, t, dist = [], vehicle.start, start_time, 0
    for s, start in zip(stops, starts, strict=True):
        gap_breaks = sum(b.duration_s for b in breaks if t <= b.start < start)
        arrival = min(start, t + gap_breaks + m.time(prev, s.location))
        apply_stop(problem, load, s)
        d = m.dist(prev, s.location)
        dist += d
        visits.append(Visit(s.id, arrival, start, start + s.service_s, tuple(load), d))
        prev, t = s.location, start + s.service_s
    if vehicle.end is not None:
        dist += m.dist(prev, vehicle.end)
    else:
        end_time = t
    return Route(vehicle.id, tuple(visits), start_time, end_time, dist, tuple(breaks))
