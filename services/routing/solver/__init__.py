"""Routing decision engine, solver layer (pure Python: no gRPC, database or messaging).

Public entry points: :func:`solve` (portfolio of PyVRP and OR-Tools, refereed by our own
feasibility checker), :func:`replan_after_breakdown`, the model dataclasses and the checker.
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
from services.routing.solver.replan import ReplanResult, replan_after_breakdown

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
    "ReplanResult",
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
    "replan_after_breakdown",
    "solve",
]
