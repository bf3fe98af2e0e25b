"""Routing's side of `google.longrunning.Operations` (the mechanism is `services.kit.operations`).

An operation (`operations/routing/{id}`) of PlanRoutes or ReplanRoutes is a view of its route
plan: its metadata is the plan's progress, it is done when the plan left SOLVING, and its
response is the plan (or an error, see `operation_to_proto`). Routing issued `operations/{id}`
before names carried the service, so that form is still accepted on input.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.longrunning import operations_proto_pb2
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from cartage.routing.v1 import routing_service_pb2
from services.kit.errors import ERROR_DOMAIN, InvalidArgument
from services.kit.operations import ListedOperation, OperationNames
from services.routing import conversion
from services.routing.domain.model import PlanState, RoutePlan
from services.routing.use_cases import OperationUseCases
from services.routing.use_cases.ports import Page

SERVICE = "routing"


def operation_names() -> OperationNames:
    return OperationNames(SERVICE, accept_unqualified=True)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _status(code: int, message: str, reason: str, plan: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN,
                                       metadata={"route_plan": plan})
    return status_pb2.Status(code=code, message=message, details=[_pack(info)])


def operation_to_proto(name: str, plan: RoutePlan) -> operations_proto_pb2.Operation:
    """An operation is a view of its plan: done once the plan left SOLVING; its response is
    the plan, or an error when no plan came out (cancelled before a feasible plan was found,
    or no plan passed the feasibility check)."""
    metadata = routing_service_pb2.PlanRoutesMetadata(
        route_plan=plan.name, progress=plan.content.progress,
        shipments=len(plan.request.shipments), vehicles=len(plan.request.vehicles))
    operation = operations_proto_pb2.Operation(
        name=name, metadata=_pack(metadata), done=plan.state != PlanState.SOLVING)
    if plan.state == PlanState.CANCELLED:
        operation.error.CopyFrom(_status(
            code_pb2.CANCELLED, "cancelled before a feasible plan was found",
            "OPERATION_CANCELLED", plan.name))
    elif plan.state == PlanState.FAILED:
        problems = "; ".join(plan.content.violations[:3]) or "no details"
        operation.error.CopyFrom(_status(
            code_pb2.FAILED_PRECONDITION, f"no plan passed the feasibility check: {problems}",
            "NO_FEASIBLE_PLAN", plan.name))
    elif operation.done:
        operation.response.Pack(conversion.plan_to_proto(plan))
    return operation


def _iso(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


class RoutingOperations:
    """The kit's `OperationStore` over the operation use cases; newest first."""

    def __init__(self, operations: OperationUseCases, names: OperationNames) -> None:
        self._operations = operations
        self.names = names

    async def get(self, client_id: str, operation_id: str) -> operations_proto_pb2.Operation:
        operation_id, plan = await self._operations.get_operation(client_id, operation_id)
        return operation_to_proto(self.names.name(operation_id), plan)

    async def list(self, client_id: str, done: bool | None, after: tuple[str, ...] | None,
                   limit: int) -> Sequence[ListedOperation]:
        if after is not None and not _iso(after[0]):
            raise InvalidArgument.single("page_token", "is not a token this API issued")
        rows = await self._operations.list_operations(Page(client_id, (), after, limit), done)
        return [ListedOperation((row.create_time.isoformat(), row.id),
                                operation_to_proto(self.names.name(row.id), plan))
                for row, plan in rows]

    async def cancel(self, client_id: str, operation_id: str) -> None:
        await self._operations.cancel_operation(client_id, operation_id)

    async def delete(self, client_id: str, operation_id: str) -> None:
        await self._operations.delete_operation(client_id, operation_id)

    async def wait(self, client_id: str, operation_id: str, seconds: float) -> None:
        # The operation's plan never changes, so this read only finds the plan to wait on.
        _, plan = await self._operations.get_operation(client_id, operation_id)
        await self._operations.changes.wait(plan.id, seconds)
