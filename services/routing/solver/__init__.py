"""Routing decision engine, solver layer (pure Python: no gRPC, database or messaging).

Public entry points: :func:`solve` (portfolio of PyVRP and OR-Tools, refereed by our own
feasibility checker), the model dataclasses and the checker. Replanning's building blocks are
``freeze`` (the residual problem at a time), ``route_sim`` and ``heuristics``; the service's
replanning, which the benchmark runs too, combines them in ``services.routing.domain.replanning``.
"""

from services.routing.solver.base import Progress, Solver
from services.routing.solver.feasibility import (
    Evaluation,
    Violation,
    ViolationKind,
    check,
    diagnose_unassigned,
    evaluate,
)
from services.routing.solver.freeze import freeze_at
from services.routing.solver.interface import PortfolioSolver, referee, solve
from services.routing.solver.model import (
    Break,
    Location,
    PlannedBreak,
    Problem,
    Route,
    Solution,
    Stop,
    StopKind,
    TimeWindow,
    Unassigned,
    UnassignedReason,
    Vehicle,
    Visit,
)
from services.routing.solver.ortools_solver import ORToolsSolver
from services.routing.solver.pyvrp_solver import PyVRPSolver

__all__ = [
    "Break",
    "Evaluation",
    "Location",
    "ORToolsSolver",
    "PlannedBreak",
    "PortfolioSolver",
    "Problem",
    "Progress",
    "PyVRPSolver",
    "Route",
    "Solution",
    "Solver",
    "Stop",
    "StopKind",
    "TimeWindow",
    "Unassigned",
    "UnassignedReason",
    "Vehicle",
    "Violation",
    "ViolationKind",
    "Visit",
    "check",
    "diagnose_unassigned",
    "evaluate",
    "freeze_at",
    "referee",
    "solve",
]
