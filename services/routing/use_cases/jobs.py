"""The planning jobs' use cases: what the event consumers and the planner call.

Event handlers (`on_order_event`, `on_vehicle_status`) run in the consumer's transaction and
store a replan job when the active plan is affected. The planner (`adapters/solving`) finds
SOLVING plans (`solving_plans`), gets each job's inputs (`start_job`: a replan's problem is
built now, from the plan that is active now), records progress (`record_progress`) and the
result (`finish`): FAILED or CANCELLED without a feasible plan, else PROPOSED with a decision
that the autonomy policy applies or leaves pending.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import route_plan_pb2, routing_service_pb2
from services.kit.uow import Transaction, UnitOfWork
from services.routing.domain import autonomy, tracking
from services.routing.domain.incoming import (
    LateRisk,
    MilestoneRecorded,
    OrderChanged,
    VehicleStatusChanged,
)
from services.routing.domain.model import (
    Change,
    Decision,
    DecisionDomain,
    DecisionState,
    PlanState,
    RoutePlan,
    Trigger,
    VehicleStatus,
    new_id,
)
from services.routing.domain.shipments import replan_scope
from services.routing.use_cases.ports import (
    Events,
    JobResult,
    Messages,
    PlanComparer,
    ReplanInput,
    Repository,
    SolveJob,
)
from services.routing.use_cases.shared import PlanChanges, UseCaseBase, utc_now


class PlanningJobs(UseCaseBase):
    def __init__(
        self,
        uow: UnitOfWork,
        repository: Repository,
        events: Events,
        messages: Messages,
        changes: PlanChanges,
        comparer: PlanComparer,
        *,
        default_time_limit: float,
        osrm_url: str = "",
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(uow, repository, events, messages, changes,
                         default_time_limit=default_time_limit, clock=clock)
        self._comparer = comparer
        self._osrm_url = osrm_url

    # events in -----------------------------------------------------------------------------

    async def on_order_event(self, tx: Transaction, event: OrderChanged) -> None:
        """Keep the order read model and replan the active plan when one of its orders is
        cancelled or changed, or an urgent order is released while a plan is active (other
        released orders wait for the next PlanRoutes or ReplanRoutes)."""
        order, subject = event.order, event.subject
        if not order.client_id or not await self._repo.upsert_order(tx, order):
            return  # a stale redelivery: a newer version is stored already
        active = await self._repo.active_plan(tx, order.client_id)
        if active is None:
            return
        in_plan = any(s.id == order.name for s in active.request.shipments)
        if subject == "order.cancelled" and in_plan:
            change = Change(DecisionDomain.CANCELLATION,
                            reason=f"{order.name} was cancelled: {order.cancel_reason}")
        elif (subject == "order.released" and not in_plan
              and order.priority == order_pb2.PRIORITY_URGENT
              and order.mode == order_pb2.TRANSPORT_MODE_OWN_FLEET):
            change = Change(DecisionDomain.URGENT_INSERTION, added=frozenset({order.name}),
                            reason=f"urgent order {order.name} was released")
        elif subject == "order.updated" and in_plan:
            fields = ", ".join(event.changed_fields) or "content"
            change = Change(DecisionDomain.MANUAL_REPLAN,
                            reason=f"{order.name} changed ({fields})")
        else:
            return
        trigger = Trigger(subject, event.event_id, (order.name,), change.reason)
        self._replan_job(tx, active, change, trigger)

    async def on_vehicle_status(self, tx: Transaction, event: VehicleStatusChanged) -> None:
        """A vehicle with a route in the active plan broke down or went off duty: replan."""
        if event.status not in (VehicleStatus.BROKEN_DOWN, VehicleStatus.OFF_DUTY):
            return
        vehicle = event.vehicle
        active = await self._repo.active_plan(tx, event.client_id)
        if active is None or not any(r.vehicle == vehicle for r in active.content.routes):
            return
        summary = (f"{vehicle} is {event.status.name}"
                   + (f": {event.reason}" if event.reason else ""))
        trigger = Trigger("vehicle.status_changed", event.event_id, (vehicle,), summary)
        self._replan_job(tx, active, Change(DecisionDomain.BREAKDOWN, reason=summary), trigger)

    async def on_milestone(self, tx: Transaction, event: MilestoneRecorded) -> None:
        """Keep what the tracking service recorded: from now on the milestones, not the
        planned times, say which of the plan's stops are completed."""
        if event.client_id and event.order:
            await self._repo.record_milestone(tx, event, self._clock())

    async def on_late_risk(self, tx: Transaction, event: LateRisk) -> None:
        """A stop of the active plan is at risk of being late: a DELAY replan, decided under
        the policy of that domain (L3 applies it, L2 within its guardrails, L1 waits)."""
        active = await self._repo.active_plan(tx, event.client_id)
        if active is None or not any(
                s.shipment == event.order for r in active.content.routes for s in r.stops):
            return
        stop = tracking.solver_stop_id(event.order, event.stop_id)
        done = tracking.tracked_stops(await self._repo.milestones(
            tx, event.client_id, [event.order]))
        if stop is None or (done is not None and stop in done.completed):
            return  # the stop is done meanwhile: nothing to save
        summary = f"{event.order} {event.stop_id} is at risk of being late"
        if event.eta is not None and event.window_end is not None:
            summary += (f": ETA {event.eta.isoformat()} after the window's end "
                        f"{event.window_end.isoformat()}")
        subjects = (event.order, *((event.vehicle,) if event.vehicle else ()))
        trigger = Trigger("exception.raised", event.event_id, subjects, summary)
        self._replan_job(tx, active, Change(DecisionDomain.DELAY, reason=summary), trigger)

    # the planner's side --------------------------------------------------------------------

    async def solving_plans(self) -> list[tuple[str, str]]:
        async with self._uow.transaction() as tx:
            return await self._repo.solving_plans(tx)

    async def start_job(self, plan_id: str) -> SolveJob | None:
        """The job for a SOLVING plan, with a replan's problem built now; None when there is
        nothing to solve (cancelled before it started, or no active plan left to replan)."""
        async with self._uow.transaction() as tx:
            plan = await self._repo.plan(tx, None, plan_id, for_update=True)
            if plan is None or plan.state != PlanState.SOLVING:
                return None
            now = self._clock()
            if plan.cancel_requested:
                await self._repo.save_plan(tx, plan.move(PlanState.CANCELLED, now))
                self.changes.changed([plan.id])
                return None
            replan = None
            if plan.change is not None:
                await self._repo.lock_fleet(tx, plan.client_id)
                active = await self._repo.active_plan(tx, plan.client_id)
                if active is None:
                    content = route_plan_pb2.RoutePlan(violations=["no active plan to replan"])
                    await self._repo.save_plan(tx, plan.move(PlanState.FAILED, now,
                                                             content=content))
                    self.changes.changed([plan.id])
                    return None
                plan, replan = await self._replan_inputs(tx, plan, active, now)
                await self._repo.save_plan(tx, plan)
            incidents = await self._repo.incidents_until(tx, plan.client_id, now)
        return SolveJob(
            plan_id=plan.id, request=plan.request, fleet=plan.fleet, epoch=plan.epoch,
            incidents=tuple(incidents),
            time_limit=plan.request.time_limit.ToTimedelta().total_seconds(),
            osrm_url=self._osrm_url, replan=replan)

    async def _replan_inputs(self, tx: Transaction, plan: RoutePlan, active: RoutePlan,
                             now: datetime) -> tuple[RoutePlan, ReplanInput]:
        """The replan's problem as it should be now (see `shipments.replan_scope`). What is
        cancelled or broken is read from the current state, not from the trigger: a vehicle
        repaired before the job starts is planned again."""
        assert plan.change is not None
        change = plan.change
        proposed = []
        for pending in await self._repo.pending_decisions(tx, plan.client_id):
            superseded = await self._repo.plan(tx, plan.client_id, pending.plan_id)
            if superseded is not None:
                proposed += superseded.request.shipments
        keys = {s.id for s in (*active.request.shipments, *proposed)} | change.added
        orders = await self._repo.orders(tx, plan.client_id,
                                         [k for k in keys if k.startswith("orders/")])
        vehicles = [self._messages.vehicle_message(v)
                    for v in await self._repo.vehicles(tx, plan.client_id)]
        tracked = tracking.tracked_stops(await self._repo.milestones(
            tx, plan.client_id, {s.id for s in active.request.shipments
                                 if s.id.startswith("orders/")}))
        scope = replan_scope(active.content, active.request.shipments, proposed, change.added,
                             orders, vehicles, now,
                             started=tracking.started_shipments(tracked) if tracked else None)
        request = routing_service_pb2.PlanRoutesRequest(
            orders=[s.id for s in scope.shipments if s.id.startswith("orders/")],
            shipments=scope.shipments, vehicles=[v.name for v in scope.fleet],
            time_limit=plan.request.time_limit, objective=active.request.objective)
        inputs = ReplanInput(
            previous=active.content, previous_request=active.request,
            now=int((now - active.epoch).total_seconds()), domain=change.domain.name,
            cancelled=tuple(sorted(scope.cancelled)), broken=tuple(sorted(scope.broken)),
            added=tuple(sorted(scope.added)), reason=change.reason,
            tracked=tracked is not None,
            completed=tuple(sorted(tracked.completed)) if tracked else (),
            arrived=tuple(sorted(tracked.arrived)) if tracked else ())
        return plan.with_inputs(request, scope.fleet, active.id, now), inputs

    async def record_progress(self, plan_id: str, progress: route_plan_pb2.PlanProgress
                              ) -> None:
        async with self._uow.transaction() as tx:
            plan = await self._repo.plan(tx, None, plan_id, for_update=True)
            if plan is None or plan.state != PlanState.SOLVING:
                return
            await self._repo.save_plan(tx, plan.with_progress(progress, self._clock()))
        self.changes.changed([plan_id])

    async def finish(self, plan_id: str, result: JobResult) -> None:
        """Record the solver's result: FAILED or CANCELLED without a feasible plan, else
        PROPOSED with a decision that the autonomy policy applies or leaves pending."""
        touched = [plan_id]
        async with self._uow.transaction() as tx:
            plan = await self._repo.plan(tx, None, plan_id, for_update=True)
            if plan is None or plan.state != PlanState.SOLVING:
                return
            await self._repo.lock_fleet(tx, plan.client_id)
            now = self._clock()
            content = result.content
            if result.error or not result.feasible:
                if result.error:
                    content = route_plan_pb2.RoutePlan()
                    content.CopyFrom(result.content)
                    content.violations.append(f"solver error: {result.error}")
                state = PlanState.CANCELLED if result.cancelled else PlanState.FAILED
                await self._repo.save_plan(tx, plan.move(state, now, content=content))
            else:
                touched += await self._propose(tx, replace(plan, content=content), now)
        self.changes.changed(touched)

    async def _propose(self, tx: Transaction, plan: RoutePlan, now: datetime) -> list[str]:
        """Make the decision for a solved plan; returns the other plans it changed."""
        client_id = plan.client_id
        active = await self._repo.active_plan(tx, client_id, for_update=True)
        diff = self._comparer.diff(active, plan)
        policy = (await self._repo.policy(tx, client_id)).for_domain(plan.domain)
        verdict = autonomy.decide(policy, diff)
        decision = Decision(
            id=new_id(), client_id=client_id, state=DecisionState.PENDING, domain=plan.domain,
            level=int(policy.level), plan_id=plan.id,
            previous_plan_id=active.id if active else "",
            content=self._messages.decision_content(plan.trigger, diff, verdict),
            create_time=now)
        plan = plan.move(PlanState.PROPOSED, now, decision_id=decision.id)
        touched = []
        for older in await self._repo.pending_decisions(tx, client_id):
            await self._repo.save_decision(tx, older.supersede(now))
            stale = await self._repo.plan(tx, client_id, older.plan_id, for_update=True)
            if stale is not None and stale.state == PlanState.PROPOSED:
                await self._repo.save_plan(tx, stale.move(PlanState.SUPERSEDED, now))
                touched.append(stale.id)
        if verdict.apply:
            assert verdict.decided_by is not None
            decision, plan = await self._apply(tx, decision, plan, active, verdict.decided_by)
            self._repo.insert_decision(tx, decision)
            touched += [active.id] if active else []
        else:
            self._repo.insert_decision(tx, decision)
            await self._repo.save_plan(tx, plan)
            tx.publish(self._events.decision_pending(decision, now))
        return touched

