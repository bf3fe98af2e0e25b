"""Minimal-churn replan heuristics on per-vehicle stop sequences (see ``replan``).

They work on the residual problem (``freeze.freeze_at``), evaluate every move with
``route_sim.RouteSim`` and never move a stop they were not asked to move:

* ``reallocate`` - regret insertion of given stops (a pickup/delivery pair as one unit, pickup
  first, on one vehicle) into the existing sequences, relocation of only those stops, then
  ejection chains (move one or a few other stops) for what still fits nowhere;
* ``resequence`` - reorder one route (or-opt moves; same vehicle, same stops);
* ``shed`` - drop stops from a route that became infeasible until it fits again;
* ``relocate_if_pays`` - move a stop to another vehicle only when that saves more than a
  threshold.

Each takes a ``Budget`` (deadline and cancel flag) and stops early when it is spent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.routing.solver.model import StopKind, Vehicle
from services.routing.solver.route_sim import RouteSim, apply_insertion


@dataclass(frozen=True)
class Budget:
    """A deadline (``time.perf_counter`` seconds) and an optional cancel flag."""

    deadline: float
    cancel: threading.Event | None = None

    def over(self) -> bool:
        return time.perf_counter() > self.deadline or bool(self.cancel and self.cancel.is_set())


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
