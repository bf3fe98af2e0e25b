"""The RoutingService gRPC servicer: convert, call the use case, convert back. No rules here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.longrunning import operations_proto_pb2
from google.protobuf import empty_pb2

from cartage.routing.v1 import (
    decision_pb2,
    route_plan_pb2,
    routing_service_pb2,
    routing_service_pb2_grpc,
    vehicle_pb2,
)
from services.kit import constraints
from services.kit.auth import Caller, current_caller
from services.kit.errors import InvalidArgument
from services.kit.fieldmask import (
    apply_update_mask,
    check_update_mask,
    effective_update_mask,
)
from services.kit.filtering import Condition, parse_filter
from services.kit.idempotency import IdempotencyKey, request_key
from services.kit.log import request_id_var
from services.kit.pagination import Keyset, newest_key
from services.kit.validation import Violations, parse_name
from services.routing import conversion
from services.routing.api import geojson, validation
from services.routing.api.operations import RoutingOperations
from services.routing.domain.model import DecisionDomain, DecisionState, PlanState, VehicleStatus
from services.routing.use_cases import (
    DecisionUseCases,
    FleetUseCases,
    IncidentUseCases,
    PlanUseCases,
)
from services.routing.use_cases.ports import Page

pb = routing_service_pb2
# What an update mask may name: the contract's writable fields (not output-only, immutable).
VEHICLE_UPDATABLE = constraints.updatable(vehicle_pb2.Vehicle.DESCRIPTOR)
POLICY_UPDATABLE = frozenset({"domains"})
#: How often a watch re-reads its plan without a notice (changes made by another process).
WATCH_REREAD_S = 1.0


def idempotency(caller: Caller, method: str, request: Any) -> IdempotencyKey | None:
    """The AIP-155 request_id, or the Idempotency-Key header the gateway forwards."""
    return request_key(caller.client_id, caller.idempotency_key, method, request)


def enum_filter(condition: Condition, enum: type, prefix: str) -> tuple[str, str, Any]:
    """`state = ACTIVE` (or `STATE_ACTIVE`) as a typed (field, operator, number) triple."""
    name = condition.value.upper().removeprefix(prefix)
    if name not in enum.__members__:
        choices = ", ".join(enum.__members__)
        raise InvalidArgument.single(
            "filter", f"unknown {condition.field} {condition.value!r}; use one of {choices}")
    return condition.field, condition.operator, int(enum[name])


def page_of(caller: Caller, request: Any, filters: tuple[tuple[str, str, Any], ...],
            *, keyset: int = 2) -> tuple[Page, Keyset]:
    """The rows a list request asks for (one extra: is there another page?) and its page."""
    page = Keyset.of(request, caller.client_id, getattr(request, "filter", ""), arity=keyset,
                     parse=_time_first if keyset == 2 else None)
    return Page(caller.client_id, filters, page.after, page.fetch), page


def _time_first(after: tuple[Any, ...]) -> tuple[Any, ...]:
    datetime.fromisoformat(str(after[0]))  # ValueError: not a token we issued
    return after


class RoutingServicer(routing_service_pb2_grpc.RoutingServiceServicer):
    def __init__(self, fleet: FleetUseCases, plans: PlanUseCases, decisions: DecisionUseCases,
                 incidents: IncidentUseCases, operations: RoutingOperations, *,
                 max_shipments: int, max_time_limit: float) -> None:
        self._fleet = fleet
        self._plans = plans
        self._decisions = decisions
        self._incidents = incidents
        self._operations = operations
        self._max_shipments = max_shipments
        self._max_time_limit = max_time_limit

    # vehicles ------------------------------------------------------------------------------

    async def CreateVehicle(self, request: pb.CreateVehicleRequest,
                            context: grpc.aio.ServicerContext) -> vehicle_pb2.Vehicle:
        caller = current_caller()
        v = Violations()
        validation.check_vehicle_id(request.vehicle_id, v)
        if request.HasField("vehicle"):
            validation.check_vehicle(request.vehicle, v)
        else:
            v.add("vehicle", "is required", "REQUIRED")
        v.raise_if_any()
        vehicle = await self._fleet.create_vehicle(
            caller.client_id, request.vehicle_id, conversion.vehicle_content(request.vehicle),
            idempotency(caller, "CreateVehicle", request), request_id_var.get())
        return conversion.vehicle_to_proto(vehicle)

    async def GetVehicle(self, request: pb.GetVehicleRequest,
                         context: grpc.aio.ServicerContext) -> vehicle_pb2.Vehicle:
        caller = current_caller()
        v = Violations()
        vehicle_id = validation.check_vehicle_name(request.name, v)
        v.raise_if_any()
        return conversion.vehicle_to_proto(
            await self._fleet.get_vehicle(caller.client_id, vehicle_id))

    async def ListVehicles(self, request: pb.ListVehiclesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListVehiclesResponse:
        caller = current_caller()
        filters = tuple(enum_filter(c, VehicleStatus, "STATUS_") for c in parse_filter(
            request.filter, {"status": frozenset({"=", "!="})}))
        page, keys = page_of(caller, request, filters, keyset=1)
        rows = await self._fleet.list_vehicles(page)
        return pb.ListVehiclesResponse(
            vehicles=[conversion.vehicle_to_proto(r) for r in rows[:keys.limit]],
            next_page_token=keys.next_token(rows, lambda r: (r.id,)))

    async def UpdateVehicle(self, request: pb.UpdateVehicleRequest,
                            context: grpc.aio.ServicerContext) -> vehicle_pb2.Vehicle:
        caller = current_caller()
        v = Violations()
        vehicle_id = validation.check_vehicle_name(request.vehicle.name, v, "vehicle.name")
        v.raise_if_any()
        mask = effective_update_mask(request.update_mask, request.vehicle,
                                     updatable=VEHICLE_UPDATABLE)
        check_update_mask(mask, vehicle_pb2.Vehicle.DESCRIPTOR, updatable=VEHICLE_UPDATABLE)

        def apply(content: vehicle_pb2.Vehicle) -> None:
            apply_update_mask(content, request.vehicle, mask, updatable=VEHICLE_UPDATABLE)
            after = Violations()
            validation.check_vehicle(content, after)
            after.raise_if_any()

        vehicle = await self._fleet.update_vehicle(
            caller.client_id, vehicle_id, request.vehicle.etag, apply, request_id_var.get())
        return conversion.vehicle_to_proto(vehicle)

    async def DeleteVehicle(self, request: pb.DeleteVehicleRequest,
                            context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        caller = current_caller()
        v = Violations()
        vehicle_id = validation.check_vehicle_name(request.name, v)
        v.raise_if_any()
        await self._fleet.delete_vehicle(caller.client_id, vehicle_id)
        return empty_pb2.Empty()

    async def SetVehicleStatus(self, request: pb.SetVehicleStatusRequest,
                               context: grpc.aio.ServicerContext) -> vehicle_pb2.Vehicle:
        caller = current_caller()
        v = Violations()
        vehicle_id = validation.check_vehicle_name(request.name, v)
        v.enum(request.status, vehicle_pb2.Vehicle.Status.DESCRIPTOR, "status",
               allow_unspecified=False)
        v.text(request.reason, "reason", max_len=500)
        v.raise_if_any()
        vehicle = await self._fleet.set_vehicle_status(
            caller.client_id, vehicle_id, VehicleStatus(request.status), request.reason,
            request_id_var.get())
        return conversion.vehicle_to_proto(vehicle)

    # planning ------------------------------------------------------------------------------

    async def PlanRoutes(self, request: pb.PlanRoutesRequest,
                         context: grpc.aio.ServicerContext) -> operations_proto_pb2.Operation:
        caller = current_caller()
        v = Violations()
        validation.check_plan_request(request, v, max_shipments=self._max_shipments,
                                      max_time_limit=self._max_time_limit)
        v.raise_if_any()
        operation_id = await self._plans.plan_routes(
            caller.client_id, request, idempotency(caller, "PlanRoutes", request),
            request_id_var.get())
        return await self._operations.get(caller.client_id, operation_id)

    async def ReplanRoutes(self, request: pb.ReplanRoutesRequest,
                           context: grpc.aio.ServicerContext) -> operations_proto_pb2.Operation:
        caller = current_caller()
        v = Violations()
        if request.HasField("time_limit"):
            validation.check_time_limit(request.time_limit, self._max_time_limit, v)
        # Required: a replan someone asks for is recorded with its why (the decision and the
        # plan's trigger); an empty request is refused like an empty update.
        v.text(request.reason, "reason", required=True, max_len=500)
        v.raise_if_any()
        limit = (request.time_limit.ToTimedelta().total_seconds()
                 if request.HasField("time_limit") else None)
        operation_id = await self._plans.replan_routes(
            caller.client_id, limit, request.reason,
            idempotency(caller, "ReplanRoutes", request), request_id_var.get())
        return await self._operations.get(caller.client_id, operation_id)

    async def GetRoutePlan(self, request: pb.GetRoutePlanRequest,
                           context: grpc.aio.ServicerContext) -> route_plan_pb2.RoutePlan:
        caller = current_caller()
        plan_id = parse_name(request.name, "routePlans")
        return conversion.plan_to_proto(await self._plans.get_plan(caller.client_id, plan_id))

    async def ListRoutePlans(self, request: pb.ListRoutePlansRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListRoutePlansResponse:
        caller = current_caller()
        filters = tuple(enum_filter(c, PlanState, "STATE_") for c in parse_filter(
            request.filter, {"state": frozenset({"=", "!="})}))
        page, keys = page_of(caller, request, filters)
        rows = await self._plans.list_plans(page)
        return pb.ListRoutePlansResponse(
            route_plans=[conversion.plan_to_proto(r) for r in rows[:keys.limit]],
            next_page_token=keys.next_token(rows, newest_key))

    async def WatchRoutePlan(self, request: pb.WatchRoutePlanRequest,
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[route_plan_pb2.RoutePlan]:
        """The current version at once, then each new version; the stream ends after a
        version in a final state (SUPERSEDED, REJECTED, CANCELLED, FAILED)."""
        caller = current_caller()
        plan_id = parse_name(request.name, "routePlans")
        sent = 0
        while True:
            plan = await self._plans.get_plan(caller.client_id, plan_id)
            if plan.version != sent:
                sent = plan.version
                yield conversion.plan_to_proto(plan)
            if plan.final:
                return
            await self._plans.changes.wait(plan_id, WATCH_REREAD_S)

    async def ExportRoutePlan(self, request: pb.ExportRoutePlanRequest,
                              context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        caller = current_caller()
        plan_id = parse_name(request.name, "routePlans")
        plan = await self._plans.get_plan(caller.client_id, plan_id)
        body = geojson.encode(conversion.plan_to_proto(plan),
                              {vehicle.name: vehicle for vehicle in plan.fleet},
                              {s.id: s for s in plan.request.shipments})
        return httpbody_pb2.HttpBody(content_type=geojson.MEDIA_TYPE, data=body)

    # traffic -------------------------------------------------------------------------------

    async def ReportTrafficIncident(self, request: pb.ReportTrafficIncidentRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> decision_pb2.TrafficIncident:
        caller = current_caller()
        v = Violations()
        if request.HasField("traffic_incident"):
            validation.check_incident(request.traffic_incident, v)
        else:
            v.add("traffic_incident", "is required", "REQUIRED")
        v.raise_if_any()
        content = decision_pb2.TrafficIncident()
        content.CopyFrom(request.traffic_incident)
        content.ClearField("name")
        content.ClearField("create_time")
        incident = await self._incidents.report_incident(
            caller.client_id, content, idempotency(caller, "ReportTrafficIncident", request),
            request_id_var.get())
        return conversion.incident_to_proto(incident)

    async def ListTrafficIncidents(self, request: pb.ListTrafficIncidentsRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.ListTrafficIncidentsResponse:
        caller = current_caller()
        page, keys = page_of(caller, request, ())
        rows = await self._incidents.list_incidents(page)
        return pb.ListTrafficIncidentsResponse(
            traffic_incidents=[conversion.incident_to_proto(r) for r in rows[:keys.limit]],
            next_page_token=keys.next_token(rows, newest_key))

    # decisions and autonomy ----------------------------------------------------------------

    async def GetDecision(self, request: pb.GetDecisionRequest,
                          context: grpc.aio.ServicerContext) -> decision_pb2.Decision:
        caller = current_caller()
        decision_id = parse_name(request.name, "decisions")
        return conversion.decision_to_proto(
            await self._decisions.get_decision(caller.client_id, decision_id))

    async def ListDecisions(self, request: pb.ListDecisionsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListDecisionsResponse:
        caller = current_caller()
        conditions = parse_filter(request.filter, {"state": frozenset({"=", "!="}),
                                                   "domain": frozenset({"=", "!="})})
        filters = tuple(
            enum_filter(c, DecisionState, "STATE_") if c.field == "state"
            else enum_filter(c, DecisionDomain, "DECISION_DOMAIN_") for c in conditions)
        page, keys = page_of(caller, request, filters)
        rows = await self._decisions.list_decisions(page)
        return pb.ListDecisionsResponse(
            decisions=[conversion.decision_to_proto(r) for r in rows[:keys.limit]],
            next_page_token=keys.next_token(rows, newest_key))

    async def ApproveDecision(self, request: pb.ApproveDecisionRequest,
                              context: grpc.aio.ServicerContext) -> decision_pb2.Decision:
        caller = current_caller()
        decision_id = parse_name(request.name, "decisions")
        return conversion.decision_to_proto(
            await self._decisions.approve_decision(caller.client_id, decision_id))

    async def RejectDecision(self, request: pb.RejectDecisionRequest,
                             context: grpc.aio.ServicerContext) -> decision_pb2.Decision:
        caller = current_caller()
        v = Violations()
        decision_id = v.resource_id(request.name, "decisions")
        v.text(request.reason, "reason", max_len=500)
        v.raise_if_any()
        return conversion.decision_to_proto(
            await self._decisions.reject_decision(caller.client_id, decision_id, request.reason))

    async def GetAutonomyPolicy(self, request: pb.GetAutonomyPolicyRequest,
                                context: grpc.aio.ServicerContext
                                ) -> decision_pb2.AutonomyPolicy:
        caller = current_caller()
        if request.name != "autonomyPolicy":
            raise InvalidArgument.single("name", "must be autonomyPolicy")
        return conversion.policy_to_proto(await self._decisions.get_policy(caller.client_id))

    async def UpdateAutonomyPolicy(self, request: pb.UpdateAutonomyPolicyRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> decision_pb2.AutonomyPolicy:
        caller = current_caller()
        # The same rule as every Update (services.kit.fieldmask): an empty update is refused.
        mask = effective_update_mask(request.update_mask, request.autonomy_policy,
                                     updatable=POLICY_UPDATABLE)
        check_update_mask(mask, decision_pb2.AutonomyPolicy.DESCRIPTOR,
                          updatable=POLICY_UPDATABLE)
        v = Violations()
        validation.check_policy(request.autonomy_policy, v)
        v.raise_if_any()
        policy = await self._decisions.update_policy(
            caller.client_id, list(request.autonomy_policy.domains),
            request.autonomy_policy.etag)
        return conversion.policy_to_proto(policy)
