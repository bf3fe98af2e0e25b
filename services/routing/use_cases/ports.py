"""What the use cases need from the outside, as Protocols; the composition root (`app.py`) hands
them the adapters and codecs that implement these. The use cases import no adapter, no api and
no conversion module, so what they do can be read, and tested, without SQL, NATS or the wire.

Also here: the query type of list calls (`Page`) and the values that cross into a solver
worker and back (`SolveJob`, `ReplanInput`, `JobResult`), which the planner adapter runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2

if TYPE_CHECKING:
    # Only the Protocols use these. A solver worker process imports this module for the job
    # values and should not load SQLAlchemy (kit.uow) and gRPC (domain.model's errors).
    from cartage.order.v1 import order_pb2
    from services.kit.idempotency import Codec
    from services.kit.uow import OutgoingEvent, Transaction
    from services.routing.domain.autonomy import PlanDiff, Verdict
    from services.routing.domain.incoming import MilestoneRecorded
    from services.routing.domain.model import (
        AutonomyPolicy,
        Decision,
        Operation,
        RoutePlan,
        TrafficIncident,
        Trigger,
        Vehicle,
        VehicleStatus,
    )
    from services.routing.domain.tracking import StopMilestone


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a client's rows, newest first (or by id for vehicles). `filters` are
    (column name, operator, typed value) triples already validated by the API layer."""

    client_id: str
    filters: tuple[tuple[str, str, Any], ...]
    after: tuple[Any, ...] | None
    limit: int


class Repository(Protocol):
    """The routing schema (`adapters.repository.RoutingRepository`). Methods that only queue a
    write (`insert_*`, `save_vehicle`, `delete_*`) are not awaited; see the kit's Transaction."""

    async def lock_fleet(self, tx: Transaction, client_id: str) -> None: ...

    def insert_vehicle(self, tx: Transaction, vehicle: Vehicle) -> None: ...
    def save_vehicle(self, tx: Transaction, vehicle: Vehicle) -> None: ...
    def delete_vehicle(self, tx: Transaction, vehicle: Vehicle) -> None: ...
    async def vehicle(self, tx: Transaction, client_id: str, vehicle_id: str, *,
                      for_update: bool = False) -> Vehicle | None: ...
    async def vehicles(self, tx: Transaction, client_id: str, ids: Iterable[str] | None = None,
                       status: VehicleStatus | None = None) -> list[Vehicle]: ...
    async def vehicle_page(self, tx: Transaction, page: Page) -> list[Vehicle]: ...

    async def upsert_order(self, tx: Transaction, order: order_pb2.Order) -> bool: ...
    async def record_milestone(self, tx: Transaction, milestone: MilestoneRecorded,
                               now: datetime) -> None: ...
    async def milestones(self, tx: Transaction, client_id: str, orders: Iterable[str]
                         ) -> list[StopMilestone]: ...
    async def orders(self, tx: Transaction, client_id: str, names: Iterable[str]
                     ) -> dict[str, order_pb2.Order]: ...
    async def plannable_orders(self, tx: Transaction, client_id: str, states: Sequence[int],
                               mode: int) -> list[order_pb2.Order]: ...

    def insert_plan(self, tx: Transaction, plan: RoutePlan) -> None: ...
    async def save_plan(self, tx: Transaction, plan: RoutePlan) -> None: ...
    async def plan(self, tx: Transaction, client_id: str | None, plan_id: str, *,
                   for_update: bool = False) -> RoutePlan | None: ...
    async def active_plan(self, tx: Transaction, client_id: str, *, for_update: bool = False
                          ) -> RoutePlan | None: ...
    async def plan_page(self, tx: Transaction, page: Page) -> list[RoutePlan]: ...
    async def solving_plans(self, tx: Transaction) -> list[tuple[str, str]]: ...

    def insert_operation(self, tx: Transaction, operation: Operation) -> None: ...
    async def operation(self, tx: Transaction, client_id: str, operation_id: str
                        ) -> Operation | None: ...
    async def operation_page(self, tx: Transaction, page: Page, done: bool | None
                             ) -> list[tuple[Operation, RoutePlan]]: ...
    def delete_operation(self, tx: Transaction, client_id: str, operation_id: str) -> None: ...

    def insert_decision(self, tx: Transaction, decision: Decision) -> None: ...
    async def save_decision(self, tx: Transaction, decision: Decision) -> None: ...
    async def decision(self, tx: Transaction, client_id: str, decision_id: str, *,
                       for_update: bool = False) -> Decision | None: ...
    async def pending_decisions(self, tx: Transaction, client_id: str) -> list[Decision]: ...
    async def decision_page(self, tx: Transaction, page: Page) -> list[Decision]: ...

    async def policy(self, tx: Transaction, client_id: str, *, for_update: bool = False
                     ) -> AutonomyPolicy: ...
    async def save_policy(self, tx: Transaction, policy: AutonomyPolicy) -> None: ...

    def insert_incident(self, tx: Transaction, incident: TrafficIncident) -> None: ...
    async def incident_page(self, tx: Transaction, page: Page) -> list[TrafficIncident]: ...
    async def incidents_until(self, tx: Transaction, client_id: str, after: datetime
                              ) -> list[decision_pb2.TrafficIncident]: ...


