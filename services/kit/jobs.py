"""Background jobs (outbox relay, consumers, a planner) under supervision.

A job is a coroutine that runs until the service's stop event is set. If it raises, or returns
while the service is not stopping, the supervisor logs the failure once (with its traceback)
and starts it again after a backoff that doubles up to `MAX_BACKOFF_S` (and starts from the
beginning again once a run lasted `STABLE_S`). Readiness follows: a required job counts as up
only while it runs and its own `ready` check (connected, subscribed) says so, and the gRPC
health status of the service turns NOT_SERVING while any required job is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("cartage.jobs")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0

Ready = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    run: Callable[[asyncio.Event], Awaitable[None]]
    # The job's own readiness (e.g. the relay is connected); None: up whenever it runs.
    ready: Ready | None = None
    # A service whose required job is down reports NOT_SERVING.
    required: bool = True


class Supervisor:
    def __init__(self, jobs: Sequence[Job], stop: asyncio.Event) -> None:
        self._jobs = list(jobs)
        self._stop = stop
        self._running: dict[str, bool] = {job.name: False for job in self._jobs}
        self.failures: dict[str, int] = {job.name: 0 for job in self._jobs}

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._keep(job), name=f"job:{job.name}")
                for job in self._jobs]

    async def ready(self) -> bool:
        """A health check: every required job runs and reports itself ready."""
        for job in self._jobs:
            if not job.required:
                continue
            if not self._running[job.name]:
                return False
            if job.ready is not None and not await job.ready():
                return False
        return True

    async def _keep(self, job: Job) -> None:
        backoff = FIRST_BACKOFF_S
        while not self._stop.is_set():
            started = time.monotonic()
            self._running[job.name] = True
            error: BaseException | None = None
            try:
                await job.run(self._stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            finally:
                self._running[job.name] = False
            if self._stop.is_set():
                return
            if time.monotonic() - started >= STABLE_S:
                backoff = FIRST_BACKOFF_S
            self.failures[job.name] += 1
            extra = {"job": job.name, "failures": self.failures[job.name],
                     "restart_in_s": backoff}
            if error is None:
                log.error("background job ended by itself; restarting", extra=extra)
            else:
                log.error("background job failed; restarting", extra=extra,
                          exc_info=(type(error), error, error.__traceback__))
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, MAX_BACKOFF_S)
