"""The residual problem of a plan at time ``t``: what is done stays, the rest is replanned.

``freeze_at`` removes completed stops, pins each working vehicle's next stop as its first visit
and starts the vehicle where it last left a customer; ``retime`` schedules the routes of
vehicles already driving at ``t`` without a delayed start. The replan heuristics
(``heuristics``) then work on the per-vehicle sequences it returns.

Load model in the residual problem: a delivery whose pickup is already done is on board, so it
becomes a plain stop (goods on board at the start, which is exactly the residual semantics) and
is locked to its vehicle with a private skill. Assumption: plain stops that move to a vehicle
already on the road (a broken vehicle's undelivered goods, a stop a replan moves) have their
goods available to it (hand-over or reload is outside this model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from services.routing.solver.model import (
    PlannedBreak,
    Problem,
    Solution,
    Stop,
    StopKind,
    TimeWindow,
    Vehicle,
    Visit,
)
from services.routing.solver.schedule import schedule_route

#: Private skill prefix that ties an on-board delivery to the vehicle that picked it up.
ONBOARD_SKILL = "cartage.onboard/"


@dataclass(frozen=True)
class Tracked:
    """What the tracking service recorded for a plan's stops (solver stop ids): ``completed``
    stops have a DEPARTED, PICKED_UP or DELIVERED milestone, ``arrived`` ones an ARRIVED (or
    DELIVERY_ATTEMPTED) without one of those."""

    completed: frozenset[str] = frozenset()
    arrived: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Frozen:
    problem: Problem  # residual: open stops, vehicles from where they are now
    sequences: dict[str, list[str]]  # remaining sequence per kept vehicle (pinned first)
    orphans: list[str]  # open stops of broken (or out-of-shift) vehicles
    done: list[str]  # completed stops, and the one a vehicle is at (or broke down serving)
    completed: dict[str, tuple[Visit, ...]] = dataclasses.field(default_factory=dict)
    breaks_taken: dict[str, tuple[PlannedBreak, ...]] = dataclasses.field(default_factory=dict)
    pinned: dict[str, str] = dataclasses.field(default_factory=dict)  # vehicle -> next stop
    # (a vehicle that is at a stop at t has that stop in ``done`` and nothing pinned)
    unrouted: list[str] = dataclasses.field(default_factory=list)  # open, in no previous route
    departed: frozenset[str] = frozenset()  # vehicles driving at t: left their start before t


def freeze_at(problem: Problem, plan: Solution, t: int,
              broken: str | Collection[str] | None = None,
              tracked: Tracked | None = None) -> Frozen:
    """The residual problem at time ``t`` (see the module docstring).

    Without ``tracked`` (no tracking data for the plan) a visit is done when its planned
    departure is <= ``t``; so is the visit a vehicle has reached by ``t`` (for a broken
    vehicle: started serving), whose planned times stay as they were. With ``tracked`` the
    milestones decide instead: a route is done up to its last completed stop (a vehicle serves
    its stops in order), and the next one is the stop it is at when it has arrived there. A
    vehicle that has not reached a stop the plan had it at by ``t``, or is still at one it
    should have left, is late: it goes on from where it is at ``t``, not at the planned time.
    Each other working vehicle's next stop is pinned (``Vehicle.fixed_prefix``).

    ``problem`` may be a newer version than the one ``plan`` was made for: previous stops it no
    longer contains (cancelled) vanish from the open part, its new stops are ``unrouted``.
    Every vehicle of ``plan`` and every completed stop must be in ``problem``.
    """
    broken_ids = {broken} if isinstance(broken, str) else set(broken or ())
    by_id = {s.id: s for s in problem.stops}
    vehicles_by_id = {v.id: v for v in problem.vehicles}
    routes = {r.vehicle_id: r for r in plan.routes}
    unknown = sorted(routes.keys() - vehicles_by_id.keys())
    if unknown:
        raise ValueError(f"vehicles of the plan not in the problem: {unknown}")
    done: list[str] = []
    orphans: list[str] = []
    sequences: dict[str, list[str]] = {}
    completed: dict[str, tuple[Visit, ...]] = {}
    taken: dict[str, tuple[PlannedBreak, ...]] = {}
    pinned: dict[str, str] = {}
    kept: list[Vehicle] = []
    for v in problem.vehicles:
        r = routes.get(v.id)
        visits = list(r.visits) if r else []
        is_broken = v.id in broken_ids
        n = 0
        if tracked is None:
            while n < len(visits) and visits[n].departure <= t:
                n += 1
        else:
            n = max((i + 1 for i, x in enumerate(visits) if x.stop_id in tracked.completed),
                    default=0)
        missing = [x.stop_id for x in visits[:n] if x.stop_id not in by_id]
        if missing:
            raise ValueError(f"completed stops not in the problem: {missing}")
        # The stop a vehicle is at: a broken one finishes serving it, a working one that has
        # arrived serves it as planned. Both are history, unless it was cancelled meanwhile.
        at_stop = n < len(visits) and visits[n].stop_id in by_id and (
            visits[n].stop_id in tracked.arrived if tracked is not None
            else (visits[n].start if is_broken else visits[n].arrival) <= t)
        n += at_stop
        finished = visits[:n]
        rest = [x.stop_id for x in visits[n:] if x.stop_id in by_id]  # cancelled ones vanish
        done += [x.stop_id for x in finished]
        if finished:
            completed[v.id] = tuple(finished)
        if is_broken:
            orphans += rest
            continue
        started = r is not None and bool(r.visits) and (bool(finished) or r.start_time <= t)
        if finished:
            loc, free_at = by_id[finished[-1].stop_id].location, finished[-1].departure
            if not rest:
                free_at = max(t, free_at)
        elif started:
            assert r is not None
            loc, free_at = v.start, r.start_time  # on its way to the first stop
        else:
            loc, free_at = v.start, max(t, v.shift.start)
        if tracked is not None and rest:
            upcoming = next(x for x in visits[n:] if x.stop_id in by_id)
            if at_stop or upcoming.arrival <= t:  # late by the milestones
                free_at = max(free_at, t)
        if r is not None and r.visits and n == len(visits):  # day done: back at (towards) the end
            loc = v.end if v.end is not None else loc
            free_at = max(t, r.end_time)
        if free_at > v.shift.end:
            orphans += rest
            continue
        # Breaks already taken are history; the residual plans the others (if still possible).
        past = tuple(b for b in (r.breaks if r else ()) if b.start < free_at)
        if past:
            taken[v.id] = past
        left = sorted(v.breaks, key=lambda b: b.window.start)[len(past):]
        kept.append(dataclasses.replace(
            v, start=loc, shift=TimeWindow(free_at, v.shift.end),
            fixed_prefix=() if at_stop else tuple(rest[:1]),
            breaks=tuple(b for b in left if b.latest_start >= free_at),
            # Limits apply to the whole day; the remaining part gets what is left of them.
            max_distance_m=None if v.max_distance_m is None else v.max_distance_m - sum(
                x.distance_from_prev for x in finished),
            max_duration_s=v.max_duration_s if v.max_duration_s is None or not started
            else v.max_duration_s - (free_at - r.start_time),  # type: ignore[union-attr]
        ))
        if rest:
            sequences[v.id] = rest
        if rest and not at_stop:
            pinned[v.id] = rest[0]
    done_set = set(done)
    stops, kept = _unpair_onboard(problem, done_set, sequences, kept)
    in_plan = {*orphans, *(s for seq in sequences.values() for s in seq)}
    residual = dataclasses.replace(
        problem, stops=stops, vehicles=tuple(kept), name=f"{problem.name}@{t}")
    unrouted = [s.id for s in stops if s.id not in in_plan]
    departed = frozenset(v.id for v in kept if v.shift.start < t)
    return Frozen(residual, sequences, orphans, done, completed, taken, pinned, unrouted,
                  departed)


def retime(fz: Frozen, solution: Solution) -> Solution:
    """Earliest-start schedules for the vehicles that were driving at ``t``.

    ``schedule_route`` delays a route's start to cut idle time, but a vehicle that has already
    left cannot leave later. A zero-length shift leaves the schedule no room for a delay (the
    checker still uses the real shift); routes with breaks are never delayed anyway.
    """
    vehicles = {v.id: v for v in fz.problem.vehicles}
    routes = []
    for r in solution.routes:
        v = vehicles.get(r.vehicle_id)
        if v is not None and v.id in fz.departed and not v.breaks and r.visits:
            pinned = dataclasses.replace(v, shift=TimeWindow(v.shift.start, v.shift.start))
            r = schedule_route(fz.problem, pinned, r.stop_ids)
        routes.append(r)
    return dataclasses.replace(solution, routes=tuple(routes))


def _unpair_onboard(problem: Problem, done: set[str], sequences: dict[str, list[str]],
                    vehicles: list[Vehicle]) -> tuple[tuple[Stop, ...], list[Vehicle]]:
    """Open stops; a stop whose partner is done becomes a plain stop, locked to its vehicle."""
    owner = {sid: vid for vid, seq in sequences.items() for sid in seq}
    stops: list[Stop] = []
    locks: dict[str, set[str]] = {}
    for s in problem.stops:
        if s.id in done:
            continue
        if s.pair is not None and s.pair in done:
            skills = s.skills
            if s.id in owner:  # on board a working vehicle: it stays there
                skills = skills | {ONBOARD_SKILL + owner[s.id]}
                locks.setdefault(owner[s.id], set()).add(ONBOARD_SKILL + owner[s.id])
            s = dataclasses.replace(s, kind=StopKind.VISIT, pair=None, skills=skills)
        stops.append(s)
    vehicles = [dataclasses.replace(v, skills=v.skills | locks[v.id]) if v.id in locks else v
                for v in vehicles]
    return tuple(stops), vehicles
