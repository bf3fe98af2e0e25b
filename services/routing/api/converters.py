"""Contract messages to and from the domain. Pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from cartage.routing.v1 import decision_pb2, route_plan_pb2, vehicle_pb2
from services.kit.uow import Codec
from services.routing.domain import autonomy
from services.routing.domain.model import (
    AutonomyPolicy,
    Decision,
    DecisionDomain,
    RoutePlan,
    TrafficIncident,
    Vehicle,
)

# Fields of `Vehicle` the server owns; whatever a client sends there is ignored.
VEHICLE_OUTPUT_ONLY = ("name", "status", "create_time", "update_time", "etag")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(target: timestamp_pb2.Timestamp, moment: datetime) -> None:
    delta = moment - _EPOCH
    target.seconds = delta.days * 86400 + delta.seconds
    target.nanos = delta.microseconds * 1000


def to_datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


# --------------------------------------------------------------------------- vehicles


def vehicle_content(message: vehicle_pb2.Vehicle) -> vehicle_pb2.Vehicle:
    """The client-owned part of a vehicle (output-only fields cleared)."""
    content = vehicle_pb2.Vehicle()
    content.CopyFrom(message)
    for field in VEHICLE_OUTPUT_ONLY:
        content.ClearField(field)
    return content


def vehicle_to_proto(vehicle: Vehicle) -> vehicle_pb2.Vehicle:
    message = vehicle_pb2.Vehicle()
    message.CopyFrom(vehicle.content)
    message.name = vehicle.name
    message.status = vehicle_pb2.Vehicle.Status.ValueType(vehicle.status)
    set_timestamp(message.create_time, vehicle.create_time)
    set_timestamp(message.update_time, vehicle.update_time)
    message.etag = vehicle.etag
    return message


# --------------------------------------------------------------------------- plans, decisions


def plan_to_proto(plan: RoutePlan) -> route_plan_pb2.RoutePlan:
    message = route_plan_pb2.RoutePlan()
    message.CopyFrom(plan.content)
    message.name = plan.name
    message.state = route_plan_pb2.RoutePlan.State.ValueType(plan.state)
    message.objective.CopyFrom(plan.request.objective)
    message.previous_plan = f"routePlans/{plan.previous_plan_id}" if plan.previous_plan_id else ""
    message.decision = f"decisions/{plan.decision_id}" if plan.decision_id else ""
    set_timestamp(message.create_time, plan.create_time)
    set_timestamp(message.update_time, plan.update_time)
    message.etag = plan.etag
    return message


def decision_to_proto(decision: Decision) -> decision_pb2.Decision:
    message = decision_pb2.Decision()
    message.CopyFrom(decision.content)
    message.name = decision.name
    message.domain = decision_pb2.DecisionDomain.ValueType(decision.domain)
    message.level = decision_pb2.AutonomyLevel.ValueType(decision.level)
    message.state = decision_pb2.Decision.State.ValueType(decision.state)
    message.proposed_plan = f"routePlans/{decision.plan_id}"
    message.previous_plan = (f"routePlans/{decision.previous_plan_id}"
                             if decision.previous_plan_id else "")
    set_timestamp(message.create_time, decision.create_time)
    if decision.decide_time is not None:
        set_timestamp(message.decide_time, decision.decide_time)
    return message


def diff_to_proto(diff: autonomy.PlanDiff) -> decision_pb2.PlanDiff:
    return decision_pb2.PlanDiff(
        stops_moved=diff.stops_moved, stops_compared=diff.stops_compared,
        moved_share=diff.moved_share, added=list(diff.added), removed=list(diff.removed),
        moved=list(diff.moved), cost_delta=diff.cost_delta,
        cost_change_ratio=diff.cost_change_ratio, distance_delta_meters=diff.distance_delta_m)


def incident_to_proto(incident: TrafficIncident) -> decision_pb2.TrafficIncident:
    message = decision_pb2.TrafficIncident()
    message.CopyFrom(incident.content)
    message.name = incident.name
    set_timestamp(message.create_time, incident.create_time)
    return message


# --------------------------------------------------------------------------- autonomy policy


def domain_policy(policy: AutonomyPolicy, domain: DecisionDomain) -> decision_pb2.DomainPolicy:
    """The domain's entry with the defaults filled in (L1, 10 % moved, 5 % cost)."""
    defaults = autonomy.DomainPolicy()
    entry = decision_pb2.DomainPolicy(
        domain=decision_pb2.DecisionDomain.ValueType(domain),
        level=decision_pb2.AutonomyLevel.ValueType(defaults.level),
        max_moved_share=defaults.max_moved_share,
        max_cost_increase=defaults.max_cost_increase)
    stored = policy.domains.get(domain)
    if stored is not None:
        entry.level = stored.level or entry.level
        if stored.HasField("max_moved_share"):
            entry.max_moved_share = stored.max_moved_share
        if stored.HasField("max_cost_increase"):
            entry.max_cost_increase = stored.max_cost_increase
    return entry


def policy_to_proto(policy: AutonomyPolicy) -> decision_pb2.AutonomyPolicy:
    """Every domain, explicitly, so a client sees the levels in force."""
    message = decision_pb2.AutonomyPolicy(
        name="autonomyPolicy", etag=policy.etag,
        domains=[domain_policy(policy, domain) for domain in DecisionDomain])
    if policy.update_time is not None:
        set_timestamp(message.update_time, policy.update_time)
    return message


def policy_for(policy: AutonomyPolicy, domain: DecisionDomain) -> autonomy.DomainPolicy:
    entry = domain_policy(policy, domain)
    return autonomy.DomainPolicy(autonomy.Level(entry.level), entry.max_moved_share,
                                 entry.max_cost_increase)


def _encode_text(value: str) -> bytes:
    return value.encode()


def _decode_text(data: bytes) -> str:
    return data.decode()


#: Idempotent verbs that start a job store the id they created; a repeat reads it afresh.
ID_CODEC: Codec[str] = Codec(_encode_text, _decode_text)
