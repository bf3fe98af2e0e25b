"""Mid-day replanning with pinned progress and minimal churn.

Dispatchers and drivers lose trust in a plan that reshuffles every time something happens, so
a replan after a breakdown must re-home the broken vehicle's stops while leaving everyone else's
day almost as it was. ``freeze_at`` turns a plan into the residual problem at time ``t``
(completed stops removed, each vehicle's next stop pinned as its first visit, the vehicle
starting from its last position when it left it). ``replan_after_breakdown`` then inserts the
orphaned stops into the other vehicles' existing sequences by regret insertion and improves by
relocating only the orphans, so no other stop changes vehicle. Only when some orphan fits nowhere
does it call the full solver, warm-started from that plan, and reports the churn it caused.

Assumption: the broken vehicle's undelivered goods are available to the receiving vehicles
(hand-over or reload is outside this model); capacity is checked against each receiver's own
remaining load.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from services.routing.solver.base import assemble
from services.routing.solver.interface import referee, solve
from services.routing.solver.model import Problem, Solution, TimeWindow, Vehicle


@dataclass(frozen=True)
class Frozen:
    problem: Problem
    sequences: dict[str, list[str]]  # remaining sequence per kept vehicle (pinned first)
    orphans: list[str]
    done: list[str]


def freeze_at(problem: Problem, plan: Solution, t: int, broken: str | None = None) -> Frozen:
    """The residual problem at time ``t`` (see module docstring)."""
    routes = {r.vehicle_id: r for r in plan.routes}
    done: list[str] = []
    orphans: list[str] = []
    sequences: dict[str, list[str]] = {}
    vehicles: list[Vehicle] = []
    by_id = {s.id: s for s in problem.stops}
    for v in problem.vehicles:
        r = routes.get(v.id)
        visits = list(r.visits) if r else []
        # A broken vehicle already serving a customer at t completes that hand-over.
        is_done = (lambda x: x.start <= t) if v.id == broken else (lambda x: x.departure <= t)
        finished = [x for x in visits if is_done(x)]
        rest = [x.stop_id for x in visits if not is_done(x)]
        done += [x.stop_id for x in finished]
        if v.id == broken:
            orphans += rest
            continue
        if finished:
            loc, free_at = by_id[finished[-1].stop_id].location, finished[-1].departure
        elif r is not None and r.visits:
            loc, free_at = v.start, r.start_time
        else:
            loc, free_at = v.start, max(t, v.shift.start)
        if r is not None and not rest and r.visits:  # day done: back at (or towards) the end
            loc = v.end if v.end is not None else loc
            free_at = max(t, r.end_time)
        if free_at > v.shift.end:
            continue
        vehicles.append(dataclasses.replace(
            v, start=loc, shift=TimeWindow(free_at, v.shift.end),
            fixed_prefix=tuple(rest[:1]),
            # Limits apply to the whole day; the remaining part gets what is left of them.
            max_distance_m=None if v.max_distance_m is None else v.max_distance_m - sum(
                x.distance_from_prev for x in finished),
            max_duration_s=v.max_duration_s if v.max_duration_s is None or r is None
            or not r.visits else v.max_duration_s - (free_at - r.start_time),
        ))
        if rest:
            sequences[v.id] = rest
    done_set = set(done)
    residual = dataclasses.replace(
        problem,
        stops=tuple(s for s in problem.stops if s.id not in done_set),
        vehicles=tuple(vehicles),
        name=f"{problem.name}@{t}",
    )
    return Frozen(residual, sequences, orphans, done)


class _Sim:
    """Fast route evaluation on plain lists (hot loop of the insertion)."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        self.dist = problem.matrix.distance.tolist()
        self.time = problem.matrix.duration.tolist()
        self.stop = {s.id: s for s in problem.stops}

    def feasible(self, v: Vehicle, seq: list[str]) -> bool:
        d, tt = self.dist, self.time
        prev, t, dist = v.start, v.shift.start, 0
        load = [0] * len(v.capacity)
        for sid in seq:
            s = self.stop[sid]
            for k, q in enumerate(s.demand):
                load[k] += q
            arr = t + tt[prev][s.location]
            dist += d[prev][s.location]
            if s.windows:
                start = next((max(arr, w.start) for w in s.windows if arr <= w.end), None)
                if start is None:
                    return False
            else:
                start = arr
            prev, t = s.location, start + s.service_s
        if v.end is not None:
            t += tt[prev][v.end]
            dist += d[prev][v.end]
        if t > v.shift.end or any(q > c for q, c in zip(load, v.capacity, strict=False)):
            return False
        if v.max_distance_m is not None and dist > v.max_distance_m:
            return False
        return v.max_duration_s is None or t - v.shift.start <= v.max_duration_s

    def excess(self, v: Vehicle, seq: list[str]) -> int:
        """How infeasible a sequence is: lateness + shift overrun + overload (0 = feasible)."""
        d, tt = self.dist, self.time
        prev, t, dist, late = v.start, v.shift.start, 0, 0
        load = [0] * len(v.capacity)
        for sid in seq:
            s = self.stop[sid]
            for k, q in enumerate(s.demand):
                load[k] += q
            arr = t + tt[prev][s.location]
            dist += d[prev][s.location]
            start = next((max(arr, w.start) for w in s.windows if arr <= w.end), None)
            if start is None:  # no window (any time) or late: count lateness, serve on arrival
                start = arr
                late += arr - max(w.end for w in s.windows) if s.windows else 0
            prev, t = s.location, start + s.service_s
        if v.end is not None:
            t += tt[prev][v.end]
            dist += d[prev][v.end]
        late += max(0, t - v.shift.end)
        late += sum(max(0, q - c) for q, c in zip(load, v.capacity, strict=False)) * 1000
        if v.max_distance_m is not None:
            late += max(0, dist - v.max_distance_m)
        if v.max_duration_s is not None:
            late += max(0, t - v.shift.start - v.max_duration_s)
        return late

    def delta(self, v: Vehicle, seq: list[str], pos: int, sid: str) -> float:
        a = v.start if pos == 0 else self.stop[seq[pos - 1]].location
        b = (v.end if pos == len(seq) else self.stop[seq[pos]].location)
        x = self.stop[sid].location
        if b is None:  # open route, appended at the end
            return self.dist[a][x] * v.cost_per_km
        return (self.dist[a][x] + self.dist[x][b] - self.dist[a][b]) * v.cost_per_km

    def best_insertion(self, v: Vehicle, seq: list[str], sid: str) -> tuple[float, int] | None:
        if not v.can_serve(self.stop[sid]):
            return None
        lo = len(v.fixed_prefix)
        cands = sorted((self.delta(v, seq, i, sid), i) for i in range(lo, len(seq) + 1))
        for cost, i in cands:
            if self.feasible(v, [*seq[:i], sid, *seq[i:]]):
                return cost, i
        return None


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


