"""Mid-day replanning building blocks: pinned progress, fast route simulation, minimal churn.

Dispatchers and drivers lose trust in a plan that reshuffles every time something happens, so
a replan changes as little as it can. ``freeze_at`` turns a plan into the residual problem at
time ``t``: completed stops removed, each vehicle's next stop pinned as its first visit, the
vehicle starting where it last left a customer. On that residual problem the heuristics below
work on per-vehicle stop sequences and never move a stop they were not asked to move:

* ``reallocate`` - regret insertion of given stops (a pickup/delivery pair as one unit, pickup
  first, on one vehicle) into the existing sequences, relocation of only those stops, then
  ejection chains (move one or a few other stops) for what still fits nowhere;
* ``resequence`` - reorder one route (or-opt moves; same vehicle, same stops);
* ``shed`` - drop stops from a route that became infeasible until it fits again;
* ``relocate_if_pays`` - move a stop to another vehicle only when that saves more than a
  threshold;
* ``retime`` - schedule the routes of vehicles already driving at ``t`` without a delayed start.

``replan_after_breakdown`` combines them for the benchmark's breakdown scenario; the routing
service's ``services.routing.domain.replanning`` uses them per kind of change.

Load model in the residual problem: a delivery whose pickup is already done is on board, so it
becomes a plain stop (goods on board at the start, which is exactly the residual semantics) and
is locked to its vehicle with a private skill. Assumption: plain stops that move to a vehicle
already on the road (a broken vehicle's undelivered goods, a stop a replan moves) have their
goods available to it (hand-over or reload is outside this model).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from services.routing.solver.base import assemble
from services.routing.solver.feasibility import _check_route  # same package: the exact check
from services.routing.solver.interface import referee, solve
from services.routing.solver.model import (
    COST_SCALE,
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
class Budget:
    """A deadline (``time.perf_counter`` seconds) and an optional cancel flag."""

    deadline: float
    cancel: threading.Event | None = None

    def over(self) -> bool:
        return time.perf_counter() > self.deadline or bool(self.cancel and self.cancel.is_set())


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
              broken: str | Collection[str] | None = None) -> Frozen:
    """The residual problem at time ``t`` (see the module docstring).

    A visit is done when its departure is <= ``t``; so is the visit a vehicle has reached by
    ``t`` (for a broken vehicle: started serving), whose planned times stay as they were. Each
    other working vehicle's next stop is pinned (``Vehicle.fixed_prefix``).

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
        while n < len(visits) and visits[n].departure <= t:
            n += 1
        missing = [x.stop_id for x in visits[:n] if x.stop_id not in by_id]
        if missing:
            raise ValueError(f"completed stops not in the problem: {missing}")
        # The stop a vehicle is at: a broken one finishes serving it, a working one that has
        # arrived serves it as planned. Both are history, unless it was cancelled meanwhile.
        at_stop = n < len(visits) and visits[n].stop_id in by_id and (
            visits[n].start if is_broken else visits[n].arrival) <= t
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
        _check_route(self.problem, v, route, self.stop, found)
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


def units_of(sim: RouteSim, stop_ids: Sequence[str]) -> list[tuple[str, ...]]:
    """Group stops to insert: a pickup with its delivery is one unit, pickup first."""
    todo = set(stop_ids)
    out: list[tuple[str, ...]] = []
    for sid in stop_ids:
        s = sim.stop[sid]
        if s.kind is StopKind.PICKUP and s.pair in todo:
            out.append((sid, s.pair))
        elif not (s.kind is StopKind.DELIVERY and s.pair in todo):
            out.append((sid,))
    return out


def insert_units(sim: RouteSim, vehicles: list[Vehicle], seqs: dict[str, list[str]],
                 todo: Sequence[str], budget: Budget) -> list[str]:
    """Regret-2 insertion; returns the stops that fit nowhere (or were not reached in time).

    Best insertions are cached per (unit, vehicle) and only the changed vehicle's entries are
    recomputed after each insertion, so the cost is ~ units x vehicles, not units^2 x vehicles.
    """
    units = units_of(sim, todo)
    cache = {u: {v.id: sim.best_insertion(v, seqs.setdefault(v.id, []), u) for v in vehicles}
             for u in units}
    by_vid = {v.id: v for v in vehicles}
    while units and not budget.over():
        pick = None
        for u in units:
            opts = sorted((c[0], vid, c[1]) for vid, c in cache[u].items() if c is not None)
            if not opts:
                continue
            regret = (opts[1][0] if len(opts) > 1 else float("inf")) - opts[0][0]
            if pick is None or regret > pick[0]:
                pick = (regret, u, opts[0])
        if pick is None:
            break
        _, u, (_, vid, pos) = pick
        seqs[vid] = apply_insertion(seqs[vid], u, pos)
        units.remove(u)
        for other in units:
            cache[other][vid] = sim.best_insertion(by_vid[vid], seqs[vid], other)
    return [s for u in units for s in u]


