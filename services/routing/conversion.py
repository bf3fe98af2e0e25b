"""Contract messages to and from the routing domain, and the codecs built on them. Pure, no I/O.

Neutral ground between the rooms: the api (servicer) and the adapters (events, planner) use it;
the use cases do not import it (they get `Codecs` from the composition root, typed by their
`ports.Messages`), so they never depend on how a domain object looks on the wire.
"""

from __future__ import annotations

from cartage.routing.v1 import decision_pb2, route_plan_pb2, vehicle_pb2
from services.kit.clock import set_timestamp, to_datetime
from services.kit.idempotency import Codec
from services.routing.domain import autonomy
from services.routing.domain.model import (
    AutonomyPolicy,
    Decision,
    DecisionDomain,
    RoutePlan,
    TrafficIncident,
    Trigger,
    Vehicle,
    VehicleStatus,
)

# Fields of `Vehicle` the server owns; whatever a client sends there is ignored.
VEHICLE_OUTPUT_ONLY = ("name", "status", "create_time", "update_time", "etag")

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


def trigger_to_proto(trigger: Trigger) -> decision_pb2.DecisionInputs:
    return decision_pb2.DecisionInputs(trigger=trigger.trigger, trigger_id=trigger.trigger_id,
                                       subjects=list(trigger.subjects), summary=trigger.summary)


def trigger_from_proto(message: decision_pb2.DecisionInputs) -> Trigger:
    return Trigger(message.trigger, message.trigger_id, tuple(message.subjects), message.summary)


def incident_to_proto(incident: TrafficIncident) -> decision_pb2.TrafficIncident:
    message = decision_pb2.TrafficIncident()
    message.CopyFrom(incident.content)
    message.name = incident.name
    set_timestamp(message.create_time, incident.create_time)
    return message


# --------------------------------------------------------------------------- autonomy policy


def domain_policy(policy: AutonomyPolicy, domain: DecisionDomain) -> decision_pb2.DomainPolicy:
    """The domain's entry with the defaults filled in (`AutonomyPolicy.for_domain`)."""
    in_force = policy.for_domain(domain)
    return decision_pb2.DomainPolicy(
        domain=decision_pb2.DecisionDomain.ValueType(domain),
        level=decision_pb2.AutonomyLevel.ValueType(in_force.level),
        max_moved_share=in_force.max_moved_share,
        max_cost_increase=in_force.max_cost_increase)


def policy_to_proto(policy: AutonomyPolicy) -> decision_pb2.AutonomyPolicy:
    """Every domain, explicitly, so a client sees the levels in force."""
    message = decision_pb2.AutonomyPolicy(
        name="autonomyPolicy", etag=policy.etag,
        domains=[domain_policy(policy, domain) for domain in DecisionDomain])
    if policy.update_time is not None:
        set_timestamp(message.update_time, policy.update_time)
    return message


# --------------------------------------------------------------------------- the use cases' port


class Codecs:
    """`use_cases.ports.Messages`: what the use cases need in contract form (the vehicles a plan
    was made for, a decision's content) and how idempotent results are stored and replayed."""

    def vehicle_message(self, vehicle: Vehicle) -> vehicle_pb2.Vehicle:
        return vehicle_to_proto(vehicle)

    def decision_content(self, trigger: Trigger, diff: autonomy.PlanDiff,
                         verdict: autonomy.Verdict) -> decision_pb2.Decision:
        return decision_pb2.Decision(inputs=trigger_to_proto(trigger), diff=diff_to_proto(diff),
                                     flagged=verdict.flagged, flag_reasons=list(verdict.reasons))

    def vehicle_codec(self, client_id: str, vehicle_id: str) -> Codec[Vehicle]:
        def decode(data: bytes) -> Vehicle:
            message = vehicle_pb2.Vehicle.FromString(data)
            return Vehicle(vehicle_id, client_id, VehicleStatus(message.status),
                           vehicle_content(message), to_datetime(message.create_time),
                           to_datetime(message.update_time),
                           int(message.etag.removeprefix("v")))

        return Codec(lambda v: vehicle_to_proto(v).SerializeToString(), decode)

    def incident_codec(self, client_id: str) -> Codec[TrafficIncident]:
        def decode(data: bytes) -> TrafficIncident:
            message = decision_pb2.TrafficIncident.FromString(data)
            return TrafficIncident(message.name.removeprefix("trafficIncidents/"), client_id,
                                   message, to_datetime(message.create_time))

        return Codec(lambda i: incident_to_proto(i).SerializeToString(), decode)
