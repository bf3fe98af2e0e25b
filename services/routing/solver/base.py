"""Shared solver plumbing: the solver protocol, progress events and solution assembly."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.routing.solver.feasibility import diagnose_unassigned
from services.routing.solver.model import (
    COST_SCALE,
    Problem,
    Route,
    Solution,
    Stop,
    Unassigned,
    UnassignedReason,
)
from services.routing.solver.schedule import schedule_route


@dataclass(frozen=True, slots=True)
class Progress:
    """A new best solution was found: ``best_cost`` in currency units (incl. drop penalties)."""

    solver: str
    elapsed_s: float
    best_cost: float


ProgressFn = Callable[[Progress], None]
#: A warm start is a previous solution or just {vehicle id: [stop ids in order]}.
WarmStart = Solution | Mapping[str, Sequence[str]]


class Solver(Protocol):
    name: str

    def unsupported(self, problem: Problem) -> list[str]:
        """Features of ``problem`` this solver cannot model (empty = fully supported)."""
        ...

    def supports(self, problem: Problem) -> bool: ...

    def solve(
        self,
        problem: Problem,
        time_limit: float,
        *,
        cancel: threading.Event | None = None,
        on_progress: ProgressFn | None = None,
        warm_start: WarmStart | None = None,
    ) -> Solution: ...


def warm_sequences(warm_start: WarmStart | None) -> dict[str, list[str]]:
    if warm_start is None:
        return {}
    if isinstance(warm_start, Solution):
        return {r.vehicle_id: r.stop_ids for r in warm_start.routes if r.visits}
    return {v: list(seq) for v, seq in warm_start.items() if seq}


def cost_scale_factor(problem: Problem) -> int:
    """Smallest power of ten that makes every cost coefficient an integer (for PyVRP)."""
    coeffs = []
    for v in problem.vehicles:
        coeffs += [v.cost_per_km, v.cost_per_hour * COST_SCALE / 3600, v.fixed_cost * COST_SCALE]
    for k in (1, 10, 100, 1000):
        if all(math.isclose(c * k, round(c * k), abs_tol=1e-6) for c in coeffs):
            return k
    return 1000


def hopeless_stops(problem: Problem) -> dict[str, UnassignedReason]:
    """Stops no vehicle could serve even alone; solvers leave them out up front."""
    out: dict[str, UnassignedReason] = {}
    by_id = {s.id: s for s in problem.stops}
    for s in problem.stops:
        reason = diagnose_unassigned(problem, s, by_id=by_id)
        if reason not in (UnassignedReason.FLEET_EXHAUSTED, UnassignedReason.DROPPED_FOR_COST):
            out[s.id] = reason
    # A pair is only servable together.
    for s in problem.stops:
        if s.pair is not None and s.pair in out and s.id not in out:
            out[s.id] = UnassignedReason.PAIR_INFEASIBLE
    return out


def assemble(
    problem: Problem,
    sequences: Mapping[str, Sequence[str]],
    solver: str,
    wall_time_s: float,
    *,
    routes: Mapping[str, Route] | None = None,
    known_reasons: Mapping[str, UnassignedReason] | None = None,
    notes: Sequence[str] = (),
) -> Solution:
    """Build a Solution from per-vehicle sequences; unrouted stops get a diagnosed reason.

    ``routes`` may carry solver-timed routes (OR-Tools with breaks); other vehicles are
    scheduled here so times and loads never depend on the solver.
    """
    by_id: dict[str, Stop] = {s.id: s for s in problem.stops}
    vehicles = {v.id: v for v in problem.vehicles}
    out: list[Route] = []
    routed: set[str] = set()
    for vid, seq in sequences.items():
        if not seq:
            continue
        r = (routes or {}).get(vid) or schedule_route(problem, vehicles[vid], seq, by_id=by_id)
        out.append(r)
        routed.update(seq)
    reasons = dict(known_reasons or {})
    unassigned = tuple(
        Unassigned(s.id, reasons.get(s.id) or diagnose_unassigned(problem, s, by_id=by_id))
        for s in problem.stops
        if s.id not in routed
    )
    order = {v.id: i for i, v in enumerate(problem.vehicles)}
    out.sort(key=lambda r: order[r.vehicle_id])
    return Solution(tuple(out), unassigned, solver, wall_time_s, notes=tuple(notes))


def empty_solution(problem: Problem, solver: str, wall: float, note: str) -> Solution:
    return Solution(
        (),
        tuple(Unassigned(s.id, UnassignedReason.SOLVER_FAILED) for s in problem.stops),
        solver,
        wall,
        notes=(note,),
    )