def _relocate_placed(sim: RouteSim, vehicles: list[Vehicle], seqs: dict[str, list[str]],
                     placed: Sequence[str], budget: Budget) -> None:
    """Move each placed single stop to its cheapest feasible spot anywhere; others stay put."""
    where = {sid: vid for vid, seq in seqs.items() for sid in seq}
    by_vid = {v.id: v for v in vehicles}
    singles = [s for s in placed if sim.stop[s].pair is None]
    improved = True
    while improved and not budget.over():
        improved = False
        for sid in singles:
            vid = where[sid]
            seq = seqs[vid]
            i = seq.index(sid)
            gain = sim.delta(by_vid[vid], [*seq[:i], *seq[i + 1:]], i, sid)
            seq.pop(i)
            best = (gain, vid, i)
            for w in vehicles:
                c = sim.best_insertion(w, seqs.setdefault(w.id, []), sid)
                if c is not None and c[0] < best[0] - 1e-9:
                    best = (c[0], w.id, c[1][0])
            seqs[best[1]].insert(best[2], sid)
            where[sid] = best[1]
            improved |= best[1] != vid or best[2] != i


def _eject_insert(sim: RouteSim, vehicles: list[Vehicle], seqs: dict[str, list[str]], sid: str,
                  owner: dict[str, str], budget: Budget) -> bool:
    """Make room for single stop ``sid`` by moving ONE other stop to another vehicle (churn 1)."""
    x = sim.stop[sid].location
    near = sorted(
        (v for v in vehicles if seqs.get(v.id)),
        key=lambda v: min(sim.dist[sim.stop[o].location][x] for o in seqs[v.id]),
    )[:8]
    best = None
    for w in near:
        seq = seqs[w.id]
        for j in range(len(w.fixed_prefix), len(seq)):
            if budget.over():
                break
            victim = seq[j]
            if owner.get(victim) not in (None, w.id) or sim.stop[victim].pair is not None:
                continue  # already moved once, or half of a pair: leave it
            rest = seq[:j] + seq[j + 1:]
            ins = sim.best_insertion(w, rest, sid)
            if ins is None:
                continue
            for u in vehicles:
                if u.id == w.id:
                    continue
                back = sim.best_insertion(u, seqs.setdefault(u.id, []), victim)
                if back is not None:
                    cost = ins[0] + back[0] - sim.delta(w, rest, j, victim)
                    if best is None or cost < best[0]:
                        best = (cost, w.id, rest, ins[1][0], u.id, back[1][0], victim)
    if best is None:
        return False
    _, wid, rest, pos, uid, upos, victim = best
    seqs[wid] = [*rest[:pos], sid, *rest[pos:]]
    seqs[uid].insert(upos, victim)
    return True


