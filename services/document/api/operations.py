"""The document service's side of `google.longrunning.Operations` (the mechanism is
`services.kit.operations`): an operation `operations/document/{id}` is a view of its batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from google.longrunning import operations_proto_pb2
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from cartage.document.v1 import document_service_pb2
from services.document.conversion import document_to_proto
from services.document.domain.model import Batch, BatchState, Document
from services.document.use_cases import BatchUseCases
from services.kit.clock import set_timestamp
from services.kit.errors import ERROR_DOMAIN, InvalidArgument
from services.kit.operations import ListedOperation, OperationNames

SERVICE = "document"
NAMES = OperationNames(SERVICE)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def operation_to_proto(batch: Batch, made: Sequence[Document] = ()
                       ) -> operations_proto_pb2.Operation:
    metadata = document_service_pb2.BatchGenerateDocumentsMetadata(
        total=batch.total, completed=batch.completed)
    set_timestamp(metadata.create_time, batch.create_time)
    operation = operations_proto_pb2.Operation(name=NAMES.name(batch.id),
                                               metadata=_pack(metadata), done=batch.done)
    if batch.state is BatchState.CANCELLED:
        info = error_details_pb2.ErrorInfo(reason="OPERATION_CANCELLED", domain=ERROR_DOMAIN,
                                           metadata={"completed": str(batch.completed)})
        operation.error.CopyFrom(status_pb2.Status(
            code=code_pb2.CANCELLED,
            message=f"cancelled after {batch.completed} of {batch.total} documents (they are "
                    "kept)", details=[_pack(info)]))
    elif batch.state is BatchState.DONE:
        operation.response.Pack(document_service_pb2.BatchGenerateDocumentsResponse(
            documents=[document_to_proto(d) for d in made]))
    return operation


class DocumentOperations:
    """The kit's `OperationStore` over the batch use cases; newest first."""

    names = NAMES

    def __init__(self, batches: BatchUseCases) -> None:
        self._batches = batches

    async def get(self, client_id: str, operation_id: str) -> operations_proto_pb2.Operation:
        batch, made = await self._batches.get(client_id, operation_id)
        return operation_to_proto(batch, made)

    async def list(self, client_id: str, done: bool | None, after: tuple[str, ...] | None,
                   limit: int) -> Sequence[ListedOperation]:
        key: tuple[datetime, str] | None = None
        if after is not None:
            try:
                key = (datetime.fromisoformat(after[0]), after[1])
            except (ValueError, IndexError):
                raise InvalidArgument.single("page_token", "is not a token this API issued"
                                             ) from None
        rows = await self._batches.list(client_id, done, key, limit)
        return [ListedOperation((b.create_time.isoformat(), b.id), operation_to_proto(b))
                for b in rows]

    async def cancel(self, client_id: str, operation_id: str) -> None:
        await self._batches.cancel(client_id, operation_id)

    async def delete(self, client_id: str, operation_id: str) -> None:
        await self._batches.delete(client_id, operation_id)

    async def wait(self, client_id: str, operation_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
