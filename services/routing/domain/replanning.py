"""Live replanning: keep the day's plan right as things change, with as little churn as possible.

:func:`replan` takes the full-day problem as it is now, the active plan and what changed, and
returns a full-day plan: what is done stays exactly as it was, the rest is replanned.

What stays fixed ("now" comes from the plan). A stop is *completed* when the tracking service
recorded a DEPARTED, PICKED_UP or DELIVERED milestone for it (``tracked``, see
``solver.freeze``); only for a plan without any tracking data, when its planned departure is
<= ``now``. Each working vehicle's first open stop is its *next* stop. Completed stops keep
vehicle, position and times; so does a next stop the vehicle has reached by ``now`` (in
progress: the new traffic cannot change a trip already made); a next stop it is still driving
to keeps vehicle and position and is re-timed. A broken vehicle keeps its completed stops and
the one it is serving at ``now``; its other stops are re-allocated.

How each kind of change is handled (the previous plan is always the starting point):

* CANCELLATION - the stops are removed; no other stop changes vehicle or order.
* BREAKDOWN - the broken vehicle's open stops are regret-inserted into the other routes, then
  moved between those routes only if cheaper; when a stop fits nowhere, one (else a few) other
  stops may be pushed to another vehicle.
* URGENT_INSERTION - the new shipments are inserted the same way (a pair on one vehicle, pickup
  first); other routes are not reordered.
* TRAFFIC - routes with a leg that now takes a different time than planned are reordered under
  the new matrix (same vehicle, same stops); a stop that no longer fits its route is inserted
  elsewhere the same way, or left unassigned with its reason.
* DELAY - a stop is at risk of being late (tracking's LATE_RISK): the late vehicle goes on from
  where the milestones say it is at ``now``; a route that no longer fits is reordered, then
  relieved of the stops that do not fit, which are inserted elsewhere as in TRAFFIC.
* MANUAL_REPLAN - every route is reordered, then a stop moves to another vehicle only when the
  move saves more than ``move_threshold`` (currency units of the vehicles' cost model per moved
  stop, default :data:`MOVE_THRESHOLD`); a warm-started solve gets the remaining time and is
  kept only when its saving over the heuristic plan pays for each extra stop it moves.

In every kind, routes the new problem makes infeasible (e.g. an order updated) are first
reordered, then relieved of the stops that no longer fit; open stops that were in no route
(previously unassigned, or new) are inserted too. Except after a cancellation, when stops that
could be served are still left over, a warm-started solve gets the remaining time and is kept
only if it serves more. Stops that end up in no route are in ``solution.unassigned`` with the
diagnosed reason: nothing is silently lost. The remainder is always refereed by the
feasibility checker; the full-day plan is not, because history (a broken vehicle that stops
mid-route, goods handed over) need not satisfy today's problem.

Assumption (see ``solver.freeze``): stops that move to another vehicle after it has left its
depot - a broken vehicle's goods, a new plain delivery - are available to it (hand-over or
reload is outside this model).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

from services.routing.domain.autonomy import Domain, plan_cost
from services.routing.domain.ids import shipment_of
from services.routing.solver.base import Progress, ProgressFn, assemble
from services.routing.solver.freeze import Frozen, Tracked, freeze_at, retime
from services.routing.solver.heuristics import (
    Budget,
    reallocate,
    relocate_if_pays,
    resequence,
    shed,
)
from services.routing.solver.interface import referee, solve
from services.routing.solver.model import (
    COST_SCALE,
    Problem,
    Route,
    Solution,
    UnassignedReason,
    Vehicle,
)
from services.routing.solver.route_sim import RouteSim

#: MANUAL_REPLAN: a stop changes vehicle only when that saves more than this (currency units,
#: the vehicles' cost model) per moved stop. One unit is about a kilometre at typical rates:
#: enough that a plan is not reshuffled for rounding noise, small against a real detour.
MOVE_THRESHOLD = 1.0

_METHOD = {
    Domain.CANCELLATION: "removal",
    Domain.BREAKDOWN: "regret-insertion",
    Domain.URGENT_INSERTION: "regret-insertion",
    Domain.TRAFFIC: "resequence",
    Domain.MANUAL_REPLAN: "resequence+relocate",
    Domain.DELAY: "resequence",
}


@dataclass(frozen=True)
class Change:
    """What happened since the previous plan (the problem already reflects it)."""

    kind: Domain
    cancelled: frozenset[str] = frozenset()  # shipment keys that are gone (cancelled orders)
    broken: frozenset[str] = frozenset()  # vehicle ids that broke down (or went off duty)
    added: frozenset[str] = frozenset()  # shipment keys new in `problem` (urgent/late orders)
    reason: str = ""


@dataclass(frozen=True)
class ReplanOutcome:
    solution: Solution  # FULL-DAY plan: completed/fixed visits as they were + new remainder
    fixed: frozenset[str]  # stop ids that were fixed (completed, in progress, next stop)
    feasible: bool  # the remainder passed the feasibility checker
    violations: tuple[str, ...]
    method: str  # e.g. "removal", "regret-insertion", "resequence", "warm-solve"
    moved: int  # stops of OTHER vehicles that changed vehicle (or lost their place)
    seconds: float
    # The remainder as planned and refereed, on the residual problem it was planned on (what
    # the feasibility verdict is about; the benchmark reports it), with the open stops of the
    # working vehicles before the replan and the broken vehicles' stops that needed a new one.
    residual: Problem
    remainder: Solution
    open_stops: int
    orphans: int

    @property
    def moved_share(self) -> float:
        """`moved` as a share of the working vehicles' open stops."""
        return self.moved / self.open_stops if self.open_stops else 0.0