def _insert_all(sim: _Sim, vehicles: list[Vehicle], seqs: dict[str, list[str]],
                todo: list[str], deadline: float) -> list[str]:
    """Regret-2 insertion; returns the stops that fit nowhere.

    Best insertions are cached per (stop, vehicle) and only the changed vehicle's entries are
    recomputed after each insertion, so the cost is ~ stops x vehicles, not stops^2 x vehicles.
    """
    todo = list(todo)
    cache: dict[str, dict[str, tuple[float, int] | None]] = {
        sid: {v.id: sim.best_insertion(v, seqs.setdefault(v.id, []), sid) for v in vehicles}
        for sid in todo
    }
    by_vid = {v.id: v for v in vehicles}
    while todo and time.perf_counter() < deadline:
        pick = None
        for sid in todo:
            opts = sorted((c[0], vid, c[1]) for vid, c in cache[sid].items() if c is not None)
            if not opts:
                continue
            regret = (opts[1][0] if len(opts) > 1 else float("inf")) - opts[0][0]
            if pick is None or regret > pick[0]:
                pick = (regret, sid, opts[0])
        if pick is None:
            break
        _, sid, (_, vid, pos) = pick
        seqs[vid].insert(pos, sid)
        todo.remove(sid)
        for other in todo:
            cache[other][vid] = sim.best_insertion(by_vid[vid], seqs[vid], other)
    return todo


def _relocate_orphans(sim: _Sim, vehicles: list[Vehicle], seqs: dict[str, list[str]],
                      placed: list[str], deadline: float) -> None:
    """Move each orphan to its cheapest feasible spot anywhere; other stops stay put."""
    where = {sid: vid for vid, seq in seqs.items() for sid in seq}
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for sid in placed:
            vid = where[sid]
            v = next(x for x in vehicles if x.id == vid)
            seq = seqs[vid]
            i = seq.index(sid)
            gain = sim.delta(v, [*seq[:i], *seq[i + 1:]], i, sid)
            seq.pop(i)
            best = (gain, vid, i)
            for w in vehicles:
                c = sim.best_insertion(w, seqs.setdefault(w.id, []), sid)
                if c is not None and c[0] < best[0] - 1e-9:
                    best = (c[0], w.id, c[1])
            seqs[best[1]].insert(best[2], sid)
            where[sid] = best[1]
            improved |= best[1] != vid or best[2] != i