def _eject_many(sim: RouteSim, vehicles: list[Vehicle], seqs: dict[str, list[str]], sid: str,
                owner: dict[str, str], budget: Budget, max_out: int = 5) -> int | None:
    """Serve single stop ``sid`` on some vehicle by moving up to ``max_out`` of its stops.

    For a few candidate vehicles and insertion points, greedily remove the stop whose removal
    most reduces the route's infeasibility until it is feasible, then regret-insert the removed
    stops into the other vehicles. Keeps the option that moves the fewest stops (then cheapest).
    Returns the number of moved stops, or None when nothing works.
    """
    x = sim.stop[sid]
    cands = [v for v in vehicles if x.skills <= v.skills and seqs.get(v.id)]
    cands.sort(key=lambda v: min(sim.dist[sim.stop[o].location][x.location] for o in seqs[v.id]))
    best = None
    for w in cands[:10]:
        seq, lo = seqs[w.id], len(w.fixed_prefix)
        positions = sorted(range(lo, len(seq) + 1), key=lambda i: sim.delta(w, seq, i, sid))[:3]
        for pos in dict.fromkeys([lo, *positions]):
            if budget.over():
                break
            trial = [*seq[:pos], sid, *seq[pos:]]
            out: list[str] = []
            while (exc := sim.excess(w, trial)) > 0 and len(out) < max_out:
                removable = [j for j in range(lo, len(trial))
                             if trial[j] != sid and sim.stop[trial[j]].pair is None]
                if not removable:
                    break
                j = min(removable, key=lambda j: sim.excess(w, trial[:j] + trial[j + 1:]))
                if sim.excess(w, trial[:j] + trial[j + 1:]) >= exc:
                    break
                out.append(trial.pop(j))
            if not sim.feasible(w, trial) or not out:
                continue
            # Ejected stops may also go back into w at a later, feasible position.
            others = {k: list(v) for k, v in seqs.items()}
            others[w.id] = trial
            if insert_units(sim, vehicles, others, out, budget):
                continue  # some ejected stop fits nowhere
            where = {o: k for k, v in others.items() for o in v}
            moved = sum(1 for o in out if owner.get(o) not in (None, where[o]))
            cost = sum(sim.delta(w, trial, 0, o) for o in out)  # tie-break only
            if best is None or (moved, cost) < best[:2]:
                best = (moved, cost, others)
        if best is not None and best[0] <= 1:
            break
    if best is None:
        return None
    moved, _, others = best
    seqs.update(others)
    return moved


def reallocate(sim: RouteSim, vehicles: list[Vehicle], seqs: dict[str, list[str]],
               todo: Sequence[str], owner: dict[str, str], budget: Budget, *,
               eject_budget: Budget | None = None) -> tuple[list[str], str]:
    """Place ``todo`` with minimal churn; returns (stops left over, method).

    Regret insertion, then relocation of only the placed stops; with ``eject_budget`` the
    single stops that fit nowhere may push one (else a few) other stops to other vehicles.
    """
    left = insert_units(sim, vehicles, seqs, todo, budget)
    _relocate_placed(sim, vehicles, seqs, [s for s in todo if s not in left], budget)
    method = "regret-insertion"
    if eject_budget is not None:
        for sid in [s for s in left if sim.stop[s].pair is None]:
            if _eject_insert(sim, vehicles, seqs, sid, owner, eject_budget) or (
                _eject_many(sim, vehicles, seqs, sid, owner, eject_budget) is not None
            ):
                left.remove(sid)
                method = "regret-insertion+ejection"
    return left, method


def resequence(sim: RouteSim, v: Vehicle, seq: list[str], budget: Budget) -> list[str]:
    """Reorder a route by or-opt moves (segments of 1-3 stops, also reversed) after the pins.

    Minimises (infeasibility, cost): an infeasible route is first made feasible if any order
    allows it, then cheaper. Same vehicle, same stops.
    """
    lo = min(len(v.fixed_prefix), len(seq))
    best, key = list(seq), sim.score(v, seq)
    improved = True
    while improved and not budget.over():
        improved = False
        for k in (1, 2, 3):
            for i in range(lo, len(best) - k + 1):
                seg, rest = best[i:i + k], best[:i] + best[i + k:]
                for j in range(lo, len(rest) + 1):
                    for piece in ((seg, seg[::-1]) if k > 1 else (seg,)):
                        cand = rest[:j] + piece + rest[j:]
                        if cand == best:
                            continue
                        ck = sim.score(v, cand)
                        if ck[0] < key[0] or (ck[0] == key[0] and ck[1] < key[1] - 1e-6):
                            best, key, improved = cand, ck, True
                            break
                    if improved:
                        break
                if improved or budget.over():
                    break
            if improved:
                break
    return best


def shed(sim: RouteSim, v: Vehicle, seq: list[str]) -> tuple[list[str], list[str]]:
    """Remove stops (a pair together) until the route is feasible; returns (route, removed).

    Each step removes the stop whose removal helps most; pinned stops are never removed, so a
    route that is late at its pinned stop stays infeasible (the referee will say so).
    """
    seq, removed = list(seq), []
    lo = min(len(v.fixed_prefix), len(seq))
    while not sim.feasible(v, seq):
        options = []
        for sid in seq[lo:]:
            pair = sim.stop[sid].pair
            if pair in seq[:lo]:
                continue
            gone = {sid, pair} if pair in seq else {sid}
            trial = [s for s in seq if s not in gone]
            options.append((sim.score(v, trial), [s for s in seq if s in gone], trial))
        if not options:
            break
        score, out, trial = min(options, key=lambda o: o[0])
        if score[0] >= sim.excess(v, seq) and score[0] > 0:
            break  # removing stops does not help (e.g. the pinned stop is late)
        seq = trial
        removed += out
    return seq, removed