def replan(
    problem: Problem,
    previous: Solution,
    now: int,
    change: Change,
    time_limit: float,
    *,
    cancel: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    move_threshold: float = MOVE_THRESHOLD,
    tracked: Tracked | None = None,
) -> ReplanOutcome:
    """Replan the rest of the day from ``now`` (see the module docstring).

    ``problem`` is authoritative: stops it lacks are gone, its new stops get planned, its
    matrix is the current traffic. ``change`` says what triggered the replan, which picks the
    method. Runs in the caller's thread within ``time_limit`` seconds; ``cancel`` stops early
    with the best plan so far; ``on_progress`` hears the heuristic's result and the solver's.
    ``tracked``: the milestones recorded for the plan's stops (None: none are, the planned
    times decide what is completed).
    """
    if change.kind not in _METHOD:
        raise ValueError(f"{change.kind.value} is planned with solve(), not replanned")
    if move_threshold < 0:
        raise ValueError("move_threshold must be >= 0")
    t0 = time.perf_counter()
    kind = change.kind
    fz = freeze_at(problem, previous, now, broken=change.broken, tracked=tracked)
    rp = fz.problem
    sim = RouteSim(rp, fz.departed)
    vehicles = list(rp.vehicles)
    seqs = {vid: list(seq) for vid, seq in fz.sequences.items()}
    owner = {sid: vid for vid, seq in fz.sequences.items() for sid in seq}
    manual = kind is Domain.MANUAL_REPLAN
    # Placing every stop comes first (up to 80 % of the time); a manual replan's optional
    # improvements stop at 30 %, leaving the rest to the warm-started solver.
    essential = Budget(t0 + time_limit * 0.8, cancel)
    notes = _notes(problem, change, fz.done)

    reorder = _slowed(fz, previous, problem) if kind is Domain.TRAFFIC else set()
    todo = [*fz.orphans, *_repair(sim, vehicles, seqs, reorder, essential, notes), *fz.unrouted]
    may_eject = kind is not Domain.CANCELLATION
    _, how = reallocate(sim, vehicles, seqs, todo, owner, essential,
                        eject_budget=essential if may_eject else None)
    method = how if kind in (Domain.BREAKDOWN, Domain.URGENT_INSERTION) else _METHOD[kind]
    if manual:
        improve = Budget(t0 + time_limit * 0.3, cancel)
        relocate_if_pays(sim, vehicles, seqs, move_threshold * COST_SCALE, improve)
        for v in vehicles:
            if seqs.get(v.id):
                seqs[v.id] = resequence(sim, v, seqs[v.id], improve)
    sol = referee(rp, retime(fz, assemble(rp, seqs, f"replan/{method}",
                                          time.perf_counter() - t0)))
    if on_progress is not None:
        on_progress(Progress(sol.solver, time.perf_counter() - t0, _objective(rp, sol)))

    left_servable = any(u.reason is UnassignedReason.FLEET_EXHAUSTED for u in sol.unassigned)
    # OR-Tools looks at its time limit between search steps, and a step can take ~2 ms per
    # stop (measured: 0.9 s over on a 500-stop remainder), so it gets what is left minus that.
    remaining = time_limit * 0.95 - (time.perf_counter() - t0)
    remaining -= min(remaining / 3, len(rp.stops) / 500)
    if (not sol.feasible or manual or (may_eject and left_servable)) and remaining > 0.2 and not (
        cancel is not None and cancel.is_set()
    ):
        alt = referee(rp, retime(fz, solve(rp, remaining, cancel=cancel,
                                           on_progress=on_progress, warm_start=seqs)))
        if _prefer(alt, sol, owner, move_threshold):
            sol, method = alt, "warm-solve"
    if cancel is not None and cancel.is_set():
        notes.append("cancelled: best plan so far")

    moved = sum(
        1 for r in sol.routes for sid in r.stop_ids if sid in owner and owner[sid] != r.vehicle_id
    ) + sum(1 for u in sol.unassigned if u.stop_id in owner)
    full = _full_day(problem, previous, fz, sol, change.broken)
    seconds = time.perf_counter() - t0
    full = dataclasses.replace(
        full, solver=sol.solver, wall_time_s=seconds, notes=(*sol.notes, *notes))
    fixed = frozenset(fz.done) | frozenset(fz.pinned.values())
    return ReplanOutcome(full, fixed, sol.feasible, sol.violations, method, moved, seconds,
                         rp, sol, len(owner), len(fz.orphans))


