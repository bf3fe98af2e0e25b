"""The standard `google.longrunning.Operations` service, for any service with slow work.

The mechanism lives here: operation names, the `done` filter, keyset pages, WaitOperation's
bounded wait, caller scoping. What an operation *is* (a route plan being solved, a bulk job)
is the service's: it implements `OperationStore` and hands it to `OperationsServicer`.

Names say which service owns an operation, `operations/{service}/{id}`, so that the gateway
can route Operations calls (whose gRPC path is the same for every service) by the service
segment. A service that issued `operations/{id}` before may still accept that form on input
(`accept_unqualified=True`): stored rows and partner clients keep the names they were given;
every name it returns is the qualified one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.longrunning import operations_pb2_grpc, operations_proto_pb2
from google.protobuf import empty_pb2

from services.kit.auth import current_caller
from services.kit.errors import InvalidArgument
from services.kit.filtering import parse_filter
from services.kit.pagination import Keyset
from services.kit.validation import RESOURCE_ID, Violations

ops = operations_proto_pb2
COLLECTION = "operations"
#: WaitOperation without a timeout waits at most this long (then returns the operation as is).
MAX_WAIT_S = 60.0
#: How often a wait re-reads its operation without a notice (changes made by another process).
REREAD_S = 1.0
_SERVICE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class OperationNames:
    """Builds and parses `operations/{service}/{id}` (and, if accepted, `operations/{id}`)."""

    def __init__(self, service: str, *, id_pattern: re.Pattern[str] = RESOURCE_ID,
                 accept_unqualified: bool = False) -> None:
        if not _SERVICE.match(service):
            raise ValueError(f"service {service!r} cannot be a name segment")
        self.service = service
        self.prefix = f"{COLLECTION}/{service}/"
        self._id = id_pattern
        self._unqualified = accept_unqualified

    def name(self, operation_id: str) -> str:
        return self.prefix + operation_id

    def parse(self, name: str, v: Violations, field: str = "name") -> str:
        """The id inside the name, or a violation on `field`."""
        if name.startswith(self.prefix):
            operation_id = name.removeprefix(self.prefix)
        elif self._unqualified and name.startswith(f"{COLLECTION}/"):
            operation_id = name.removeprefix(f"{COLLECTION}/")
        else:
            operation_id = ""
        if not self._id.match(operation_id):
            v.add(field, f"must look like {self.prefix}{{id}}", "INVALID_NAME")
        return operation_id

    def parse_one(self, name: str, field: str = "name") -> str:
        v = Violations()
        operation_id = self.parse(name, v, field)
        v.raise_if_any()
        return operation_id


@dataclass(frozen=True, slots=True)
class ListedOperation:
    """One row of a page: its keyset sort key (strings, the same length for every row) and the
    operation."""

    key: tuple[str, ...]
    operation: operations_proto_pb2.Operation


class OperationStore(Protocol):
    """What a service implements. Every call is scoped to the caller's client id; an operation
    of another client is NOT_FOUND like a missing one. Operations carry their full name."""

    async def get(self, client_id: str, operation_id: str) -> operations_proto_pb2.Operation:
        ...

    async def list(self, client_id: str, done: bool | None, after: tuple[str, ...] | None,
                   limit: int) -> Sequence[ListedOperation]:
        """Up to `limit` operations after the key `after` in the store's order (newest first
        is usual); `done` None means both. A malformed `after` is INVALID_ARGUMENT."""
        ...

    async def cancel(self, client_id: str, operation_id: str) -> None: ...

    async def delete(self, client_id: str, operation_id: str) -> None: ...

    async def wait(self, client_id: str, operation_id: str, seconds: float) -> None:
        """Return when the operation may have changed, or after `seconds`."""
        ...


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    """Serve `store`'s operations under `names` (or the plain service name, which gives the
    default `OperationNames`; a store that builds operation names shares one with the
    servicer). `key_length` is the number of parts of the store's keyset sort key."""

    def __init__(self, names: OperationNames | str, store: OperationStore, *,
                 key_length: int = 2, max_wait_s: float = MAX_WAIT_S,
                 reread_s: float = REREAD_S) -> None:
        self.names = OperationNames(names) if isinstance(names, str) else names
        self._store = store
        self._key_length = key_length
        self._max_wait_s = max_wait_s
        self._reread_s = reread_s

    async def GetOperation(self, request: ops.GetOperationRequest,
                           context: grpc.aio.ServicerContext) -> ops.Operation:
        caller = current_caller()
        return await self._store.get(caller.client_id, self.names.parse_one(request.name))

    async def ListOperations(self, request: ops.ListOperationsRequest,
                             context: grpc.aio.ServicerContext) -> ops.ListOperationsResponse:
        """`filter` may be `done = true` or `done = false`."""
        caller = current_caller()
        if request.name not in ("", COLLECTION, self.names.prefix.rstrip("/")):
            raise InvalidArgument.single("name", "must be operations (or empty)")
        done = None
        for condition in parse_filter(request.filter, {"done": frozenset({"="})}):
            if condition.value.lower() not in ("true", "false"):
                raise InvalidArgument.single("filter", "done must be true or false")
            done = condition.value.lower() == "true"
        page = Keyset.of(request, caller.client_id, request.filter, arity=self._key_length,
                         parse=_strings)
        rows = await self._store.list(caller.client_id, done, page.after, page.fetch)
        return ops.ListOperationsResponse(
            operations=[row.operation for row in rows[:page.limit]],
            next_page_token=page.next_token(rows, lambda row: row.key))

    async def CancelOperation(self, request: ops.CancelOperationRequest,
                              context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        caller = current_caller()
        await self._store.cancel(caller.client_id, self.names.parse_one(request.name))
        return empty_pb2.Empty()

    async def DeleteOperation(self, request: ops.DeleteOperationRequest,
                              context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        caller = current_caller()
        await self._store.delete(caller.client_id, self.names.parse_one(request.name))
        return empty_pb2.Empty()

    async def WaitOperation(self, request: ops.WaitOperationRequest,
                            context: grpc.aio.ServicerContext) -> ops.Operation:
        """Returns when the operation is done or `timeout` (at most `max_wait_s`) has passed,
        whichever comes first, with the operation as it is then."""
        caller = current_caller()
        v = Violations()
        operation_id = self.names.parse(request.name, v)
        wait = self._max_wait_s
        if request.HasField("timeout"):
            # Not ToTimedelta: a huge `seconds` would overflow it (OverflowError, INTERNAL).
            asked = request.timeout.seconds + request.timeout.nanos / 1e9
            if asked < 0:
                v.add("timeout", "must not be negative", "OUT_OF_RANGE")
            wait = min(wait, asked)
        v.raise_if_any()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            operation = await self._store.get(caller.client_id, operation_id)
            left = deadline - loop.time()
            if operation.done or left <= 0:
                return operation
            await self._store.wait(caller.client_id, operation_id, min(left, self._reread_s))



def _strings(after: tuple[Any, ...]) -> tuple[Any, ...]:
    if not all(isinstance(value, str) for value in after):
        raise ValueError("not a token this API issued")
    return after
