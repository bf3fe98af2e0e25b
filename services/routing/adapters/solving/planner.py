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
import logging
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any, Protocol

from cartage.routing.v1 import route_plan_pb2
from services.routing.adapters.solving.worker import worker_main
from services.routing.solver.base import Progress
from services.routing.use_cases.ports import JobResult, SolveJob

log = logging.getLogger(__name__)

#: Time a job may take beyond its time limit (building the matrix, converting the result)
#: before it is cancelled, and after that before its process is terminated.
BUILD_ALLOWANCE_S = 120.0
STOP_GRACE_S = 10.0
#: Progress: at most one DB write per this many seconds.
RECORD_INTERVAL_S = 0.5


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
                        return JobResult(route_plan_pb2.RoutePlan(), False, cancelled=True,
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
                    return JobResult(route_plan_pb2.RoutePlan(), False, cancelled=cancel.is_set(),
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
