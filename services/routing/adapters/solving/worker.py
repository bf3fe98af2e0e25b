"""The solver worker: what runs in a planner's worker process (see `planner.py`). It builds the
job's problem (`problem.py`), solves it, or replans it from the active plan through the
service's replanning (`domain.replanning`), and reads the result as a plan (`plans.py`). The
only I/O is the OSRM table request when `ROUTING_OSRM_URL` is set, and the pipe to the
service.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from cartage.routing.v1 import route_plan_pb2
from services.routing.adapters.solving import plans
from services.routing.adapters.solving import problem as building
from services.routing.domain import replanning
from services.routing.domain.autonomy import Domain
from services.routing.solver import solve
from services.routing.solver.base import Progress
from services.routing.solver.freeze import Tracked
from services.routing.solver.matrix import HaversineProvider, MatrixProvider, OsrmTableProvider
from services.routing.solver.model import COST_SCALE, Problem, Solution
from services.routing.use_cases.ports import JobResult, SolveJob

#: Progress reports: at most one per this many seconds from the worker.
REPORT_INTERVAL_S = 0.25


def _fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _provider(osrm_url: str) -> MatrixProvider:
    if osrm_url:
        return OsrmTableProvider(osrm_url, fetch=_fetch_json)
    return HaversineProvider()


def _objective(problem: Problem, solution: Solution) -> float:
    """Route cost under the objective plus drop penalties, in currency units."""
    by_id = {s.id: s for s in problem.stops}
    return solution.cost + sum(by_id[u.stop_id].drop_penalty for u in solution.unassigned
                               if u.stop_id in by_id) / COST_SCALE


def solve_job(job: SolveJob, cancel: threading.Event,
              on_progress: Callable[[Progress], None]) -> JobResult:
    """Build the job's problem and solve it (or replan from the active plan). Pure
    computation; the worker process runs it, tests may call it directly."""
    request, replan = job.request, job.replan
    pp = building.build_problem(
        job.fleet, list(request.shipments), epoch=job.epoch, objective=request.objective,
        provider=_provider(job.osrm_url), incidents=job.incidents,
        depart_at=replan.now if replan else None, name=job.plan_id)
    if replan is None:
        solution = solve(pp.problem, job.time_limit, cancel=cancel, on_progress=on_progress)
        fixed: frozenset[str] = frozenset()
        feasible = solution.feasible
    else:
        previous = plans.solution_from_plan(
            replan.previous, {s.id: s for s in replan.previous_request.shipments}, job.epoch,
            pp.dimensions)
        change = replanning.Change(Domain(replan.domain), frozenset(replan.cancelled),
                                   frozenset(replan.broken), frozenset(replan.added),
                                   replan.reason)
        tracked = Tracked(frozenset(replan.completed), frozenset(replan.arrived)) \
            if replan.tracked else None
        outcome = replanning.replan(pp.problem, previous, replan.now, change, job.time_limit,
                                    cancel=cancel, on_progress=on_progress, tracked=tracked)
        solution, fixed, feasible = outcome.solution, outcome.fixed, outcome.feasible
        if not feasible:
            solution = dataclasses.replace(solution, feasible=False,
                                           violations=outcome.violations)
    content = plans.plan_content(pp, solution, fixed)
    content.progress.best_cost = _objective(pp.problem, solution)
    content.progress.elapsed.CopyFrom(content.solve_duration)
    content.progress.solver = solution.solver
    return JobResult(content, feasible, cancelled=cancel.is_set())


def worker_main(job: SolveJob, conn: Connection, cancel: Any) -> None:
    """Entry point of a worker process: solve, send throttled progress, then the result."""
    local = threading.Event()

    def watch_cancel() -> None:
        cancel.wait()
        local.set()

    threading.Thread(target=watch_cancel, daemon=True).start()
    last = 0.0

    def report(progress: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= REPORT_INTERVAL_S:
            last = now
            conn.send(("progress", progress))

    try:
        result = solve_job(job, local, report)
    except Exception as error:
        traceback.print_exc()
        result = JobResult(route_plan_pb2.RoutePlan(), False, cancelled=local.is_set(),
                           error=repr(error)[:500])
    conn.send(("done", result))
    conn.close()