def _notes(problem: Problem, change: Change, done: list[str]) -> list[str]:
    """The reason, and where ``change`` and ``problem`` disagree (the problem wins)."""
    keys = {shipment_of(s.id) for s in problem.stops}
    history = set(done)
    open_keys = {shipment_of(s.id) for s in problem.stops if s.id not in history}
    vehicles = {v.id for v in problem.vehicles}
    return [
        *([change.reason] if change.reason else []),
        *(f"added shipment {k} is not in the problem" for k in sorted(change.added - keys)),
        *(f"cancelled shipment {k} is still in the problem: planned"
          for k in sorted(change.cancelled & open_keys)),
        *(f"broken vehicle {v} is not in the problem" for v in sorted(change.broken - vehicles)),
    ]


def _repair(sim: RouteSim, vehicles: list[Vehicle], seqs: dict[str, list[str]],
            reorder: set[str], budget: Budget, notes: list[str]) -> list[str]:
    """Reorder the ``reorder`` routes and every infeasible one; shed what still does not fit.
    Returns the shed stops (to be placed elsewhere)."""
    out: list[str] = []
    for v in vehicles:
        seq = seqs.get(v.id)
        if not seq:
            continue
        if v.id in reorder or not sim.feasible(v, seq):
            seq = resequence(sim, v, seq, budget)
        if not sim.feasible(v, seq):
            seq, shed_now = shed(sim, v, seq)
            out += shed_now
            notes += [f"{sid} no longer fits {v.id}" for sid in shed_now]
        seqs[v.id] = seq
    return out


def _objective(problem: Problem, sol: Solution) -> float:
    """Route cost plus drop penalties, in currency units (what solver progress reports)."""
    by_id = {s.id: s for s in problem.stops}
    return sol.cost + sum(by_id[u.stop_id].drop_penalty for u in sol.unassigned) / COST_SCALE


