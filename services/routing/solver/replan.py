"""Mid-day replanning with minimal churn, and the benchmark's breakdown scenario.

Dispatchers and drivers lose trust in a plan that reshuffles every time something happens, so
a replan changes as little as it can. The building blocks:

* ``freeze`` - ``freeze_at`` turns a plan into the residual problem at time ``t`` (completed
  stops removed, each vehicle's next stop pinned as its first visit, the vehicle starting where
  it last left a customer; the load model of what is on board is described there); ``retime``
  schedules the routes of vehicles already driving at ``t`` without a delayed start;
* ``route_sim`` - ``RouteSim``, the fast evaluation of a vehicle's stop sequence;
* ``heuristics`` - ``reallocate``, ``resequence``, ``shed`` and ``relocate_if_pays``, which
  work on per-vehicle stop sequences and never move a stop they were not asked to move.

``replan_after_breakdown`` (here) combines them for the benchmark's breakdown scenario; the
routing service's ``services.routing.domain.replanning`` uses them per kind of change.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from services.routing.solver.base import assemble
from services.routing.solver.freeze import freeze_at, retime
from services.routing.solver.heuristics import Budget, reallocate
from services.routing.solver.interface import referee, solve
from services.routing.solver.model import Problem, Solution
from services.routing.solver.route_sim import RouteSim


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
