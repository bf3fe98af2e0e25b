"""The planner: solves SOLVING plans outside the service's event loop, one worker process each.

Why a process per job (multiprocessing, `spawn`) rather than a ProcessPoolExecutor: each job
needs its own cancel signal and progress channel, which a Process takes as plain arguments (a
pool would need a Manager process to proxy them), and a solver that crashes or ignores its
deadline takes down only its own process, which we can terminate, instead of breaking the
pool for every later job. Starting a process costs about half a second of imports here, small
next to any useful time limit. `spawn` because gRPC's core must not be forked once it runs.

Flow: the planner scans for SOLVING plans (at start-up, which resumes everything a stopped
service left SOLVING, on a wake-up after a request, and every `poll_interval` for jobs stored
by event handlers) and queues them per client; a client's jobs run one at a time, in order, so
a replan sees the result of the one before. `ROUTING_SOLVER_PROCESSES` bounds how many run at
once. For each job the planning jobs' use cases (`use_cases.jobs.PlanningJobs`) build its
inputs (`start_job`), the worker builds the problem, solves (or replans) it with the deadline
and reports progress, and the use cases record the result and its decision (`finish`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import multiprocessing
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any, Protocol

from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2
from services.routing.domain import problem as building
from services.routing.domain import replanning
from services.routing.domain.autonomy import Domain
from services.routing.solver import solve
from services.routing.solver.base import Progress
from services.routing.solver.matrix import HaversineProvider, MatrixProvider, OsrmTableProvider
from services.routing.solver.model import COST_SCALE, Problem, Solution

log = logging.getLogger(__name__)

#: Time a job may take beyond its time limit (building the matrix, converting the result)
#: before it is cancelled, and after that before its process is terminated.
BUILD_ALLOWANCE_S = 120.0
STOP_GRACE_S = 10.0
#: Progress reports: at most one per this many seconds from the worker, and one DB write per
#: this many seconds in the service.
REPORT_INTERVAL_S = 0.25
RECORD_INTERVAL_S = 0.5


@dataclass(frozen=True)
class ReplanInput:
    """What a replan adds to a job: the active plan it starts from and what changed."""

    previous: bytes  # RoutePlan
    previous_request: bytes  # PlanRoutesRequest (the active plan's shipments)
    now: int  # seconds from the epoch
    domain: str  # autonomy.Domain value
    cancelled: tuple[str, ...]
    broken: tuple[str, ...]
    added: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class SolveJob:
    """Everything a worker process needs, as picklable values (protobuf bytes)."""

    plan_id: str
    request: bytes  # PlanRoutesRequest with resolved shipments and vehicle names
    fleet: bytes  # ListVehiclesResponse
    epoch: datetime
    incidents: tuple[bytes, ...]  # TrafficIncident
    time_limit: float
    osrm_url: str = ""
    replan: ReplanInput | None = None


@dataclass(frozen=True)
class JobResult:
    """The plan's output fields (RoutePlan bytes), whether it passed the feasibility check,
    whether the job was cancelled, and an error when no result could be produced."""

    content: bytes
    feasible: bool
    cancelled: bool = False
    error: str = ""


# --------------------------------------------------------------------------- the worker side


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
    request = routing_service_pb2.PlanRoutesRequest.FromString(job.request)
    fleet = routing_service_pb2.ListVehiclesResponse.FromString(job.fleet).vehicles
    incidents = [decision_pb2.TrafficIncident.FromString(i) for i in job.incidents]
    replan = job.replan
    pp = building.build_problem(
        fleet, list(request.shipments), epoch=job.epoch, objective=request.objective,
        provider=_provider(job.osrm_url), incidents=incidents,
        depart_at=replan.now if replan else None, name=job.plan_id)
    if replan is None:
        solution = solve(pp.problem, job.time_limit, cancel=cancel, on_progress=on_progress)
        fixed: frozenset[str] = frozenset()
        feasible = solution.feasible
    else:
        before = routing_service_pb2.PlanRoutesRequest.FromString(replan.previous_request)
        previous = building.solution_from_plan(
            route_plan_pb2.RoutePlan.FromString(replan.previous),
            {s.id: s for s in before.shipments}, job.epoch, pp.dimensions)
        change = replanning.Change(Domain(replan.domain), frozenset(replan.cancelled),
                                   frozenset(replan.broken), frozenset(replan.added),
                                   replan.reason)
        outcome = replanning.replan(pp.problem, previous, replan.now, change, job.time_limit,
                                    cancel=cancel, on_progress=on_progress)
        solution, fixed, feasible = outcome.solution, outcome.fixed, outcome.feasible
        if not feasible:
            solution = dataclasses.replace(solution, feasible=False,
                                           violations=outcome.violations)
    content = building.plan_content(pp, solution, fixed)
    content.progress.best_cost = _objective(pp.problem, solution)
    content.progress.elapsed.CopyFrom(content.solve_duration)
    content.progress.solver = solution.solver
    return JobResult(content.SerializeToString(), feasible, cancelled=cancel.is_set())


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
        result = JobResult(b"", False, cancelled=local.is_set(), error=repr(error)[:500])
    conn.send(("done", result))
    conn.close()


# --------------------------------------------------------------------------- the service side


class Jobs(Protocol):
    """What the planner needs from the use cases (`use_cases.jobs.PlanningJobs`)."""

    async def solving_plans(self) -> list[tuple[str, str]]: ...
    async def start_job(self, plan_id: str) -> SolveJob | None: ...
    async def record_progress(self, plan_id: str,
                              progress: route_plan_pb2.PlanProgress) -> None: ...
    async def finish(self, plan_id: str, result: JobResult) -> None: ...


class Planner:
    def __init__(self, jobs: Jobs, *, processes: int = 1, poll_interval: float = 0.5) -> None:
        self._jobs = jobs
        self._slots = asyncio.Semaphore(max(1, processes))
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._queued: set[str] = set()
        self._queues: dict[str, asyncio.Queue[str]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, Any] = {}  # plan id -> the job's cancel event
        self._cancelled: set[str] = set()

    def wake(self) -> None:
        """Look for new jobs now (called after a request stored one)."""
        self._wake.set()

    def cancel(self, plan_id: str) -> None:
        """Signal a running job's solver to stop; a job not started yet sees the plan's
        `cancel_requested` when it starts."""
        self._cancelled.add(plan_id)
        event = self._running.get(plan_id)
        if event is not None:
            event.set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    for client_id, plan_id in await self._jobs.solving_plans():
                        if plan_id not in self._queued:
                            self._queued.add(plan_id)
                            self._enqueue(client_id, plan_id)
                except Exception as error:  # the database is down: try again later
                    log.warning("cannot look for planning jobs", extra={"error": repr(error)})
                waiters = [asyncio.ensure_future(stop.wait()),
                           asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waiters, timeout=self._poll_interval,
                                   return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
        finally:
            # Jobs still running stay SOLVING and are solved again after a restart.
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _enqueue(self, client_id: str, plan_id: str) -> None:
        queue = self._queues.setdefault(client_id, asyncio.Queue())
        queue.put_nowait(plan_id)
        task = self._tasks.get(client_id)
        if task is None or task.done():
            self._tasks[client_id] = asyncio.create_task(self._drain(client_id, queue))

    async def _drain(self, client_id: str, queue: asyncio.Queue[str]) -> None:
        """Run one client's jobs one after the other; end when none is left."""
        while True:
            try:
                plan_id = queue.get_nowait()
            except asyncio.QueueEmpty:
                del self._tasks[client_id]
                del self._queues[client_id]
                return
            try:
                await self._run_one(plan_id)
            except Exception:
                log.exception("planning job failed; it is retried", extra={"plan": plan_id})
                await asyncio.sleep(5.0)
                self._queued.discard(plan_id)  # the next scan picks it up again
            else:
                self._queued.discard(plan_id)
            finally:
                self._cancelled.discard(plan_id)

    async def _run_one(self, plan_id: str) -> None:
        job = await self._jobs.start_job(plan_id)
        if job is None:
            return
        result = await self._solve(job)
        await self._jobs.finish(plan_id, result)

    async def _solve(self, job: SolveJob) -> JobResult:
        async with self._slots:
            context = multiprocessing.get_context("spawn")
            receiver, sender = context.Pipe(duplex=False)
            cancel = context.Event()
            if job.plan_id in self._cancelled:
                cancel.set()
            process = context.Process(target=worker_main, args=(job, sender, cancel),
                                      name=f"solver-{job.plan_id[:8]}", daemon=True)
            process.start()
            sender.close()
            self._running[job.plan_id] = cancel
            try:
                return await self._collect(job, process, receiver, cancel)
            finally:
                del self._running[job.plan_id]
                receiver.close()
                if process.is_alive():
                    process.terminate()
                await asyncio.to_thread(process.join, STOP_GRACE_S)

    async def _collect(self, job: SolveJob, process: Any, receiver: Connection, cancel: Any
                       ) -> JobResult:
        """Relay progress until the worker's result arrives, the worker dies, or the deadline
        (time limit + allowance) passes: then cancel, and terminate after a grace period."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        fd = receiver.fileno()

        def readable() -> None:
            try:
                while receiver.poll():
                    inbox.put_nowait(receiver.recv())
            except (EOFError, OSError):
                loop.remove_reader(fd)
                inbox.put_nowait(None)

        loop.add_reader(fd, readable)
        deadline = loop.time() + job.time_limit + BUILD_ALLOWANCE_S
        recorded = 0.0
        overdue = False
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    if overdue:
                        return JobResult(b"", False, cancelled=True,
                                         error="the solver did not stop after its deadline")
                    overdue = True
                    cancel.set()
                    deadline = loop.time() + STOP_GRACE_S
                    continue
                try:
                    message = await asyncio.wait_for(inbox.get(), left)
                except TimeoutError:
                    continue
                if message is None:
                    await asyncio.to_thread(process.join, STOP_GRACE_S)
                    return JobResult(b"", False, cancelled=cancel.is_set(),
                                     error=f"the solver process exited with {process.exitcode}")
                kind, payload = message
                if kind == "done":
                    return payload
                if loop.time() - recorded >= RECORD_INTERVAL_S:
                    recorded = loop.time()
                    await self._jobs.record_progress(job.plan_id, _progress(payload))
        finally:
            loop.remove_reader(fd)


def _progress(progress: Progress) -> route_plan_pb2.PlanProgress:
    message = route_plan_pb2.PlanProgress(best_cost=progress.best_cost,
                                          solver=progress.solver)
    message.elapsed.FromNanoseconds(int(progress.elapsed_s * 1e9))
    return message
