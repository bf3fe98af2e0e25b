"""Contract messages to and from the domain, and the codecs of stored responses. Pure."""

from __future__ import annotations

from cartage.document.v1 import content_pb2, document_pb2, document_service_pb2
from services.document.domain.model import Document, ItemException, Kind, State
from services.kit.clock import set_timestamp, to_datetime
from services.kit.idempotency import Codec

EXCEPTION_KINDS = {"SHORTAGE": content_pb2.DeliveryException.KIND_SHORTAGE,
                   "OVERAGE": content_pb2.DeliveryException.KIND_OVERAGE,
                   "DAMAGED": content_pb2.DeliveryException.KIND_DAMAGED}
_KIND_NAMES = {number: name for name, number in EXCEPTION_KINDS.items()}

# GenerateDocumentRequest's content field -> the document type it makes.
CONTENT_KINDS = {
    "bill_of_lading": Kind.BILL_OF_LADING,
    "commercial_invoice": Kind.COMMERCIAL_INVOICE,
    "customs_declaration": Kind.CUSTOMS_DECLARATION,
    "packing_list": Kind.PACKING_LIST,
    "shipping_label": Kind.SHIPPING_LABEL,
}


def document_to_proto(document: Document) -> document_pb2.Document:
    message = document_pb2.Document(
        name=document.name,
        type=document_pb2.DocumentType.ValueType(int(document.kind)),
        subject=document.subject,
        content_type=document.content_type,
        size_bytes=document.size,
        sha256=document.sha256,
        created_by_client_id=document.client_id,
        created_by_token_id=document.created_by_token_id,
        state=document_pb2.Document.State.ValueType(int(document.state)),
        void_reason=document.void_reason,
        attachments=[f"documents/{a}" for a in document.attachments],
        chain_hash=document.chain_hash,
        previous_chain_hash=document.previous_chain_hash,
    )
    set_timestamp(message.create_time, document.create_time)
    return message


def document_from_proto(message: document_pb2.Document) -> Document:
    return Document(
        id=message.name.removeprefix("documents/"),
        client_id=message.created_by_client_id,
        kind=Kind(message.type),
        subject=message.subject,
        content_type=message.content_type,
        size=message.size_bytes,
        sha256=message.sha256,
        created_by_token_id=message.created_by_token_id,
        create_time=to_datetime(message.create_time),
        state=State(message.state),
        void_reason=message.void_reason,
        attachments=tuple(a.removeprefix("documents/") for a in message.attachments),
        chain_hash=message.chain_hash,
        previous_chain_hash=message.previous_chain_hash,
    )


def exception_to_proto(item: ItemException) -> content_pb2.DeliveryException:
    return content_pb2.DeliveryException(kind=EXCEPTION_KINDS[item.kind], code=item.code,
                                         expected=item.expected, delivered=item.delivered)


def exception_from_proto(message: content_pb2.DeliveryException) -> ItemException:
    return ItemException(_KIND_NAMES[message.kind], message.code, message.expected,
                         message.delivered)


def pod_result_to_proto(result: tuple[Document, list[Document], list[ItemException]]
                        ) -> document_service_pb2.CaptureProofOfDeliveryResponse:
    document, originals, exceptions = result
    return document_service_pb2.CaptureProofOfDeliveryResponse(
        document=document_to_proto(document),
        originals=[document_to_proto(d) for d in originals],
        exceptions=[exception_to_proto(e) for e in exceptions])


def _decode_pod(data: bytes) -> tuple[Document, list[Document], list[ItemException]]:
    message = document_service_pb2.CaptureProofOfDeliveryResponse.FromString(data)
    return (document_from_proto(message.document),
            [document_from_proto(d) for d in message.originals],
            [exception_from_proto(e) for e in message.exceptions])


def batch_items(request: bytes) -> list[tuple[Kind, str, object]]:
    """The items of a stored BatchGenerateDocumentsRequest: (type, subject, content)."""
    message = document_service_pb2.BatchGenerateDocumentsRequest.FromString(request)
    items = []
    for item in message.requests:
        which = item.WhichOneof("content") or ""
        items.append((CONTENT_KINDS[which], item.subject, getattr(item, which)))
    return items


BATCH_ID_CODEC: Codec[str] = Codec(str.encode, bytes.decode)
DOCUMENT_CODEC: Codec[Document] = Codec(
    lambda d: document_to_proto(d).SerializeToString(),
    lambda data: document_from_proto(document_pb2.Document.FromString(data)))
POD_CODEC: Codec[tuple[Document, list[Document], list[ItemException]]] = Codec(
    lambda r: pod_result_to_proto(r).SerializeToString(), _decode_pod)
