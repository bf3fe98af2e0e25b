"""BatchGenerateDocuments as a long-running operation on the kit's Operations service."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2_grpc
from google.longrunning import operations_proto_pb2 as ops

from cartage.document.v1 import document_service_pb2 as ds
from tests import document_samples as samples
from tests.integration.document.conftest import Docs
from tests.support import eventually, raises_rpc, violations

pytestmark = pytest.mark.integration


def _meta(client_id: str) -> list[tuple[str, str]]:
    return [("x-cartage-client-id", client_id)]


async def _operation(channel: grpc.aio.Channel, client_id: str, name: str) -> Any:
    stub = operations_pb2_grpc.OperationsStub(channel)
    return await stub.GetOperation(ops.GetOperationRequest(name=name),
                                   metadata=_meta(client_id), timeout=30)


def _labels(n: int, prefix: str) -> ds.BatchGenerateDocumentsRequest:
    return ds.BatchGenerateDocumentsRequest(requests=[
        ds.GenerateDocumentRequest(subject=f"orders/{prefix}-{i}",
                                   shipping_label=samples.label(f"{prefix}-{i:04d}"))
        for i in range(n)], request_id=f"batch-{prefix}")


async def test_500_labels_as_an_operation(doc_channel) -> None:
    docs = Docs(doc_channel, f"client-{uuid.uuid4().hex[:10]}")
    prefix = uuid.uuid4().hex[:6].upper()
    operation = await docs.BatchGenerateDocuments(_labels(500, prefix))
    assert operation.name.startswith("operations/document/") and not operation.done
    again = await docs.BatchGenerateDocuments(_labels(500, prefix))  # same request_id
    assert again.name == operation.name

    async def finished() -> Any:
        return await _operation(doc_channel, docs.client_id, operation.name)
    done = await eventually(finished, seconds=120, interval=0.5, until=lambda o: o.done)
    response = ds.BatchGenerateDocumentsResponse()
    assert done.response.Unpack(response)
    assert [d.subject for d in response.documents] == [f"orders/{prefix}-{i}" for i in range(500)]
    assert len({d.sha256 for d in response.documents}) == 500  # each label its own content
    metadata = ds.BatchGenerateDocumentsMetadata()
    done.metadata.Unpack(metadata)
    assert (metadata.total, metadata.completed) == (500, 500)
    verdict = await docs.VerifyDocumentChain(ds.VerifyDocumentChainRequest())
    assert (verdict.valid, verdict.records_checked) == (True, 500)
    with raises_rpc(grpc.StatusCode.NOT_FOUND):  # another client's operation
        await _operation(doc_channel, "client-other", operation.name)


async def test_a_bad_item_fails_the_batch_before_any_work(doc_channel) -> None:
    docs = Docs(doc_channel, f"client-{uuid.uuid4().hex[:10]}")
    request = _labels(5, "BAD")
    request.requests[3].shipping_label.tracking_number = "not valid!"
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await docs.BatchGenerateDocuments(request)
    assert set(violations(caught[0])) == {"requests[3].shipping_label.tracking_number"}
    listed = await operations_pb2_grpc.OperationsStub(doc_channel).ListOperations(
        ops.ListOperationsRequest(name="operations/document"), metadata=_meta(docs.client_id))
    assert list(listed.operations) == []


async def test_a_cancelled_batch_keeps_what_it_made(doc_channel) -> None:
    docs = Docs(doc_channel, f"client-{uuid.uuid4().hex[:10]}")
    operation = await docs.BatchGenerateDocuments(_labels(1000, uuid.uuid4().hex[:6].upper()))
    stub = operations_pb2_grpc.OperationsStub(doc_channel)
    await stub.CancelOperation(ops.CancelOperationRequest(name=operation.name),
                               metadata=_meta(docs.client_id))
    done = await _operation(doc_channel, docs.client_id, operation.name)
    assert done.done and done.error.code == grpc.StatusCode.CANCELLED.value[0]
    metadata = ds.BatchGenerateDocumentsMetadata()
    done.metadata.Unpack(metadata)
    assert metadata.completed < 1000
    listed = await docs.ListDocuments(ds.ListDocumentsRequest(page_size=1000))
    assert len(listed.documents) == metadata.completed
    await stub.DeleteOperation(ops.DeleteOperationRequest(name=operation.name),
                               metadata=_meta(docs.client_id))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await _operation(doc_channel, docs.client_id, operation.name)
