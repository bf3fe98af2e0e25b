"""Tracking's side of `google.longrunning.Operations` (the mechanism is `kit.operations`): the
ReplayWebhookEvents operations, `operations/tracking/{id}`. A replay is scheduled in one
statement, so its operation is done from the start; cancelling a done operation does nothing
(AIP-151), deleting it forgets it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.longrunning import operations_proto_pb2

from cartage.tracking.v1 import webhook_service_pb2
from services.kit.errors import InvalidArgument
from services.kit.operations import ListedOperation, OperationNames
from services.tracking.use_cases.webhooks import Endpoints

SERVICE = "tracking"


def operation_to_proto(names: OperationNames, row: Any) -> operations_proto_pb2.Operation:
    operation = operations_proto_pb2.Operation(name=names.name(row.id), done=True)
    operation.metadata.Pack(webhook_service_pb2.ReplayWebhookEventsMetadata(
        webhook_endpoint=f"webhookEndpoints/{row.endpoint_id}"))
    operation.response.Pack(webhook_service_pb2.ReplayWebhookEventsResponse(
        deliveries_scheduled=row.scheduled))
    return operation


class ReplayOperations:
    """The kit's `OperationStore` over the replays; newest first."""

    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints
        self.names = OperationNames(SERVICE)

    async def get(self, client_id: str, operation_id: str) -> operations_proto_pb2.Operation:
        return operation_to_proto(self.names,
                                  await self._endpoints.replay_of(client_id, operation_id))

    async def list(self, client_id: str, done: bool | None, after: tuple[str, ...] | None,
                   limit: int) -> Sequence[ListedOperation]:
        if done is False:
            return []
        parsed = None
        if after is not None:
            try:
                parsed = (datetime.fromisoformat(after[0]), after[1])
            except ValueError:
                raise InvalidArgument.single("page_token", "is not a token this API issued"
                                             ) from None
        rows = await self._endpoints.replays(client_id, parsed, limit)
        return [ListedOperation((row.create_time.isoformat(), row.id),
                                operation_to_proto(self.names, row)) for row in rows]

    async def cancel(self, client_id: str, operation_id: str) -> None:
        await self._endpoints.replay_of(client_id, operation_id)  # NOT_FOUND if not ours

    async def delete(self, client_id: str, operation_id: str) -> None:
        await self._endpoints.delete_replay(client_id, operation_id)

    async def wait(self, client_id: str, operation_id: str, seconds: float) -> None:
        await self._endpoints.replay_of(client_id, operation_id)  # done: nothing to wait for
