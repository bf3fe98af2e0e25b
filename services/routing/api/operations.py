"""The standard `google.longrunning.Operations` service for PlanRoutes and ReplanRoutes.

An operation (`operations/{id}`) is a view of its route plan: its metadata is the plan's
progress, it is done when the plan left SOLVING, and its response is the plan (or an error, see
`converters.operation_to_proto`). Operations are scoped to the caller like everything else.
"""

from __future__ import annotations

import asyncio

import grpc
from google.longrunning import operations_pb2_grpc, operations_proto_pb2
from google.protobuf import empty_pb2

from services.kit.auth import current_caller
from services.kit.errors import InvalidArgument
from services.kit.filtering import parse_filter
from services.kit.validation import Violations, parse_name
from services.routing.api import converters
from services.routing.api.servicer import WATCH_REREAD_S, newest_key, next_token, page_of
from services.routing.domain.model import PlanState
from services.routing.use_cases import PlanUseCases

ops = operations_proto_pb2
#: WaitOperation without a timeout waits at most this long (then returns the operation as is).
MAX_WAIT_S = 60.0


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    def __init__(self, plans: PlanUseCases) -> None:
        self._plans = plans

    async def GetOperation(self, request: ops.GetOperationRequest,
                           context: grpc.aio.ServicerContext) -> ops.Operation:
        caller = current_caller()
        operation_id = parse_name(request.name, "operations")
        return converters.operation_to_proto(
            *await self._plans.get_operation(caller.client_id, operation_id))

    async def ListOperations(self, request: ops.ListOperationsRequest,
                             context: grpc.aio.ServicerContext) -> ops.ListOperationsResponse:
        """Newest first; `filter` may be `done = true` or `done = false`."""
        caller = current_caller()
        if request.name not in ("", "operations"):
            raise InvalidArgument.single("name", "must be operations (or empty)")
        done = None
        for condition in parse_filter(request.filter, {"done": frozenset({"="})}):
            if condition.value.lower() not in ("true", "false"):
                raise InvalidArgument.single("filter", "done must be true or false")
            done = condition.value.lower() == "true"
        page, fingerprint, limit = page_of(caller, request, ())
        rows = await self._plans.list_operations(page, done)
        return ops.ListOperationsResponse(
            operations=[converters.operation_to_proto(row.id, plan) for row, plan in rows[:limit]],
            next_page_token=next_token([row for row, _ in rows], limit, fingerprint, newest_key))

    async def CancelOperation(self, request: ops.CancelOperationRequest,
                              context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        caller = current_caller()
        operation_id = parse_name(request.name, "operations")
        await self._plans.cancel_operation(caller.client_id, operation_id)
        return empty_pb2.Empty()

    async def DeleteOperation(self, request: ops.DeleteOperationRequest,
                              context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        caller = current_caller()
        operation_id = parse_name(request.name, "operations")
        await self._plans.delete_operation(caller.client_id, operation_id)
        return empty_pb2.Empty()

    async def WaitOperation(self, request: ops.WaitOperationRequest,
                            context: grpc.aio.ServicerContext) -> ops.Operation:
        """Returns when the operation is done or `timeout` (at most 60 s) has passed,
        whichever comes first, with the operation as it is then."""
        caller = current_caller()
        v = Violations()
        operation_id = v.resource_id(request.name, "operations")
        if request.HasField("timeout") and request.timeout.ToTimedelta().total_seconds() < 0:
            v.add("timeout", "must not be negative", "OUT_OF_RANGE")
        v.raise_if_any()
        wait = MAX_WAIT_S
        if request.HasField("timeout"):
            wait = min(wait, request.timeout.ToTimedelta().total_seconds())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            operation_id, plan = await self._plans.get_operation(caller.client_id,
                                                                   operation_id)
            left = deadline - loop.time()
            if plan.state != PlanState.SOLVING or left <= 0:
                return converters.operation_to_proto(operation_id, plan)
            await self._plans.changes.wait(plan.id, min(left, WATCH_REREAD_S))