def relocate_if_pays(sim: RouteSim, vehicles: list[Vehicle], seqs: dict[str, list[str]],
                     threshold: float, budget: Budget, near: int = 5) -> int:
    """Move single, unpinned stops to another vehicle while one move saves > ``threshold``.

    ``threshold`` is in internal cost units. Only the ``near`` routes closest to a stop are
    tried. Returns the number of moves made.
    """
    by_vid = {v.id: v for v in vehicles}
    moves = 0
    improved = True
    while improved and not budget.over():
        improved = False
        for vid, seq in list(seqs.items()):
            v = by_vid[vid]
            for sid in list(seq[len(v.fixed_prefix):]):
                if budget.over():
                    return moves
                if sim.stop[sid].pair is not None:
                    continue
                cur = seqs[vid]
                without = [s for s in cur if s != sid]
                saving = sim.cost(v, cur) - sim.cost(v, without)
                x = sim.stop[sid].location
                others = sorted((w for w in vehicles if w.id != vid and seqs.get(w.id)),
                                key=lambda w: min(sim.dist[sim.stop[o].location][x]
                                                  for o in seqs[w.id]))[:near]
                best = None
                for w in others:
                    ins = sim.best_insertion(w, seqs[w.id], sid)
                    if ins is None:
                        continue
                    new = apply_insertion(seqs[w.id], (sid,), ins[1])
                    gain = saving - (sim.cost(w, new) - sim.cost(w, seqs[w.id]))
                    if gain > threshold and (best is None or gain > best[0]):
                        best = (gain, w.id, new)
                if best is not None:
                    seqs[vid], seqs[best[1]] = without, best[2]
                    moves += 1
                    improved = True
    return moves


@dataclass(frozen=True)
class ReplanResult:
    problem: Problem  # the residual problem that was solved
    solution: Solution  # refereed
    orphans: int
    moved: int  # other vehicles' stops now on a different vehicle
    others_remaining: int
    seconds: float
    method: str

    @property
    def moved_share(self) -> float:
        return self.moved / self.others_remaining if self.others_remaining else 0.0


def replan_after_breakdown(
    problem: Problem, plan: Solution, broken: str, t: int, time_limit: float = 10.0
) -> ReplanResult:
    """Re-home the broken vehicle's open stops; no other stop changes vehicle unless needed."""
    t0 = time.perf_counter()
    fz = freeze_at(problem, plan, t, broken)
    rp = fz.problem
    sim = RouteSim(rp, fz.departed)
    seqs = {vid: list(seq) for vid, seq in fz.sequences.items()}
    owner = {sid: vid for vid, seq in fz.sequences.items() for sid in seq}
    # Insertion may use half the time, ejection up to 80 %, then the fallback solver.
    _, method = reallocate(sim, list(rp.vehicles), seqs, fz.orphans, owner,
                           Budget(t0 + time_limit * 0.5),
                           eject_budget=Budget(t0 + time_limit * 0.8))
    sol = referee(rp, retime(fz, assemble(rp, seqs, f"replan-{method}",
                                          time.perf_counter() - t0)))
    if not sol.feasible:
        # Should not happen (every move was simulated); the full solver is the safety net.
        remaining = max(1.0, time_limit - (time.perf_counter() - t0))
        alt = referee(rp, retime(fz, solve(rp, remaining, warm_start=seqs)))
        if alt.feasible:
            sol, method = alt, "solver"
    moved = sum(
        1 for r in sol.routes for sid in r.stop_ids if sid in owner and owner[sid] != r.vehicle_id
    ) + sum(1 for u in sol.unassigned if u.stop_id in owner)
    sol = dataclasses.replace(sol, wall_time_s=time.perf_counter() - t0)
    return ReplanResult(rp, sol, len(fz.orphans), moved, len(owner),
                        time.perf_counter() - t0, method)
