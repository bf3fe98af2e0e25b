"""The DocumentService gRPC servicer: convert, call the use case, convert back. No rules here."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.longrunning import operations_proto_pb2

from cartage.document.v1 import (
    document_pb2,
    document_service_pb2,
    document_service_pb2_grpc,
)
from services.document.api.operations import DocumentOperations
from services.document.api.validation import check_batch, check_generate, check_pod
from services.document.conversion import (
    CONTENT_KINDS,
    document_to_proto,
    pod_result_to_proto,
)
from services.document.domain.model import Content, Item, Kind, State
from services.document.use_cases import BatchUseCases, DocumentUseCases, ListQuery, PodInput
from services.kit.auth import Caller, current_caller
from services.kit.clock import set_timestamp
from services.kit.errors import InvalidArgument
from services.kit.filtering import Condition, parse_filter
from services.kit.idempotency import IdempotencyKey, request_key
from services.kit.log import request_id_var
from services.kit.pagination import Keyset, newest_key, time_and_id
from services.kit.validation import Violations, parse_name

MAX_LINK_TTL = timedelta(hours=24)
FILTERS = {
    "subject": frozenset({"="}),
    "type": frozenset({"=", "!="}),
    "state": frozenset({"=", "!="}),
    "create_time": frozenset({"<", "<=", ">", ">="}),
}


def _idempotency(caller: Caller, method: str, request: Any) -> IdempotencyKey | None:
    return request_key(caller.client_id, caller.idempotency_key, method, request)


def _body(content_type: str, data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


class DocumentServicer(document_service_pb2_grpc.DocumentServiceServicer):
    def __init__(self, documents: DocumentUseCases, batches: BatchUseCases) -> None:
        self._documents = documents
        self._batches = batches
        self._operations = DocumentOperations(batches)

    async def BatchGenerateDocuments(
            self, request: document_service_pb2.BatchGenerateDocumentsRequest,
            context: grpc.aio.ServicerContext) -> operations_proto_pb2.Operation:
        caller = current_caller()
        check_batch(request)
        key = _idempotency(caller, "BatchGenerateDocuments", request)
        batch_id = await self._batches.start(
            caller.client_id, caller.token_id, len(request.requests),
            request.SerializeToString(), key, request_id_var.get())
        return await self._operations.get(caller.client_id, batch_id)

    async def GenerateDocument(self, request: document_service_pb2.GenerateDocumentRequest,
                               context: grpc.aio.ServicerContext) -> document_pb2.Document:
        caller = current_caller()
        which = check_generate(request)
        key = _idempotency(caller, "GenerateDocument", request)
        document = await self._documents.generate(
            caller.client_id, caller.token_id, CONTENT_KINDS[which], request.subject,
            getattr(request, which), key, request_id_var.get())
        return document_to_proto(document)

    async def CaptureProofOfDelivery(
            self, request: document_service_pb2.CaptureProofOfDeliveryRequest,
            context: grpc.aio.ServicerContext
    ) -> document_service_pb2.CaptureProofOfDeliveryResponse:
        caller = current_caller()
        check_pod(request)
        pod = request.proof_of_delivery

        def content(image: Any) -> Content:
            return Content(image.data, image.content_type.strip().lower())

        def items(values: Any) -> tuple[Item, ...]:
            return tuple(Item(i.code, i.quantity, i.damaged) for i in values)

        key = _idempotency(caller, "CaptureProofOfDelivery", request)
        result = await self._documents.capture_pod(
            caller.client_id, caller.token_id, request.subject,
            PodInput(pod, content(pod.signature), tuple(content(p) for p in pod.photos),
                     items(pod.expected_items), items(pod.scanned_items), pod.delivered_to),
            key, request_id_var.get())
        return pod_result_to_proto(result)

    async def GetDocument(self, request: document_service_pb2.GetDocumentRequest,
                          context: grpc.aio.ServicerContext) -> document_pb2.Document:
        caller = current_caller()
        document_id = parse_name(request.name, "documents")
        return document_to_proto(await self._documents.get(caller.client_id, document_id))

    async def ListDocuments(self, request: document_service_pb2.ListDocumentsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> document_service_pb2.ListDocumentsResponse:
        caller = current_caller()
        order_by = " ".join(request.order_by.split()).lower()
        if order_by not in ("", "create_time", "create_time asc", "create_time desc"):
            raise InvalidArgument.single("order_by", "must be `create_time desc` or `create_time`")
        descending = order_by in ("", "create_time desc")
        filters = tuple(_typed(c) for c in parse_filter(request.filter, FILTERS))
        page = Keyset.of(request, caller.client_id, request.filter, str(descending),
                         parse=time_and_id)
        rows = await self._documents.list(
            ListQuery(caller.client_id, filters, descending, page.after, page.fetch))
        return document_service_pb2.ListDocumentsResponse(
            documents=[document_to_proto(d) for d in rows[:page.limit]],
            next_page_token=page.next_token(rows, newest_key))

    async def GetDocumentContent(self, request: document_service_pb2.GetDocumentContentRequest,
                                 context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        caller = current_caller()
        document_id = parse_name(request.name, "documents")
        document, data = await self._documents.content(caller.client_id, document_id)
        return _body(document.content_type, data)

    async def VoidDocument(self, request: document_service_pb2.VoidDocumentRequest,
                           context: grpc.aio.ServicerContext) -> document_pb2.Document:
        caller = current_caller()
        v = Violations()
        document_id = v.resource_id(request.name, "documents")
        v.text(request.reason, "reason", required=True, max_len=500)
        v.raise_if_any()
        key = _idempotency(caller, "VoidDocument", request)
        document = await self._documents.void(caller.client_id, document_id, request.reason,
                                              key, request_id_var.get())
        return document_to_proto(document)

    async def CreateDownloadLink(self, request: document_service_pb2.CreateDownloadLinkRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> document_service_pb2.DownloadLink:
        caller = current_caller()
        v = Violations()
        document_id = v.resource_id(request.name, "documents")
        ttl = None
        if request.HasField("ttl"):
            ttl = request.ttl.ToTimedelta()
            if not timedelta(seconds=1) <= ttl <= MAX_LINK_TTL:
                v.add("ttl", "must be between 1 second and 24 hours", "OUT_OF_RANGE")
        v.raise_if_any()
        url, token, expires = await self._documents.create_link(caller.client_id, document_id,
                                                                ttl)
        link = document_service_pb2.DownloadLink(url=url, token=token)
        set_timestamp(link.expire_time, expires)
        return link

    async def DownloadDocument(self, request: document_service_pb2.DownloadDocumentRequest,
                               context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        # No caller identity: the signed token is the credential (see use_cases.download).
        if not request.token or len(request.token) > 500:
            raise InvalidArgument.single("token", "must be the token of a download link")
        document, data = await self._documents.download(request.token)
        return _body(document.content_type, data)

    async def VerifyDocumentChain(
            self, request: document_service_pb2.VerifyDocumentChainRequest,
            context: grpc.aio.ServicerContext
    ) -> document_service_pb2.VerifyDocumentChainResponse:
        caller = current_caller()
        verdict = await self._documents.verify_chain(caller.client_id)
        return document_service_pb2.VerifyDocumentChainResponse(
            valid=verdict.valid, records_checked=verdict.checked,
            first_broken_sequence=verdict.first_broken, problem=verdict.problem)


def _typed(condition: Condition) -> tuple[str, str, Any]:
    field, op, raw = condition.field, condition.operator, condition.value
    if field == "type":
        name = raw.upper().removeprefix("DOCUMENT_TYPE_")
        if name not in Kind.__members__:
            raise InvalidArgument.single(
                "filter", f"unknown type {raw!r}; use one of {', '.join(Kind.__members__)}")
        return field, op, int(Kind[name])
    if field == "state":
        name = raw.upper().removeprefix("STATE_")
        if name not in State.__members__:
            raise InvalidArgument.single("filter", f"unknown state {raw!r}; use ACTIVE, VOIDED")
        return field, op, int(State[name])
    if field == "create_time":
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument.single(
                "filter", f"create_time needs an RFC 3339 time, got {raw!r}") from None
        if moment.tzinfo is None:
            raise InvalidArgument.single("filter", "create_time needs a time zone (e.g. Z)")
        return field, op, moment
    return field, op, raw
