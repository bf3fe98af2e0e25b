"""What both sides of the use cases share: the clock, the in-process notice that a plan changed,
and `UseCaseBase`, which holds the common dependencies and the two steps both sides take:
storing a replan job and applying a decision (its plan becomes the active one)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from cartage.routing.v1 import route_plan_pb2, routing_service_pb2
from services.kit.clock import utc_now
from services.kit.errors import NotFound
from services.kit.idempotency import Codec
from services.kit.uow import Transaction, UnitOfWork
from services.routing.domain.model import (
    Change,
    Decision,
    PlanState,
    RoutePlan,
    Trigger,
    new_id,
)
from services.routing.use_cases.ports import Events, Messages, Repository


def _encode_text(value: str) -> bytes:
    return value.encode()


def _decode_text(data: bytes) -> str:
    return data.decode()


#: Idempotent verbs that start a job store the id they created; a repeat reads it afresh.
ID_CODEC: Codec[str] = Codec(_encode_text, _decode_text)


class PlanChanges:
    """In-process notice that a plan changed, for WatchRoutePlan and WaitOperation. Waiters
    re-read the plan after a notice or a timeout, so changes written by another process are
    seen too, only later."""

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    def changed(self, plan_ids: Iterable[str]) -> None:
        for plan_id in plan_ids:
            entry = self._events.pop(plan_id, None)
            if entry is not None:
                entry[0].set()

    async def wait(self, plan_id: str, seconds: float) -> None:
        event, waiters = self._events.get(plan_id, (asyncio.Event(), 0))
        self._events[plan_id] = (event, waiters + 1)
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            current = self._events.get(plan_id)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[plan_id]
                else:
                    self._events[plan_id] = (event, current[1] - 1)


class PlannerSignals:
    """Wakes the planner when a job was stored and cancels a running one. The composition root
    connects it once the planner exists (the planner needs the jobs' use cases first); until
    then, and in tests without a planner, the signals do nothing."""

    def __init__(self) -> None:
        self._wake: Callable[[], None] = lambda: None
        self._cancel: Callable[[str], None] = lambda plan_id: None

    def connect(self, wake: Callable[[], None], cancel: Callable[[str], None]) -> None:
        self._wake, self._cancel = wake, cancel

    def wake(self) -> None:
        self._wake()

    def cancel(self, plan_id: str) -> None:
        self._cancel(plan_id)


class UseCaseBase:
    """The dependencies both sides hold, and the steps both take: storing a replan job (a
    request or an event can cause one) and applying a decision (approved by a caller, or by the
    autonomy policy when a job finishes)."""

    def __init__(
        self,
        uow: UnitOfWork,
        repository: Repository,
        events: Events,
        messages: Messages,
        changes: PlanChanges,
        *,
        default_time_limit: float,
        clock: Callable[[], datetime] = utc_now,
        planner: PlannerSignals | None = None,
    ) -> None:
        self._uow = uow
        self._repo = repository
        self._events = events
        self._messages = messages
        self.changes = changes
        self._default_time_limit = default_time_limit
        self._clock = clock
        self._planner = planner or PlannerSignals()

    def _replan_job(self, tx: Transaction, active: RoutePlan, change: Change,
                    trigger: Trigger, time_limit: float | None = None
                    ) -> RoutePlan:
        """Store a replan of `active`; its problem is built when the job starts."""
        now = self._clock()
        request = routing_service_pb2.PlanRoutesRequest(objective=active.request.objective)
        request.time_limit.FromTimedelta(
            timedelta(seconds=time_limit or self._default_time_limit))
        plan = RoutePlan(
            id=new_id(), client_id=active.client_id, state=PlanState.SOLVING,
            domain=change.domain, request=request, fleet=(), epoch=active.epoch,
            content=route_plan_pb2.RoutePlan(), trigger=trigger, create_time=now,
            update_time=now, change=change, previous_plan_id=active.id)
        self._repo.insert_plan(tx, plan)
        return plan

    async def _plan(self, tx: Transaction, client_id: str, plan_id: str, *,
                    for_update: bool = False) -> RoutePlan:
        plan = await self._repo.plan(tx, client_id, plan_id, for_update=for_update)
        if plan is None:
            raise NotFound(f"route plan routePlans/{plan_id} not found",
                           reason="ROUTE_PLAN_NOT_FOUND")
        return plan

    async def _apply(self, tx: Transaction, decision: Decision, plan: RoutePlan,
                     active: RoutePlan | None, decided_by: str) -> tuple[Decision, RoutePlan]:
        """The decision's plan becomes the active plan; the old one is superseded first (the
        schema allows one active plan per client). The caller stores the applied decision."""
        now = self._clock()
        decision = decision.apply(decided_by, now)
        if active is not None:
            await self._repo.save_plan(tx, active.move(PlanState.SUPERSEDED, now))
        plan = plan.move(PlanState.ACTIVE, now)
        await self._repo.save_plan(tx, plan)
        if active is None:
            tx.publish(self._events.route_planned(plan, now))
        else:
            tx.publish(self._events.route_updated(plan, decision, now))
        return decision, plan
