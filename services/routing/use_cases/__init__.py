"""What the routing service does, independent of gRPC: each use case is one transaction.

Plans go SOLVING → (the planner solves them in a worker process, `adapters/solving`) →
PROPOSED with a Decision, which the caller's autonomy policy applies at once (ACTIVE, the old
active plan SUPERSEDED, `route.planned` / `route.updated`) or leaves PENDING
(`decision.pending`). A newer decision supersedes a pending one, so a client has at most one
pending decision. Every change of a client's active plan or decisions runs under a per-client
lock (`lock_fleet`).

Live replanning: order events, vehicle status changes, traffic incidents and ReplanRoutes store
a replan job (a SOLVING plan with its `Change`) in the transaction of what caused it. The job's
problem is built when it starts, from the plan that is active then, so queued replans of one
client (the planner runs them one at a time) each see the result of the one before.

Where things are (one module per aggregate the RPCs work on):

- `fleet.FleetUseCases` - vehicles;
- `plans.PlanUseCases` - PlanRoutes, ReplanRoutes and route plans;
- `operations.OperationUseCases` - the plans' long-running operations;
- `decisions.DecisionUseCases` - decisions and the autonomy policy;
- `incidents.IncidentUseCases` - traffic incidents;
- `jobs.PlanningJobs` - the event handlers and the planner's side (start a job, record its
  progress and its result, propose and maybe apply its decision);
- `shared` - the clock, `PlanChanges`, `PlannerSignals` and `UseCaseBase`: the dependencies
  every side shares and the steps several take (store a replan job, apply a decision);
- `ports` - the Protocols the composition root fills in (repository, events, messages, plan
  comparer) and the values of list queries and solver jobs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.routing.use_cases.decisions import DecisionUseCases
    from services.routing.use_cases.fleet import FleetUseCases
    from services.routing.use_cases.incidents import IncidentUseCases
    from services.routing.use_cases.jobs import PlanningJobs
    from services.routing.use_cases.operations import OperationUseCases
    from services.routing.use_cases.plans import PlanUseCases
    from services.routing.use_cases.shared import PlanChanges, PlannerSignals, utc_now

# Loaded on first use: a solver worker process imports `ports` for the job values it is given,
# and importing the package must not make it load SQLAlchemy and the rest of the service.
_WHERE = {
    "DecisionUseCases": "decisions",
    "FleetUseCases": "fleet",
    "IncidentUseCases": "incidents",
    "OperationUseCases": "operations",
    "PlanChanges": "shared",
    "PlanUseCases": "plans",
    "PlannerSignals": "shared",
    "PlanningJobs": "jobs",
    "utc_now": "shared",
}
__all__ = [
    "DecisionUseCases",
    "FleetUseCases",
    "IncidentUseCases",
    "OperationUseCases",
    "PlanChanges",
    "PlanUseCases",
    "PlannerSignals",
    "PlanningJobs",
    "utc_now",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
