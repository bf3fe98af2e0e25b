"""What the routing service does, independent of gRPC: each method is one transaction.

Plans go SOLVING → (the planner solves them in a worker process, see planning.py) → PROPOSED
with a Decision, which the caller's autonomy policy applies at once (ACTIVE, the old active plan
SUPERSEDED, `route.planned` / `route.updated`) or leaves PENDING (`decision.pending`). A newer
decision supersedes a pending one, so a client has at most one pending decision. Every change
of a client's active plan or decisions runs under a per-client lock (`lock_fleet`).

Live replanning: order events, vehicle status changes, traffic incidents and ReplanRoutes store
a replan job (a SOLVING plan with its `Change`) in the transaction of what caused it. The job's
problem is built when it starts, from the plan that is active then, so queued replans of one
client (the planner runs them one at a time) each see the result of the one before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2
from services.kit.db import constraint_name
from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.kit.uow import Codec, IdempotencyKey, Transaction, UnitOfWork, idempotent
from services.kit.validation import Violations
from services.routing.adapters.events import RoutingEvents
from services.routing.adapters.repository import OperationRow, Page, RoutingRepository
from services.routing.api import converters
from services.routing.domain import autonomy, problem
from services.routing.domain.ids import stop_ids
from services.routing.domain.model import (
    AutonomyPolicy,
    Change,
    Decision,
    DecisionDomain,
    DecisionState,
    PlanState,
    RoutePlan,
    TrafficIncident,
    Vehicle,
    VehicleStatus,
    new_id,
)
from services.routing.planning import JobResult, ReplanInput, SolveJob

PLANNABLE_ORDER_STATES = (order_pb2.Order.STATE_RELEASED, order_pb2.Order.STATE_PLANNED)


def utc_now() -> datetime:
    return datetime.now(UTC)


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


class RoutingUseCases:
    def __init__(
        self,
        uow: UnitOfWork,
        repository: RoutingRepository,
        events: RoutingEvents,
        changes: PlanChanges,
        *,
        max_shipments: int,
        default_time_limit: float,
        osrm_url: str = "",
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow = uow
        self._repo = repository
        self._events = events
        self.changes = changes
        self._max_shipments = max_shipments
        self._default_time_limit = default_time_limit
        self._osrm_url = osrm_url
        self._clock = clock
        self._wake_planner: Callable[[], None] = lambda: None
        self._cancel_job: Callable[[str], None] = lambda plan_id: None

    def connect_planner(self, wake: Callable[[], None], cancel: Callable[[str], None]) -> None:
        self._wake_planner, self._cancel_job = wake, cancel

    # vehicles ------------------------------------------------------------------------------

    async def create_vehicle(self, client_id: str, vehicle_id: str,
                             content: vehicle_pb2.Vehicle, key: IdempotencyKey | None,
                             request_id: str = "") -> Vehicle:
        def decode(data: bytes) -> Vehicle:
            message = vehicle_pb2.Vehicle.FromString(data)
            return Vehicle(vehicle_id, client_id, VehicleStatus(message.status),
                           converters.vehicle_content(message),
                           converters.to_datetime(message.create_time),
                           converters.to_datetime(message.update_time),
                           int(message.etag.removeprefix("v")))

        codec = Codec(lambda v: converters.vehicle_to_proto(v).SerializeToString(), decode)

        async def work(tx: Transaction) -> Vehicle:
            vehicle = Vehicle.create(client_id, vehicle_id, content, self._clock())
            self._repo.insert_vehicle(tx, vehicle)
            return vehicle

        try:
            return await idempotent(self._uow, key, codec, work, request_id=request_id,
                                    reads=False)
        except IntegrityError as error:
            if constraint_name(error) == "vehicles_pkey":
                raise AlreadyExists(f"vehicle vehicles/{vehicle_id} already exists",
                                    reason="VEHICLE_EXISTS") from None
            raise

    async def get_vehicle(self, client_id: str, vehicle_id: str) -> Vehicle:
        async with self._uow.transaction() as tx:
            return await self._vehicle(tx, client_id, vehicle_id)

    async def list_vehicles(self, page: Page) -> list[Vehicle]:
        async with self._uow.transaction() as tx:
            return await self._repo.vehicle_page(tx, page)

    async def update_vehicle(self, client_id: str, vehicle_id: str, etag: str,
                             apply: Callable[[vehicle_pb2.Vehicle], None],
                             request_id: str = "") -> Vehicle:
        """`apply` changes a copy of the content in place (and validates the result)."""
        async with self._uow.transaction(request_id) as tx:
            vehicle = await self._vehicle(tx, client_id, vehicle_id, for_update=True)
            vehicle.check_etag(etag)
            content = vehicle_pb2.Vehicle()
            content.CopyFrom(vehicle.content)
            apply(content)
            updated = vehicle.update_content(content, self._clock())
            self._repo.save_vehicle(tx, updated)
            return updated

    async def delete_vehicle(self, client_id: str, vehicle_id: str) -> None:
        async with self._uow.transaction() as tx:
            await self._repo.lock_fleet(tx, client_id)
            vehicle = await self._vehicle(tx, client_id, vehicle_id, for_update=True)
            active = await self._repo.active_plan(tx, client_id)
            if active is not None and any(r.vehicle == vehicle.name for r in active.content.routes):
                raise FailedPrecondition(
                    f"{vehicle.name} has a route in the active plan {active.name}",
                    reason="VEHICLE_IN_ACTIVE_PLAN", metadata={"route_plan": active.name})
            self._repo.delete_vehicle(tx, vehicle)

    async def set_vehicle_status(self, client_id: str, vehicle_id: str, status: VehicleStatus,
                                 reason: str, request_id: str = "") -> Vehicle:
        """A change publishes `vehicle.status_changed` (which replans a broken vehicle's
        route); setting the status it already has changes nothing."""
        async with self._uow.transaction(request_id) as tx:
            vehicle = await self._vehicle(tx, client_id, vehicle_id, for_update=True)
            if vehicle.status == status:
                return vehicle
            now = self._clock()
            changed = vehicle.set_status(status, now)
            self._repo.save_vehicle(tx, changed)
            tx.publish(self._events.vehicle_status_changed(
                client_id, converters.vehicle_to_proto(changed), int(vehicle.status), reason,
                now))
            return changed

    async def _vehicle(self, tx: Transaction, client_id: str, vehicle_id: str, *,
                       for_update: bool = False) -> Vehicle:
        vehicle = await self._repo.vehicle(tx, client_id, vehicle_id, for_update=for_update)
        if vehicle is None:
            # Another client's vehicle is indistinguishable from a missing one.
            raise NotFound(f"vehicle vehicles/{vehicle_id} not found",
                           reason="VEHICLE_NOT_FOUND")
        return vehicle

    # planning requests ---------------------------------------------------------------------

    async def plan_routes(self, client_id: str, request: routing_service_pb2.PlanRoutesRequest,
                          key: IdempotencyKey | None, request_id: str = "") -> str:
        """Resolve and check the request, then store the SOLVING plan and its operation in one
        transaction. Returns the operation id (a repeat under the same key returns the first)."""

        async def work(tx: Transaction) -> str:
            now = self._clock()
            fleet = await self._plan_fleet(tx, client_id, list(request.vehicles))
            measured = {q.dimension for v in fleet for q in v.content.capacities}
            shipments = list(request.shipments)
            paths = [f"shipments[{i}]" for i in range(len(shipments))]
            if request.orders or not request.shipments:
                orders = await self._plan_orders(tx, client_id, list(request.orders))
                shipments += [problem.order_shipment(o, measured) for o in orders]
                paths += ([f"orders[{i}]" for i in range(len(orders))] if request.orders
                          else ["orders"] * len(orders))
            _check_dimensions(shipments, paths, fleet)
            limit = (request.time_limit.ToTimedelta().total_seconds()
                     if request.HasField("time_limit") else self._default_time_limit)
            resolved = routing_service_pb2.PlanRoutesRequest(
                orders=[s.id for s in shipments if s.id.startswith("orders/")],
                shipments=shipments, vehicles=[v.name for v in fleet],
                objective=request.objective)
            resolved.time_limit.FromTimedelta(timedelta(seconds=limit))
            fleet_protos = tuple(converters.vehicle_to_proto(v) for v in fleet)
            trigger = decision_pb2.DecisionInputs(
                trigger="PlanRoutes", trigger_id=request.request_id or request_id,
                subjects=[*resolved.orders, *resolved.vehicles],
                summary=f"plan {len(shipments)} shipments on {len(fleet)} vehicles")
            plan = RoutePlan(
                id=new_id(), client_id=client_id, state=PlanState.SOLVING,
                domain=DecisionDomain.INITIAL_PLAN, request=resolved, fleet=fleet_protos,
                epoch=problem.epoch_of(fleet_protos), content=route_plan_pb2.RoutePlan(),
                trigger=trigger, create_time=now, update_time=now)
            self._repo.insert_plan(tx, plan)
            operation = OperationRow(new_id(), client_id, plan.id, "PlanRoutes", now)
            self._repo.insert_operation(tx, operation)
            return operation.id

        operation_id = await idempotent(self._uow, key, converters.ID_CODEC, work,
                                        request_id=request_id)
        self._wake_planner()
        return operation_id

    async def _plan_fleet(self, tx: Transaction, client_id: str, names: list[str]
                          ) -> list[Vehicle]:
        if not names:
            fleet = await self._repo.vehicles(tx, client_id, status=VehicleStatus.AVAILABLE)
            if not fleet:
                raise InvalidArgument.single(
                    "vehicles", "no vehicle is AVAILABLE: create vehicles or set their status")
            return fleet
        ids = [name.removeprefix("vehicles/") for name in names]
        found = {v.id: v for v in await self._repo.vehicles(tx, client_id, ids)}
        v = Violations()
        for i, vehicle_id in enumerate(ids):
            v.require(vehicle_id in found, f"vehicles[{i}]", f"unknown vehicle {names[i]}")
        v.raise_if_any()
        for vehicle in found.values():
            if vehicle.status != VehicleStatus.AVAILABLE:
                raise FailedPrecondition(
                    f"{vehicle.name} is {vehicle.status.name}; only AVAILABLE vehicles are planned",
                    reason="VEHICLE_NOT_AVAILABLE", metadata={"vehicle": vehicle.name})
        return [found[i] for i in ids]

    async def _plan_orders(self, tx: Transaction, client_id: str, names: list[str]
                           ) -> list[order_pb2.Order]:
        if not names:
            active = await self._repo.active_plan(tx, client_id)
            planned = {s.id for s in active.request.shipments} if active else set()
            orders = [o for o in await self._repo.plannable_orders(
                tx, client_id, [order_pb2.Order.STATE_RELEASED], order_pb2.TRANSPORT_MODE_OWN_FLEET)
                if o.name not in planned]
            if not orders:
                raise InvalidArgument.single(
                    "orders", "no released own-fleet order waits for planning; name orders or "
                              "give shipments")
            if len(orders) > self._max_shipments:
                raise InvalidArgument.single(
                    "orders", f"{len(orders):,} released orders wait, more than the "
                              f"{self._max_shipments:,} one request may plan; name them in parts")
            return orders
        found = await self._repo.orders(tx, client_id, names)
        v = Violations()
        for i, name in enumerate(names):
            v.require(name in found, f"orders[{i}]", f"unknown order {name}")
        v.raise_if_any()
        for name in names:
            order = found[name]
            if order.state not in PLANNABLE_ORDER_STATES:
                state = order_pb2.Order.State.Name(order.state).removeprefix("STATE_")
                raise FailedPrecondition(f"{name} is {state}; only released orders are planned",
                                         reason="ORDER_NOT_RELEASED", metadata={"order": name})
            if order.mode != order_pb2.TRANSPORT_MODE_OWN_FLEET:
                raise FailedPrecondition(f"{name} goes by carrier, not on the own fleet",
                                         reason="ORDER_NOT_OWN_FLEET", metadata={"order": name})
        return [found[name] for name in names]

    async def replan_routes(self, client_id: str, time_limit: float | None, reason: str,
                            key: IdempotencyKey | None, request_id: str = "") -> str:
        async def work(tx: Transaction) -> str:
            active = await self._repo.active_plan(tx, client_id)
            if active is None:
                raise FailedPrecondition("there is no active plan to replan; use PlanRoutes",
                                         reason="NO_ACTIVE_PLAN")
            trigger = decision_pb2.DecisionInputs(
                trigger="ReplanRoutes", trigger_id=key.key if key else request_id,
                subjects=[active.name],
                summary=reason or "replan asked for")
            plan = self._replan_job(tx, active, Change(DecisionDomain.MANUAL_REPLAN,
                                                       reason=reason), trigger, time_limit)
            operation = OperationRow(new_id(), client_id, plan.id, "ReplanRoutes",
                                     plan.create_time)
            self._repo.insert_operation(tx, operation)
            return operation.id

        operation_id = await idempotent(self._uow, key, converters.ID_CODEC, work,
                                        request_id=request_id)
        self._wake_planner()
        return operation_id

    def _replan_job(self, tx: Transaction, active: RoutePlan, change: Change,
                    trigger: decision_pb2.DecisionInputs, time_limit: float | None = None
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

    # plans and operations ------------------------------------------------------------------

    async def get_plan(self, client_id: str, plan_id: str) -> RoutePlan:
        async with self._uow.transaction() as tx:
            return await self._plan(tx, client_id, plan_id)

    async def list_plans(self, page: Page) -> list[RoutePlan]:
        async with self._uow.transaction() as tx:
            return await self._repo.plan_page(tx, page)

    async def _plan(self, tx: Transaction, client_id: str, plan_id: str, *,
                    for_update: bool = False) -> RoutePlan:
        plan = await self._repo.plan(tx, client_id, plan_id, for_update=for_update)
        if plan is None:
            raise NotFound(f"route plan routePlans/{plan_id} not found",
                           reason="ROUTE_PLAN_NOT_FOUND")
        return plan

    async def get_operation(self, client_id: str, operation_id: str
                            ) -> tuple[str, RoutePlan]:
        async with self._uow.transaction() as tx:
            return await self._operation(tx, client_id, operation_id)

    async def _operation(self, tx: Transaction, client_id: str, operation_id: str
                         ) -> tuple[str, RoutePlan]:
        row = await self._repo.operation(tx, client_id, operation_id)
        if row is None:
            raise NotFound(f"operation operations/{operation_id} not found",
                           reason="OPERATION_NOT_FOUND")
        return row.id, await self._plan(tx, client_id, row.plan_id)

    async def list_operations(self, page: Page, done: bool | None
                              ) -> list[tuple[OperationRow, RoutePlan]]:
        async with self._uow.transaction() as tx:
            return await self._repo.operation_page(tx, page, done)

    async def cancel_operation(self, client_id: str, operation_id: str) -> None:
        """Ask the solver to stop: the best feasible plan so far is kept (and decided on like
        any other), else the plan ends CANCELLED. A finished operation is left as it is."""
        async with self._uow.transaction() as tx:
            _, plan = await self._operation(tx, client_id, operation_id)
            plan = await self._plan(tx, client_id, plan.id, for_update=True)
            if plan.state != PlanState.SOLVING or plan.cancel_requested:
                return
            await self._repo.save_plan(tx, plan.request_cancel(self._clock()))
        self._cancel_job(plan.id)
        self._wake_planner()

    async def delete_operation(self, client_id: str, operation_id: str) -> None:
        """Forget the operation; its plan stays."""
        async with self._uow.transaction() as tx:
            await self._operation(tx, client_id, operation_id)
            self._repo.delete_operation(tx, client_id, operation_id)

    # decisions and autonomy ----------------------------------------------------------------

    async def get_decision(self, client_id: str, decision_id: str) -> Decision:
        async with self._uow.transaction() as tx:
            return await self._decision(tx, client_id, decision_id)

    async def list_decisions(self, page: Page) -> list[Decision]:
        async with self._uow.transaction() as tx:
            return await self._repo.decision_page(tx, page)

    async def _decision(self, tx: Transaction, client_id: str, decision_id: str, *,
                        for_update: bool = False) -> Decision:
        decision = await self._repo.decision(tx, client_id, decision_id, for_update=for_update)
        if decision is None:
            raise NotFound(f"decision decisions/{decision_id} not found",
                           reason="DECISION_NOT_FOUND")
        return decision

    async def approve_decision(self, client_id: str, decision_id: str) -> Decision:
        """Apply a pending decision, if the plan it was made against is still the active one."""
        async with self._uow.transaction() as tx:
            await self._repo.lock_fleet(tx, client_id)
            decision = await self._decision(tx, client_id, decision_id, for_update=True)
            decision.check_pending()
            active = await self._repo.active_plan(tx, client_id, for_update=True)
            if (active.id if active else "") != decision.previous_plan_id:
                raise FailedPrecondition(
                    "the active plan changed since this decision was made; replan instead",
                    reason="PREVIOUS_PLAN_NOT_ACTIVE",
                    metadata={"active_plan": active.name if active else ""})
            plan = await self._plan(tx, client_id, decision.plan_id, for_update=True)
            decision, plan = await self._apply(tx, decision, plan, active, client_id)
            await self._repo.save_decision(tx, decision)
        self.changes.changed([plan.id, *([active.id] if active else [])])
        return decision

    async def reject_decision(self, client_id: str, decision_id: str, reason: str) -> Decision:
        async with self._uow.transaction() as tx:
            await self._repo.lock_fleet(tx, client_id)
            decision = await self._decision(tx, client_id, decision_id, for_update=True)
            now = self._clock()
            decision = decision.reject(client_id, reason, now)
            plan = await self._plan(tx, client_id, decision.plan_id, for_update=True)
            await self._repo.save_plan(tx, plan.move(PlanState.REJECTED, now))
            await self._repo.save_decision(tx, decision)
        self.changes.changed([plan.id])
        return decision

    async def get_policy(self, client_id: str) -> AutonomyPolicy:
        async with self._uow.transaction() as tx:
            return await self._repo.policy(tx, client_id)

    async def update_policy(self, client_id: str, entries: list[decision_pb2.DomainPolicy],
                            etag: str) -> AutonomyPolicy:
        async with self._uow.transaction() as tx:
            await self._repo.lock_fleet(tx, client_id)
            policy = await self._repo.policy(tx, client_id, for_update=True)
            policy.check_etag(etag)
            updated = policy.replace_domains(entries, self._clock())
            await self._repo.save_policy(tx, updated)
            return updated

    # traffic incidents ---------------------------------------------------------------------

    async def report_incident(self, client_id: str, content: decision_pb2.TrafficIncident,
                              key: IdempotencyKey | None, request_id: str = ""
                              ) -> TrafficIncident:
        """Store the incident; if an active route drives through its area while it lasts,
        store a TRAFFIC replan in the same transaction."""

        def decode(data: bytes) -> TrafficIncident:
            message = decision_pb2.TrafficIncident.FromString(data)
            return TrafficIncident(message.name.removeprefix("trafficIncidents/"), client_id,
                                   message, converters.to_datetime(message.create_time))

        codec = Codec(lambda i: converters.incident_to_proto(i).SerializeToString(), decode)

        async def work(tx: Transaction) -> TrafficIncident:
            incident = TrafficIncident(new_id(), client_id, content, self._clock())
            self._repo.insert_incident(tx, incident)
            active = await self._repo.active_plan(tx, client_id)
            if (active is not None and incident.end > incident.create_time
                    and problem.passes_through(content, problem.route_legs(
                        active.content, {v.name: v for v in active.fleet}))):
                trigger = decision_pb2.DecisionInputs(
                    trigger="ReportTrafficIncident", trigger_id=key.key if key else request_id,
                    subjects=[incident.name],
                    summary=content.description or f"traffic incident {incident.name}")
                self._replan_job(tx, active, Change(DecisionDomain.TRAFFIC,
                                                    reason=trigger.summary), trigger)
            return incident

        incident = await idempotent(self._uow, key, codec, work, request_id=request_id)
        self._wake_planner()
        return incident

    async def list_incidents(self, page: Page) -> list[TrafficIncident]:
        async with self._uow.transaction() as tx:
            return await self._repo.incident_page(tx, page)

    # events in -----------------------------------------------------------------------------

    async def on_order_event(self, tx: Transaction, subject: str, event: Any) -> None:
        """Keep the order read model and replan the active plan when one of its orders is
        cancelled or changed, or an urgent order is released while a plan is active (other
        released orders wait for the next PlanRoutes or ReplanRoutes)."""
        order: order_pb2.Order = event.order
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
            fields = ", ".join(event.update_mask.paths) or "content"
            change = Change(DecisionDomain.MANUAL_REPLAN,
                            reason=f"{order.name} changed ({fields})")
        else:
            return
        trigger = decision_pb2.DecisionInputs(trigger=subject, trigger_id=event.event_id,
                                              subjects=[order.name], summary=change.reason)
        self._replan_job(tx, active, change, trigger)

    async def on_vehicle_status(self, tx: Transaction, event: Any) -> None:
        """A vehicle with a route in the active plan broke down or went off duty: replan."""
        vehicle: vehicle_pb2.Vehicle = event.vehicle
        if vehicle.status not in (vehicle_pb2.Vehicle.STATUS_BROKEN_DOWN,
                                  vehicle_pb2.Vehicle.STATUS_OFF_DUTY):
            return
        active = await self._repo.active_plan(tx, event.client_id)
        if active is None or not any(r.vehicle == vehicle.name for r in active.content.routes):
            return
        status = vehicle_pb2.Vehicle.Status.Name(vehicle.status).removeprefix("STATUS_")
        summary = f"{vehicle.name} is {status}" + (f": {event.reason}" if event.reason else "")
        trigger = decision_pb2.DecisionInputs(
            trigger="vehicle.status_changed", trigger_id=event.event_id,
            subjects=[vehicle.name], summary=summary)
        self._replan_job(tx, active, Change(DecisionDomain.BREAKDOWN, reason=summary), trigger)

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
            plan_id=plan.id, request=plan.request.SerializeToString(),
            fleet=routing_service_pb2.ListVehiclesResponse(
                vehicles=plan.fleet).SerializeToString(),
            epoch=plan.epoch, incidents=tuple(i.SerializeToString() for i in incidents),
            time_limit=plan.request.time_limit.ToTimedelta().total_seconds(),
            osrm_url=self._osrm_url, replan=replan)

    async def _replan_inputs(self, tx: Transaction, plan: RoutePlan, active: RoutePlan,
                             now: datetime) -> tuple[RoutePlan, ReplanInput]:
        """The replan's problem as it should be now (see `problem.replan_scope`). What is
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
        vehicles = [converters.vehicle_to_proto(v)
                    for v in await self._repo.vehicles(tx, plan.client_id)]
        scope = problem.replan_scope(active.content, active.request.shipments, proposed,
                                     change.added, orders, vehicles, now)
        request = routing_service_pb2.PlanRoutesRequest(
            orders=[s.id for s in scope.shipments if s.id.startswith("orders/")],
            shipments=scope.shipments, vehicles=[v.name for v in scope.fleet],
            time_limit=plan.request.time_limit, objective=active.request.objective)
        inputs = ReplanInput(
            previous=active.content.SerializeToString(),
            previous_request=active.request.SerializeToString(),
            now=int((now - active.epoch).total_seconds()), domain=change.domain.name,
            cancelled=tuple(sorted(scope.cancelled)), broken=tuple(sorted(scope.broken)),
            added=tuple(sorted(scope.added)), reason=change.reason)
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
            content = route_plan_pb2.RoutePlan.FromString(result.content)
            if result.error or not result.feasible:
                if result.error:
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
        shipments = {s.id: s for s in plan.request.shipments}
        proposed = problem.solution_from_plan(plan.content, shipments, plan.epoch)
        before = None
        fleets = list(plan.fleet)
        if active is not None:
            before = problem.solution_from_plan(
                active.content, {s.id: s for s in active.request.shipments}, active.epoch)
            fleets += active.fleet
        fixed = {sid for r in plan.content.routes for s in r.stops if s.fixed
                 for sid in _stop_ids(s, shipments)}
        diff = autonomy.diff_plans(before, proposed, vehicles=problem.cost_models(fleets),
                                   fixed=fixed)
        policy = converters.policy_for(await self._repo.policy(tx, client_id), plan.domain)
        verdict = autonomy.decide(policy, diff)
        decision = Decision(
            id=new_id(), client_id=client_id, state=DecisionState.PENDING, domain=plan.domain,
            level=int(policy.level), plan_id=plan.id,
            previous_plan_id=active.id if active else "",
            content=decision_pb2.Decision(inputs=plan.trigger,
                                          diff=converters.diff_to_proto(diff),
                                          flagged=verdict.flagged,
                                          flag_reasons=list(verdict.reasons)),
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
            tx.publish(self._events.decision_pending(
                client_id, converters.decision_to_proto(decision), now))
        return touched

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
        message = converters.plan_to_proto(plan)
        if active is None:
            tx.publish(self._events.route_planned(plan.client_id, message, now))
        else:
            tx.publish(self._events.route_updated(
                plan.client_id, message, converters.decision_to_proto(decision), now))
        return decision, plan


def _stop_ids(stop: route_plan_pb2.RouteStop,
              shipments: dict[str, routing_service_pb2.Shipment]) -> list[str]:
    shipment = shipments.get(stop.shipment)
    if shipment is None:
        return []
    ids = stop_ids(stop.shipment, shipment.HasField("pickup"))
    return [ids[0] if stop.kind == route_plan_pb2.RouteStop.KIND_PICKUP else ids[-1]]


def _check_dimensions(shipments: Sequence[routing_service_pb2.Shipment], paths: Sequence[str],
                      fleet: Sequence[Vehicle]) -> None:
    """A shipment may only demand dimensions every vehicle of the plan declares."""
    v = Violations()
    declared = {vehicle.name: {q.dimension for q in vehicle.content.capacities}
                for vehicle in fleet}
    for shipment, path in zip(shipments, paths, strict=True):
        for j, quantity in enumerate(shipment.demands):
            if quantity.amount <= 0:
                continue
            lacking = [name for name, dims in declared.items() if quantity.dimension not in dims]
            if lacking:
                label = problem.dimension_label(quantity.dimension)
                names = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more"
                                                   if len(lacking) > 3 else "")
                field = (f"{path}.demands[{j}].dimension" if path.startswith("shipments")
                         else path)
                what = "" if path.startswith("shipments") else f"{shipment.id} "
                v.add(field, f"{what}demands {label}, which {names} "
                             f"{'does' if len(lacking) == 1 else 'do'} not declare",
                      "DIMENSION_NOT_DECLARED")
    v.raise_if_any("a shipment demands a capacity dimension a vehicle of the plan lacks")
