"""The routing aggregates: vehicles, route plans, decisions, traffic incidents and the autonomy
policy, with the state machines that say how each may change.

As in the order service, each aggregate keeps its client-owned content as the contract's message
(a `Vehicle`, the output parts of a `RoutePlan`, a `Decision`) next to the columns the rules and
queries need (client, state, times, version). The rules live here; field-level checks live in
`api/validation.py` next to the field paths they report.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from cartage.routing.v1 import decision_pb2, route_plan_pb2, routing_service_pb2, vehicle_pb2
from services.kit.domain import check_etag, check_transition, final_states
from services.kit.errors import FailedPrecondition
from services.routing.domain import autonomy


def new_id() -> str:
    """128 random bits as 32 hex characters."""
    return os.urandom(16).hex()


# --------------------------------------------------------------------------- vehicles


class VehicleStatus(enum.IntEnum):
    """Mirrors `Vehicle.Status` numbers."""

    AVAILABLE = 1
    OFF_DUTY = 2
    BROKEN_DOWN = 3


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A vehicle of one client's fleet. `content` holds the writable fields of the contract."""

    id: str
    client_id: str
    status: VehicleStatus
    content: vehicle_pb2.Vehicle
    create_time: datetime
    update_time: datetime
    version: int = 1

    @property
    def name(self) -> str:
        return f"vehicles/{self.id}"

    @property
    def etag(self) -> str:
        return f"v{self.version}"

    @classmethod
    def create(cls, client_id: str, vehicle_id: str, content: vehicle_pb2.Vehicle,
               now: datetime) -> Vehicle:
        return cls(vehicle_id, client_id, VehicleStatus.AVAILABLE, content, now, now)

    def check_etag(self, etag: str) -> None:
        check_etag(etag, self.etag, "vehicle")

    def update_content(self, content: vehicle_pb2.Vehicle, now: datetime) -> Vehicle:
        return replace(self, content=content, update_time=now, version=self.version + 1)

    def set_status(self, status: VehicleStatus, now: datetime) -> Vehicle:
        """Any status may follow any other (a repaired truck becomes AVAILABLE again)."""
        return replace(self, status=status, update_time=now, version=self.version + 1)


# --------------------------------------------------------------------------- decision domains


class DecisionDomain(enum.IntEnum):
    """Mirrors `DecisionDomain` numbers; names match `autonomy.Domain` values."""

    INITIAL_PLAN = 1
    CANCELLATION = 2
    BREAKDOWN = 3
    TRAFFIC = 4
    URGENT_INSERTION = 5
    MANUAL_REPLAN = 6
    DELAY = 7


# --------------------------------------------------------------------------- route plans


class PlanState(enum.IntEnum):
    """Mirrors `RoutePlan.State` numbers."""

    SOLVING = 1
    PROPOSED = 2
    ACTIVE = 3
    SUPERSEDED = 4
    REJECTED = 5
    CANCELLED = 6
    FAILED = 7


PLAN_TRANSITIONS: dict[PlanState, frozenset[PlanState]] = {
    PlanState.SOLVING: frozenset({PlanState.PROPOSED, PlanState.FAILED, PlanState.CANCELLED}),
    PlanState.PROPOSED: frozenset({PlanState.ACTIVE, PlanState.REJECTED, PlanState.SUPERSEDED}),
    PlanState.ACTIVE: frozenset({PlanState.SUPERSEDED}),
    PlanState.SUPERSEDED: frozenset(),
    PlanState.REJECTED: frozenset(),
    PlanState.CANCELLED: frozenset(),
    PlanState.FAILED: frozenset(),
}
#: States a plan never leaves. WatchRoutePlan ends after sending a version in one of them; a
#: PROPOSED plan still waits for its decision and an ACTIVE one for the replan that supersedes
#: it, so a watch on those stays open.
FINAL_PLAN_STATES = final_states(PLAN_TRANSITIONS)


@dataclass(frozen=True, slots=True)
class Trigger:
    """What caused a plan (the contract's `DecisionInputs`, shown with its decision): the RPC
    or event, its request or event id, the resources it is about and one sentence."""

    trigger: str
    trigger_id: str
    subjects: tuple[str, ...]
    summary: str


@dataclass(frozen=True, slots=True)
class Change:
    """What triggered a replan, as stored with its job: its domain, the shipments it adds and
    why. The replanning module's `Change` is built from it when the job runs, against the plan
    and the state (cancelled orders, broken vehicles) of that moment."""

    domain: DecisionDomain
    added: frozenset[str] = frozenset()
    reason: str = ""