class Events(Protocol):
    """The events the use cases publish, built from domain objects (`adapters.events`)."""

    def route_planned(self, plan: RoutePlan, when: datetime) -> OutgoingEvent: ...
    def route_updated(self, plan: RoutePlan, decision: Decision, when: datetime
                      ) -> OutgoingEvent: ...
    def decision_pending(self, decision: Decision, when: datetime) -> OutgoingEvent: ...
    def vehicle_status_changed(self, vehicle: Vehicle, previous: VehicleStatus, reason: str,
                               when: datetime) -> OutgoingEvent: ...


class Messages(Protocol):
    """Contract forms the use cases store inside domain content, and the codecs of idempotent
    results (`conversion.Codecs`)."""

    def vehicle_message(self, vehicle: Vehicle) -> vehicle_pb2.Vehicle: ...
    def decision_content(self, trigger: Trigger, diff: PlanDiff, verdict: Verdict
                         ) -> decision_pb2.Decision: ...
    def vehicle_codec(self, client_id: str, vehicle_id: str) -> Codec[Vehicle]: ...
    def incident_codec(self, client_id: str) -> Codec[TrafficIncident]: ...


class PlanComparer(Protocol):
    """How a solved plan differs from the active one (`adapters.solving.plans.PlanComparer`):
    the comparison runs on the solver's model of both plans, which the use cases never see."""

    def diff(self, before: RoutePlan | None, proposed: RoutePlan) -> PlanDiff: ...


# --------------------------------------------------------------------------- solver jobs


@dataclass(frozen=True)
class ReplanInput:
    """What a replan adds to a job: the active plan it starts from and what changed."""

    previous: route_plan_pb2.RoutePlan  # the active plan's content
    previous_request: routing_service_pb2.PlanRoutesRequest  # its shipments
    now: int  # seconds from the epoch
    domain: str  # autonomy.Domain value
    cancelled: tuple[str, ...]
    broken: tuple[str, ...]
    added: tuple[str, ...]
    reason: str
    # The tracking service's milestones of the plan's stops (solver stop ids); without any
    # (`tracked` False) the planned departures decide what is completed.
    tracked: bool = False
    completed: tuple[str, ...] = ()
    arrived: tuple[str, ...] = ()


@dataclass(frozen=True)
class SolveJob:
    """Everything a worker process needs. Picklable (protobuf messages pickle as their bytes),
    which is how the planner hands it to a worker process."""

    plan_id: str
    request: routing_service_pb2.PlanRoutesRequest  # resolved shipments and vehicle names
    fleet: tuple[vehicle_pb2.Vehicle, ...]
    epoch: datetime
    incidents: tuple[decision_pb2.TrafficIncident, ...]
    time_limit: float
    osrm_url: str = ""
    replan: ReplanInput | None = None


@dataclass(frozen=True)
class JobResult:
    """The plan's output fields, whether they passed the feasibility check, whether the job was
    cancelled, and an error when no result could be produced (then `content` is empty)."""

    content: route_plan_pb2.RoutePlan
    feasible: bool
    cancelled: bool = False
    error: str = ""
