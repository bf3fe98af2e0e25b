"""SQL for the routing schema, in SQLAlchemy Core. Every query is scoped to one client, except
the planner's start-up scan for plans left SOLVING."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2
from services.kit.uow import Transaction
from services.routing.adapters.tables import (
    decisions,
    incidents,
    milestones,
    operations,
    orders,
    policies,
    route_plans,
    vehicles,
)
from services.routing.conversion import trigger_from_proto, trigger_to_proto
from services.routing.domain.incoming import MilestoneRecorded
from services.routing.domain.model import (
    AutonomyPolicy,
    Change,
    Decision,
    DecisionDomain,
    DecisionState,
    Operation,
    PlanState,
    RoutePlan,
    TrafficIncident,
    Vehicle,
    VehicleStatus,
)
from services.routing.domain.tracking import StopMilestone
from services.routing.use_cases.ports import Page

_OPERATORS = {"=": operator.eq, "!=": operator.ne}


def _where(table: sa.Table, page: Page) -> list[sa.ColumnElement[bool]]:
    return [table.c.client_id == page.client_id,
            *(_OPERATORS[op](table.c[field], value) for field, op, value in page.filters)]


def _newest_first(table: sa.Table, page: Page) -> sa.Select[Any]:
    statement = sa.select(table).where(*_where(table, page))
    if page.after is not None:
        key = sa.tuple_(table.c.create_time, table.c.id)
        after = sa.tuple_(sa.literal(datetime.fromisoformat(page.after[0])),
                          sa.literal(page.after[1]))
        statement = statement.where(key < after)
    return statement.order_by(table.c.create_time.desc(), table.c.id.desc()).limit(page.limit)


# --------------------------------------------------------------------------- row mapping


def _vehicle(row: Any) -> Vehicle:
    return Vehicle(row.id, row.client_id, VehicleStatus(row.status),
                   vehicle_pb2.Vehicle.FromString(row.body), row.create_time, row.update_time,
                   row.version)


def _fleet(data: bytes) -> tuple[vehicle_pb2.Vehicle, ...]:
    return tuple(routing_service_pb2.ListVehiclesResponse.FromString(data).vehicles)


def _change(data: dict[str, Any] | None) -> Change | None:
    if data is None:
        return None
    return Change(DecisionDomain[data["domain"]], frozenset(data["added"]), data["reason"])


def _change_json(change: Change | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {"domain": change.domain.name, "added": sorted(change.added),
            "reason": change.reason}


def _plan(row: Any) -> RoutePlan:
    return RoutePlan(
        id=row.id, client_id=row.client_id, state=PlanState(row.state),
        domain=DecisionDomain(row.domain),
        request=routing_service_pb2.PlanRoutesRequest.FromString(row.request),
        fleet=_fleet(row.fleet), epoch=row.epoch,
        content=route_plan_pb2.RoutePlan.FromString(row.body),
        trigger=trigger_from_proto(decision_pb2.DecisionInputs.FromString(row.trigger)),
        create_time=row.create_time, update_time=row.update_time, change=_change(row.change),
        previous_plan_id=row.previous_plan_id, decision_id=row.decision_id,
        cancel_requested=row.cancel_requested, version=row.version)


def _plan_values(plan: RoutePlan) -> dict[str, Any]:
    return {
        "id": plan.id, "client_id": plan.client_id, "state": int(plan.state),
        "domain": int(plan.domain), "create_time": plan.create_time,
        "update_time": plan.update_time, "version": plan.version, "epoch": plan.epoch,
        "previous_plan_id": plan.previous_plan_id, "decision_id": plan.decision_id,
        "cancel_requested": plan.cancel_requested, "change": _change_json(plan.change),
        "request": plan.request.SerializeToString(),
        "fleet": routing_service_pb2.ListVehiclesResponse(
            vehicles=plan.fleet).SerializeToString(),
        "trigger": trigger_to_proto(plan.trigger).SerializeToString(),
        "body": plan.content.SerializeToString(),
    }


def _decision(row: Any) -> Decision:
    return Decision(row.id, row.client_id, DecisionState(row.state), DecisionDomain(row.domain),
                    row.level, row.plan_id, row.previous_plan_id,
                    decision_pb2.Decision.FromString(row.body), row.create_time,
                    row.decide_time)


def _decision_values(decision: Decision) -> dict[str, Any]:
    return {
        "id": decision.id, "client_id": decision.client_id, "state": int(decision.state),
        "domain": int(decision.domain), "level": decision.level, "plan_id": decision.plan_id,
        "previous_plan_id": decision.previous_plan_id, "create_time": decision.create_time,
        "decide_time": decision.decide_time, "body": decision.content.SerializeToString(),
    }


def _incident(row: Any) -> TrafficIncident:
    return TrafficIncident(row.id, row.client_id,
                           decision_pb2.TrafficIncident.FromString(row.body), row.create_time)


# --------------------------------------------------------------------------- repository


class RoutingRepository:
    """The use cases' `ports.Repository`."""

    async def lock_fleet(self, tx: Transaction, client_id: str) -> None:
        """Serialise the transactions that change a client's active plan or its decisions."""
        await tx.execute(sa.select(sa.func.pg_advisory_xact_lock(
            sa.func.hashtextextended(sa.literal(f"routing-fleet:{client_id}"), 0))))

    # vehicles ------------------------------------------------------------------------------

    def insert_vehicle(self, tx: Transaction, vehicle: Vehicle) -> None:
        tx.insert(vehicles, [{
            "client_id": vehicle.client_id, "id": vehicle.id, "status": int(vehicle.status),
            "create_time": vehicle.create_time, "update_time": vehicle.update_time,
            "version": vehicle.version, "body": vehicle.content.SerializeToString()}])

    def save_vehicle(self, tx: Transaction, vehicle: Vehicle) -> None:
        tx.defer(sa.update(vehicles).where(
            vehicles.c.client_id == vehicle.client_id, vehicles.c.id == vehicle.id).values(
            status=int(vehicle.status), update_time=vehicle.update_time,
            version=vehicle.version, body=vehicle.content.SerializeToString()))

    def delete_vehicle(self, tx: Transaction, vehicle: Vehicle) -> None:
        tx.defer(sa.delete(vehicles).where(vehicles.c.client_id == vehicle.client_id,
                                           vehicles.c.id == vehicle.id))

    async def vehicle(self, tx: Transaction, client_id: str, vehicle_id: str, *,
                      for_update: bool = False) -> Vehicle | None:
        query = sa.select(vehicles).where(vehicles.c.client_id == client_id,
                                          vehicles.c.id == vehicle_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _vehicle(row)

    async def vehicles(self, tx: Transaction, client_id: str, ids: Iterable[str] | None = None,
                       status: VehicleStatus | None = None) -> list[Vehicle]:
        query = sa.select(vehicles).where(vehicles.c.client_id == client_id)
        if ids is not None:
            query = query.where(vehicles.c.id.in_(list(ids)))
        if status is not None:
            query = query.where(vehicles.c.status == int(status))
        return [_vehicle(row) for row in await tx.execute(query.order_by(vehicles.c.id))]

    async def vehicle_page(self, tx: Transaction, page: Page) -> list[Vehicle]:
        query = sa.select(vehicles).where(*_where(vehicles, page))
        if page.after is not None:
            query = query.where(vehicles.c.id > page.after[0])
        rows = await tx.execute(query.order_by(vehicles.c.id).limit(page.limit))
        return [_vehicle(row) for row in rows]

    # orders (read model) -------------------------------------------------------------------

    async def upsert_order(self, tx: Transaction, order: order_pb2.Order) -> bool:
        """Store the order unless a newer version is stored already; True if it was applied."""
        version = int(order.etag.removeprefix("v") or 0)
        values = {"client_id": order.client_id, "name": order.name, "state": order.state,
                  "mode": order.mode, "priority": order.priority, "version": version,
                  "update_time": order.update_time.ToDatetime(tzinfo=UTC),
                  "body": order.SerializeToString()}
        statement = pg_insert(orders).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[orders.c.client_id, orders.c.name],
            set_={k: statement.excluded[k] for k in ("state", "mode", "priority", "version",
                                                     "update_time", "body")},
            where=orders.c.version < statement.excluded.version,
        ).returning(orders.c.name)
        return (await tx.execute(statement)).first() is not None

    async def record_milestone(self, tx: Transaction, milestone: MilestoneRecorded,
                               now: datetime) -> None:
        """Keep the milestone (the earliest event time of its stop and type)."""
        statement = pg_insert(milestones).values(
            client_id=milestone.client_id, order_name=milestone.order,
            stop_id=milestone.stop_id, type=milestone.type, event_time=milestone.event_time,
            record_time=now)
        await tx.execute(statement.on_conflict_do_update(
            index_elements=[milestones.c.client_id, milestones.c.order_name,
                            milestones.c.stop_id, milestones.c.type],
            set_={"event_time": sa.func.least(milestones.c.event_time,
                                              statement.excluded.event_time)}))

    async def milestones(self, tx: Transaction, client_id: str, orders: Iterable[str]
                         ) -> list[StopMilestone]:
        rows = await tx.execute(sa.select(
            milestones.c.order_name, milestones.c.stop_id, milestones.c.type).where(
            milestones.c.client_id == client_id, milestones.c.order_name.in_(list(orders))))
        return [StopMilestone(row.order_name, row.stop_id, row.type) for row in rows]

    async def orders(self, tx: Transaction, client_id: str, names: Iterable[str]
                     ) -> dict[str, order_pb2.Order]:
        rows = await tx.execute(sa.select(orders.c.name, orders.c.body).where(
            orders.c.client_id == client_id, orders.c.name.in_(list(names))))
        return {row.name: order_pb2.Order.FromString(row.body) for row in rows}

    async def plannable_orders(self, tx: Transaction, client_id: str,
                               states: Sequence[int], mode: int) -> list[order_pb2.Order]:
        rows = await tx.execute(sa.select(orders.c.body).where(
            orders.c.client_id == client_id, orders.c.state.in_(list(states)),
            orders.c.mode == mode).order_by(orders.c.name))
        return [order_pb2.Order.FromString(row.body) for row in rows]

    # plans ---------------------------------------------------------------------------------

    def insert_plan(self, tx: Transaction, plan: RoutePlan) -> None:
        tx.insert(route_plans, [_plan_values(plan)])

    async def save_plan(self, tx: Transaction, plan: RoutePlan) -> None:
        """Written at once: a plan's state changes are ordered (one active plan per client)."""
        values = _plan_values(plan)
        del values["id"], values["client_id"], values["create_time"]
        await tx.execute(sa.update(route_plans).where(route_plans.c.id == plan.id).values(values))

    async def plan(self, tx: Transaction, client_id: str | None, plan_id: str, *,
                   for_update: bool = False) -> RoutePlan | None:
        """`client_id=None` only for the planner, which works for every client."""
        query = sa.select(route_plans).where(route_plans.c.id == plan_id)
        if client_id is not None:
            query = query.where(route_plans.c.client_id == client_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _plan(row)

    async def active_plan(self, tx: Transaction, client_id: str, *, for_update: bool = False
                          ) -> RoutePlan | None:
        query = sa.select(route_plans).where(route_plans.c.client_id == client_id,
                                             route_plans.c.state == int(PlanState.ACTIVE))
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _plan(row)

    async def plan_page(self, tx: Transaction, page: Page) -> list[RoutePlan]:
        return [_plan(row) for row in await tx.execute(_newest_first(route_plans, page))]

    async def solving_plans(self, tx: Transaction) -> list[tuple[str, str]]:
        """(client id, plan id) of every plan SOLVING, oldest first."""
        rows = await tx.execute(sa.select(route_plans.c.client_id, route_plans.c.id).where(
            route_plans.c.state == int(PlanState.SOLVING)).order_by(
            route_plans.c.create_time, route_plans.c.id))
        return [(row.client_id, row.id) for row in rows]

    # operations ----------------------------------------------------------------------------

    def insert_operation(self, tx: Transaction, row: Operation) -> None:
        tx.insert(operations, [{"id": row.id, "client_id": row.client_id,
                                "plan_id": row.plan_id, "method": row.method,
                                "create_time": row.create_time}])

    async def operation(self, tx: Transaction, client_id: str, operation_id: str
                        ) -> Operation | None:
        row = (await tx.execute(sa.select(operations).where(
            operations.c.client_id == client_id, operations.c.id == operation_id))
        ).one_or_none()
        return None if row is None else Operation(**row._mapping)

    async def operation_page(self, tx: Transaction, page: Page, done: bool | None
                             ) -> list[tuple[Operation, RoutePlan]]:
        plans = route_plans.alias("p")
        query = sa.select(operations, plans).join(
            plans, plans.c.id == operations.c.plan_id).where(
            operations.c.client_id == page.client_id)
        if done is not None:
            solving = plans.c.state == int(PlanState.SOLVING)
            query = query.where(~solving if done else solving)
        if page.after is not None:
            key = sa.tuple_(operations.c.create_time, operations.c.id)
            after = sa.tuple_(sa.literal(datetime.fromisoformat(page.after[0])),
                              sa.literal(page.after[1]))
            query = query.where(key < after)
        query = query.order_by(operations.c.create_time.desc(), operations.c.id.desc())
        out = []
        for row in (await tx.execute(query.limit(page.limit))).all():
            values = row._mapping
            operation = Operation(*(values[c] for c in operations.c))
            plan = _plan(_Prefixed(values, plans))
            out.append((operation, plan))
        return out

    def delete_operation(self, tx: Transaction, client_id: str, operation_id: str) -> None:
        tx.defer(sa.delete(operations).where(operations.c.client_id == client_id,
                                             operations.c.id == operation_id))

    # decisions -----------------------------------------------------------------------------

    def insert_decision(self, tx: Transaction, decision: Decision) -> None:
        tx.insert(decisions, [_decision_values(decision)])

    async def save_decision(self, tx: Transaction, decision: Decision) -> None:
        values = _decision_values(decision)
        await tx.execute(sa.update(decisions).where(decisions.c.id == decision.id).values(values))

    async def decision(self, tx: Transaction, client_id: str, decision_id: str, *,
                       for_update: bool = False) -> Decision | None:
        query = sa.select(decisions).where(decisions.c.client_id == client_id,
                                           decisions.c.id == decision_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _decision(row)

    async def pending_decisions(self, tx: Transaction, client_id: str) -> list[Decision]:
        rows = await tx.execute(sa.select(decisions).where(
            decisions.c.client_id == client_id,
            decisions.c.state == int(DecisionState.PENDING)).order_by(decisions.c.create_time))
        return [_decision(row) for row in rows]

    async def decision_page(self, tx: Transaction, page: Page) -> list[Decision]:
        return [_decision(row) for row in await tx.execute(_newest_first(decisions, page))]

    # autonomy policy -----------------------------------------------------------------------

    async def policy(self, tx: Transaction, client_id: str, *, for_update: bool = False
                     ) -> AutonomyPolicy:
        query = sa.select(policies).where(policies.c.client_id == client_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        if row is None:
            return AutonomyPolicy(client_id)
        message = decision_pb2.AutonomyPolicy.FromString(row.body)
        return AutonomyPolicy(client_id, {DecisionDomain(e.domain): e for e in message.domains},
                              row.update_time, row.version)

    async def save_policy(self, tx: Transaction, policy: AutonomyPolicy) -> None:
        body = decision_pb2.AutonomyPolicy(domains=list(policy.domains.values()))
        values = {"client_id": policy.client_id, "version": policy.version,
                  "update_time": policy.update_time, "body": body.SerializeToString()}
        statement = pg_insert(policies).values(values)
        await tx.execute(statement.on_conflict_do_update(
            index_elements=[policies.c.client_id],
            set_={k: statement.excluded[k] for k in ("version", "update_time", "body")}))

    # traffic incidents ---------------------------------------------------------------------

    def insert_incident(self, tx: Transaction, incident: TrafficIncident) -> None:
        tx.insert(incidents, [{
            "id": incident.id, "client_id": incident.client_id,
            "create_time": incident.create_time, "start_time": incident.start,
            "end_time": incident.end, "body": incident.content.SerializeToString()}])

    async def incident_page(self, tx: Transaction, page: Page) -> list[TrafficIncident]:
        return [_incident(row) for row in await tx.execute(_newest_first(incidents, page))]

    async def incidents_until(self, tx: Transaction, client_id: str, after: datetime
                              ) -> list[decision_pb2.TrafficIncident]:
        """The client's incidents that are not over by `after`."""
        rows = await tx.execute(sa.select(incidents.c.body).where(
            incidents.c.client_id == client_id, incidents.c.end_time > after))
        return [decision_pb2.TrafficIncident.FromString(row.body) for row in rows]


class _Prefixed:
    """Attribute access to the columns of one aliased table inside a joined row."""

    def __init__(self, mapping: Any, table: Any) -> None:
        self._mapping = mapping
        self._table = table

    def __getattr__(self, name: str) -> Any:
        return self._mapping[self._table.c[name]]