def _prefer(alt: Solution, sol: Solution, owner: dict[str, str], threshold: float) -> bool:
    """Keep the solver's plan instead of the heuristic's? Feasible first, then stops served,
    then a saving that pays ``threshold`` for every extra stop it moves."""
    if not alt.feasible:
        return False
    if not sol.feasible or len(alt.unassigned) < len(sol.unassigned):
        return True
    if len(alt.unassigned) > len(sol.unassigned):
        return False

    def moved(s: Solution) -> int:
        return sum(1 for r in s.routes for sid in r.stop_ids if owner.get(sid, r.vehicle_id)
                   != r.vehicle_id)

    saving = sol.cost - alt.cost
    return saving > 1e-9 and saving >= threshold * max(0, moved(alt) - moved(sol))


def _slowed(fz: Frozen, previous: Solution, problem: Problem) -> set[str]:
    """Vehicles with an open leg whose travel time in ``problem``'s matrix differs from the
    previous plan's (arrival minus departure, minus breaks taken on the leg)."""
    loc = {s.id: s.location for s in problem.stops}
    vehicles = {v.id: v for v in problem.vehicles}
    m = problem.matrix
    out = set()
    for r in previous.routes:
        if r.vehicle_id not in fz.sequences:
            continue
        v = vehicles[r.vehicle_id]
        n_done = len(fz.completed.get(v.id, ()))
        prev_loc, dep = v.start, r.start_time
        if n_done:
            prev_loc, dep = loc[r.visits[n_done - 1].stop_id], r.visits[n_done - 1].departure
        legs = [(loc.get(x.stop_id), x.arrival, x.departure) for x in r.visits[n_done:]]
        if v.end is not None:
            legs.append((v.end, r.end_time, r.end_time))
        for here, arrival, departure in legs:
            paused = sum(b.duration_s for b in r.breaks if dep <= b.start < arrival)
            # A cancelled stop (no location now) leaves legs the plan cannot tell about:
            # reorder, which only changes the route when that pays.
            if here is None or arrival - dep - paused != m.time(prev_loc, here):
                out.add(v.id)
                break
            prev_loc, dep = here, departure
    return out


def _full_day(problem: Problem, previous: Solution, fz: Frozen, residual: Solution,
              broken: frozenset[str]) -> Solution:
    """Completed visits (unchanged) + the replanned remainder, one route per vehicle."""
    loc = {s.id: s.location for s in problem.stops}
    rest = {r.vehicle_id: r for r in residual.routes}
    began = {r.vehicle_id: r.start_time for r in previous.routes}
    starts = {v.id: v.start for v in fz.problem.vehicles}
    m = problem.matrix
    routes: list[Route] = []
    for v in problem.vehicles:
        done = fz.completed.get(v.id, ())
        tail = rest.get(v.id)
        if not done:
            if tail is not None:
                routes.append(tail)
            continue
        taken = fz.breaks_taken.get(v.id, ())
        start = began[v.id]
        dist = sum(x.distance_from_prev for x in done)
        last = loc[done[-1].stop_id]
        if tail is not None and tail.visits:
            # A vehicle whose day was done restarts from its end depot: count the way there.
            dist += m.dist(last, starts[v.id]) + tail.distance
            routes.append(Route(v.id, done + tail.visits, start, tail.end_time, dist,
                                taken + tail.breaks))
        elif v.id in broken or v.end is None:
            routes.append(Route(v.id, done, start, done[-1].departure, dist, taken))
        else:
            back = done[-1].departure + m.time(last, v.end)
            routes.append(Route(v.id, done, start, back, dist + m.dist(last, v.end), taken))
    plan = Solution(tuple(routes), residual.unassigned, feasible=residual.feasible,
                    violations=residual.violations)
    return dataclasses.replace(plan, cost=plan_cost(plan, problem.vehicles))