def _eject_insert(sim: _Sim, vehicles: list[Vehicle], seqs: dict[str, list[str]], sid: str,
                  owner: dict[str, str], deadline: float) -> bool:
    """Make room for ``sid`` by moving ONE other stop to another vehicle (churn 1)."""
    x = sim.stop[sid].location
    near = sorted(
        (v for v in vehicles if seqs.get(v.id)),
        key=lambda v: min(sim.dist[sim.stop[o].location][x] for o in seqs[v.id]),
    )[:8]
    best = None
    for w in near:
        seq = seqs[w.id]
        for j in range(len(w.fixed_prefix), len(seq)):
            if time.perf_counter() > deadline:
                break
            victim = seq[j]
            if owner.get(victim) not in (None, w.id):
                continue  # already moved once; do not move it again
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
                        best = (cost, w.id, rest, ins[1], u.id, back[1], victim)
    if best is None:
        return False
    _, wid, rest, pos, uid, upos, victim = best
    seqs[wid] = [*rest[:pos], sid, *rest[pos:]]
    seqs[uid].insert(upos, victim)
    return True


def _eject_many(sim: _Sim, vehicles: list[Vehicle], seqs: dict[str, list[str]], sid: str,
                owner: dict[str, str], deadline: float, max_out: int = 5) -> int | None:
    """Serve ``sid`` on some vehicle by moving up to ``max_out`` of its stops elsewhere.

    For a few candidate vehicles and insertion points, greedily remove the stop whose removal
    most reduces the route's lateness until it is feasible, then regret-insert the removed
    stops into the other vehicles. Keeps the option that moves the fewest stops (then cheapest).
    Returns the number of moved stops, or None when nothing works.
    """
    x = sim.stop[sid]
    cands = [v for v in vehicles if v.can_serve(x) and seqs.get(v.id)]
    cands.sort(key=lambda v: min(sim.dist[sim.stop[o].location][x.location] for o in seqs[v.id]))
    best = None
    for w in cands[:10]:
        seq, lo = seqs[w.id], len(w.fixed_prefix)
        positions = sorted(range(lo, len(seq) + 1), key=lambda i: sim.delta(w, seq, i, sid))[:3]
        for pos in dict.fromkeys([lo, *positions]):
            if time.perf_counter() > deadline:
                break
            trial = [*seq[:pos], sid, *seq[pos:]]
            out: list[str] = []
            while (exc := sim.excess(w, trial)) > 0 and len(out) < max_out:
                removable = [j for j in range(lo, len(trial)) if trial[j] != sid]
                if not removable:
                    break
                j = min(removable, key=lambda j: sim.excess(w, trial[:j] + trial[j + 1:]))
                if sim.excess(w, trial[:j] + trial[j + 1:]) >= exc:
                    break
                out.append(trial.pop(j))
            if sim.excess(w, trial) > 0 or not out:
                continue
            # Ejected stops may also go back into w at a later, feasible position.
            others = {k: list(v) for k, v in seqs.items()}
            others[w.id] = trial
            if _insert_all(sim, vehicles, others, out, deadline):
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


def replan_after_breakdown(
    problem: Problem, plan: Solution, broken: str, t: int, time_limit: float = 10.0
) -> ReplanResult:
    t0 = time.perf_counter()
    deadline = t0 + time_limit * 0.5  # insertion; ejection may use up to 80 %, then fallback
    fz = freeze_at(problem, plan, t, broken)
    rp = fz.problem
    sim = _Sim(rp)
    vehicles = list(rp.vehicles)
    seqs = {vid: list(seq) for vid, seq in fz.sequences.items()}
    left = _insert_all(sim, vehicles, seqs, fz.orphans, deadline)
    placed = [s for s in fz.orphans if s not in left]
    _relocate_orphans(sim, vehicles, seqs, placed, deadline)
    owner = {sid: vid for vid, seq in fz.sequences.items() for sid in seq}
    method = "insertion"
    hard_deadline = t0 + time_limit * 0.8
    for sid in list(left):
        if _eject_insert(sim, vehicles, seqs, sid, owner, hard_deadline) or (
            _eject_many(sim, vehicles, seqs, sid, owner, hard_deadline) is not None
        ):
            left.remove(sid)
            method = "insertion+ejection"
    sol = referee(rp, assemble(rp, seqs, f"replan-{method}", time.perf_counter() - t0))
    if not sol.feasible:
        # Should not happen (every move was simulated); the full solver is the safety net.
        remaining = max(1.0, time_limit - (time.perf_counter() - t0))
        alt = solve(rp, remaining, warm_start=seqs)
        if alt.feasible:
            sol, method = alt, "solver"
    moved = sum(
        1 for r in sol.routes for sid in r.stop_ids if sid in owner and owner[sid] != r.vehicle_id
    ) + sum(1 for u in sol.unassigned if u.stop_id in owner)
    sol = dataclasses.replace(sol, wall_time_s=time.perf_counter() - t0)
    return ReplanResult(rp, sol, len(fz.orphans), moved, len(owner),
                        time.perf_counter() - t0, method)

