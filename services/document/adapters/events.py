"""Document changes as contract events (`cartage.document.v1` *Event messages) for the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cartage.document.v1 import content_pb2, events_pb2
from services.document.conversion import document_to_proto, exception_to_proto
from services.document.domain.model import Document, ItemException
from services.kit.events import catalog
from services.kit.uow import OutgoingEvent


class DocumentEvents:
    def generated(self, document: Document) -> OutgoingEvent:
        event = events_pb2.DocumentGeneratedEvent(document=document_to_proto(document))
        return catalog().outgoing(event, document.create_time, client_id=document.client_id)

    def captured(self, document: Document, exceptions: Sequence[ItemException],
                 delivered_to: int) -> OutgoingEvent:
        event = events_pb2.PodCapturedEvent(
            document=document_to_proto(document),
            exceptions=[exception_to_proto(e) for e in exceptions],
            delivered_to=content_pb2.DeliveredTo.ValueType(delivered_to))
        return catalog().outgoing(event, document.create_time, client_id=document.client_id)

    def voided(self, document: Document, when: datetime) -> OutgoingEvent:
        event = events_pb2.DocumentVoidedEvent(document=document_to_proto(document))
        return catalog().outgoing(event, when, client_id=document.client_id)