@dataclass(frozen=True)
class RoutePlan:
    """A plan of one client's fleet, from the request through solving to its decision.

    `request` is the planning request as it will be solved: for PlanRoutes the resolved
    shipments (orders converted) and vehicle names, validated when the call was accepted; for a
    replan it is filled in when the job starts, from the plan that is active then. `fleet` is
    the vehicles as they were when the problem was built. Both are stored so that a job left
    SOLVING by a stopped service is solved again from exactly what was accepted.
    `content` holds the output fields of the contract's RoutePlan (routes, unassigned, totals,
    solver, progress, violations, objective).
    """

    id: str
    client_id: str
    state: PlanState
    domain: DecisionDomain
    request: routing_service_pb2.PlanRoutesRequest
    fleet: tuple[vehicle_pb2.Vehicle, ...]
    epoch: datetime
    content: route_plan_pb2.RoutePlan
    trigger: Trigger
    create_time: datetime
    update_time: datetime
    change: Change | None = None
    previous_plan_id: str = ""
    decision_id: str = ""
    cancel_requested: bool = False
    version: int = 1

    @property
    def name(self) -> str:
        return f"routePlans/{self.id}"

    @property
    def etag(self) -> str:
        return f"v{self.version}"

    @property
    def final(self) -> bool:
        return self.state in FINAL_PLAN_STATES

    def _touch(self, now: datetime, **changes: object) -> RoutePlan:
        return replace(self, update_time=now, version=self.version + 1, **changes)

    def move(self, target: PlanState, now: datetime, **changes: object) -> RoutePlan:
        check_transition(PLAN_TRANSITIONS, self.state, target, "a route plan")
        return self._touch(now, state=target, **changes)

    def with_progress(self, progress: route_plan_pb2.PlanProgress, now: datetime) -> RoutePlan:
        content = route_plan_pb2.RoutePlan()
        content.CopyFrom(self.content)
        content.progress.CopyFrom(progress)
        return self._touch(now, content=content)

    def with_inputs(self, request: routing_service_pb2.PlanRoutesRequest,
                    fleet: tuple[vehicle_pb2.Vehicle, ...], previous_plan_id: str,
                    now: datetime) -> RoutePlan:
        """A replan's problem as built when its job starts."""
        return self._touch(now, request=request, fleet=fleet, previous_plan_id=previous_plan_id)

    def request_cancel(self, now: datetime) -> RoutePlan:
        return self._touch(now, cancel_requested=True)


@dataclass(frozen=True, slots=True)
class Operation:
    """A long-running operation of PlanRoutes or ReplanRoutes: a handle on the plan it solves
    (its state and result are the plan's). `method` is the RPC that started it."""

    id: str
    client_id: str
    plan_id: str
    method: str
    create_time: datetime


# --------------------------------------------------------------------------- decisions


class DecisionState(enum.IntEnum):
    """Mirrors `Decision.State` numbers."""

    PENDING = 1
    APPLIED = 2
    REJECTED = 3
    SUPERSEDED = 4


DECISION_TRANSITIONS: dict[DecisionState, frozenset[DecisionState]] = {
    DecisionState.PENDING: frozenset(
        {DecisionState.APPLIED, DecisionState.REJECTED, DecisionState.SUPERSEDED}),
    DecisionState.APPLIED: frozenset(),
    DecisionState.REJECTED: frozenset(),
    DecisionState.SUPERSEDED: frozenset(),
}


@dataclass(frozen=True)
class Decision:
    """A proposed change to a client's active plan. `content` holds inputs, diff, flags, who
    decided and why (the contract's Decision without the columns below)."""

    id: str
    client_id: str
    state: DecisionState
    domain: DecisionDomain
    level: int
    plan_id: str
    previous_plan_id: str
    content: decision_pb2.Decision
    create_time: datetime
    decide_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"decisions/{self.id}"

    def check_pending(self) -> None:
        if self.state != DecisionState.PENDING:
            raise FailedPrecondition(
                f"decision {self.name} is {self.state.name}, not PENDING",
                reason="DECISION_NOT_PENDING",
                metadata={"state": self.state.name},
            )

    def _decide(self, target: DecisionState, now: datetime, **fields: str) -> Decision:
        if target not in DECISION_TRANSITIONS[self.state]:
            self.check_pending()
        content = decision_pb2.Decision()
        content.CopyFrom(self.content)
        for key, value in fields.items():
            setattr(content, key, value)
        return replace(self, state=target, content=content, decide_time=now)

    def apply(self, decided_by: str, now: datetime) -> Decision:
        return self._decide(DecisionState.APPLIED, now, decided_by=decided_by)

    def reject(self, decided_by: str, reason: str, now: datetime) -> Decision:
        return self._decide(DecisionState.REJECTED, now, decided_by=decided_by,
                            reject_reason=reason)

    def supersede(self, now: datetime) -> Decision:
        return self._decide(DecisionState.SUPERSEDED, now)


# --------------------------------------------------------------------------- traffic, policy


@dataclass(frozen=True, slots=True)
class TrafficIncident:
    """A slowdown in a circular area for a time span (`content` is the contract's message)."""

    id: str
    client_id: str
    content: decision_pb2.TrafficIncident
    create_time: datetime

    @property
    def name(self) -> str:
        return f"trafficIncidents/{self.id}"

    @property
    def start(self) -> datetime:
        return self.content.start_time.ToDatetime(tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.content.end_time.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class AutonomyPolicy:
    """A client's levels and L2 guardrails per decision domain. A domain without an entry is
    L1 with the default guardrails."""

    client_id: str
    domains: dict[DecisionDomain, decision_pb2.DomainPolicy] = field(default_factory=dict)
    update_time: datetime | None = None
    version: int = 0

    @property
    def etag(self) -> str:
        return f"v{self.version}"

    def check_etag(self, etag: str) -> None:
        check_etag(etag, self.etag, "autonomy policy")

    def for_domain(self, domain: DecisionDomain) -> autonomy.DomainPolicy:
        """The domain's level and guardrails, the defaults (L1, 10 % moved, 5 % cost) filling
        in what its entry leaves unset."""
        defaults = autonomy.DomainPolicy()
        stored = self.domains.get(domain)
        if stored is None:
            return defaults
        return autonomy.DomainPolicy(
            autonomy.Level(stored.level or defaults.level),
            stored.max_moved_share if stored.HasField("max_moved_share")
            else defaults.max_moved_share,
            stored.max_cost_increase if stored.HasField("max_cost_increase")
            else defaults.max_cost_increase)

    def replace_domains(self, entries: list[decision_pb2.DomainPolicy], now: datetime
                        ) -> AutonomyPolicy:
        """Replace the entries of the domains named in `entries`; others stay as they are."""
        domains = dict(self.domains)
        for entry in entries:
            domains[DecisionDomain(entry.domain)] = entry
        return replace(self, domains=domains, update_time=now, version=self.version + 1)
