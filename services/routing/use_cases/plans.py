"""Route plans, independent of gRPC: each method is one transaction.

PlanRoutes and ReplanRoutes store a SOLVING plan and its operation for the planner, and plans
are read here. Their operations are in `operations.py`, decisions and the autonomy policy in
`decisions.py`, traffic incidents in `incidents.py`; what the planner and the event consumers
call is in `jobs.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import route_plan_pb2, routing_service_pb2
from services.kit.errors import CartageError, FailedPrecondition, InvalidArgument
from services.kit.idempotency import IdempotencyKey, idempotent
from services.kit.uow import Transaction, UnitOfWork
from services.kit.validation import Violations
from services.routing.domain import shipments as shipping
from services.routing.domain.model import (
    Change,
    DecisionDomain,
    Operation,
    PlanState,
    RoutePlan,
    Trigger,
    Vehicle,
    VehicleStatus,
    new_id,
)
from services.routing.use_cases.ports import Events, Messages, Page, Repository
from services.routing.use_cases.shared import (
    ID_CODEC,
    PlanChanges,
    PlannerSignals,
    UseCaseBase,
    utc_now,
)

PLANNABLE_ORDER_STATES = (order_pb2.Order.STATE_RELEASED, order_pb2.Order.STATE_PLANNED)
# How long PlanRoutes waits for the orders it is asked about to reach this service's read model
# (order events arrive ~0.1 s after the order service answered): a release followed at once by
# a plan plans the released order instead of refusing it. Only a refusal waits.
READ_MODEL_WAIT_S = 3.0
READ_MODEL_POLL_S = 0.05


class PlanUseCases(UseCaseBase):
    def __init__(
        self,
        uow: UnitOfWork,
        repository: Repository,
        events: Events,
        messages: Messages,
        changes: PlanChanges,
        *,
        max_shipments: int,
        default_time_limit: float,
        clock: Callable[[], datetime] = utc_now,
        planner: PlannerSignals | None = None,
        read_model_wait: float = READ_MODEL_WAIT_S,
    ) -> None:
        super().__init__(uow, repository, events, messages, changes,
                         default_time_limit=default_time_limit, clock=clock, planner=planner)
        self._max_shipments = max_shipments
        self._read_model_wait = read_model_wait

    # planning requests ---------------------------------------------------------------------

    async def plan_routes(self, client_id: str, request: routing_service_pb2.PlanRoutesRequest,
                          key: IdempotencyKey | None, request_id: str = "") -> str:
        """Resolve and check the request, then store the SOLVING plan and its operation in one
        transaction. Returns the operation id (a repeat under the same key returns the first)."""

        async def work(tx: Transaction) -> str:
            nonlocal orders_refused
            now = self._clock()
            fleet = await self._plan_fleet(tx, client_id, list(request.vehicles))
            measured = {q.dimension for v in fleet for q in v.content.capacities}
            shipments = list(request.shipments)
            paths = [f"shipments[{i}]" for i in range(len(shipments))]
            if request.orders or not request.shipments:
                try:
                    orders = await self._plan_orders(tx, client_id, list(request.orders))
                except CartageError:
                    orders_refused = True
                    raise
                shipments += [shipping.order_shipment(o, measured) for o in orders]
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
            fleet_protos = tuple(self._messages.vehicle_message(v) for v in fleet)
            trigger = Trigger(
                "PlanRoutes", request.request_id or request_id,
                (*resolved.orders, *resolved.vehicles),
                f"plan {_count(len(shipments), 'shipment')} on {_count(len(fleet), 'vehicle')}")
            plan = RoutePlan(
                id=new_id(), client_id=client_id, state=PlanState.SOLVING,
                domain=DecisionDomain.INITIAL_PLAN, request=resolved, fleet=fleet_protos,
                epoch=shipping.epoch_of(fleet_protos), content=route_plan_pb2.RoutePlan(),
                trigger=trigger, create_time=now, update_time=now)
            self._repo.insert_plan(tx, plan)
            operation = Operation(new_id(), client_id, plan.id, "PlanRoutes", now)
            self._repo.insert_operation(tx, operation)
            return operation.id

        # The orders' part of the checks reads the read model of the order service's events,
        # which lags it a little: a refusal there is retried until the read model has had time
        # to catch up (READ_MODEL_WAIT_S), then stands.
        deadline = time.monotonic() + self._read_model_wait
        orders_refused = False
        while True:
            orders_refused = False
            try:
                operation_id = await idempotent(self._uow, key, ID_CODEC, work,
                                                request_id=request_id)
                break
            except CartageError:
                if not orders_refused or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(READ_MODEL_POLL_S)
        self._planner.wake()
        return operation_id

    async def _plan_fleet(self, tx: Transaction, client_id: str, names: list[str]
                          ) -> list[Vehicle]:
        if not names:
            fleet = await self._repo.vehicles(tx, client_id, status=VehicleStatus.AVAILABLE)
            if not fleet:  # a question of state, not of the request
                raise FailedPrecondition(
                    "no vehicle is AVAILABLE: create vehicles or set their status",
                    reason="NO_VEHICLE_AVAILABLE")
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
            if not orders:  # a question of state, not of the request
                raise FailedPrecondition(
                    "no released own-fleet order waits for planning; release orders, name "
                    "them or give shipments", reason="NO_ORDER_TO_PLAN")
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
            trigger = Trigger("ReplanRoutes", key.key if key else request_id, (active.name,),
                              reason or "replan asked for")
            plan = self._replan_job(tx, active, Change(DecisionDomain.MANUAL_REPLAN,
                                                       reason=reason), trigger, time_limit)
            operation = Operation(new_id(), client_id, plan.id, "ReplanRoutes",
                                     plan.create_time)
            self._repo.insert_operation(tx, operation)
            return operation.id

        operation_id = await idempotent(self._uow, key, ID_CODEC, work,
                                        request_id=request_id)
        self._planner.wake()
        return operation_id

    # plans ---------------------------------------------------------------------------------

    async def get_plan(self, client_id: str, plan_id: str) -> RoutePlan:
        async with self._uow.transaction() as tx:
            return await self._plan(tx, client_id, plan_id)

    async def list_plans(self, page: Page) -> list[RoutePlan]:
        async with self._uow.transaction() as tx:
            return await self._repo.plan_page(tx, page)




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
                label = shipping.dimension_label(quantity.dimension)
                names = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more"
                                                   if len(lacking) > 3 else "")
                field = (f"{path}.demands[{j}].dimension" if path.startswith("shipments")
                         else path)
                what = "" if path.startswith("shipments") else f"{shipment.id} "
                v.add(field, f"{what}demands {label}, which {names} "
                             f"{'does' if len(lacking) == 1 else 'do'} not declare",
                      "DIMENSION_NOT_DECLARED")
    v.raise_if_any("a shipment demands a capacity dimension a vehicle of the plan lacks")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
