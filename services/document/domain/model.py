"""The document aggregate and the pure rules around it (no I/O, no contracts)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from services.kit.errors import FailedPrecondition


class State(IntEnum):
    ACTIVE = 1
    VOIDED = 2


class Kind(IntEnum):
    """The contract's DocumentType numbers."""

    PROOF_OF_DELIVERY = 1
    BILL_OF_LADING = 2
    COMMERCIAL_INVOICE = 3
    CUSTOMS_DECLARATION = 4
    PACKING_LIST = 5
    SHIPPING_LABEL = 6
    POD_ATTACHMENT = 7


@dataclass(frozen=True, slots=True)
class Content:
    """Bytes to store, with their media type."""

    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class StoredContent:
    """What the content store knows about stored bytes."""

    sha256: str
    size: int
    content_type: str


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    client_id: str
    kind: Kind
    subject: str
    content_type: str
    size: int
    sha256: str
    created_by_token_id: str
    create_time: datetime
    state: State = State.ACTIVE
    void_reason: str = ""
    attachments: tuple[str, ...] = ()
    chain_hash: str = ""
    previous_chain_hash: str = ""

    @property
    def name(self) -> str:
        return f"documents/{self.id}"

    @classmethod
    def create(cls, client_id: str, token_id: str, kind: Kind, subject: str,
               stored: StoredContent, now: datetime, attachments: tuple[str, ...] = ()
               ) -> Document:
        return cls(id=os.urandom(16).hex(), client_id=client_id, kind=kind, subject=subject,
                   content_type=stored.content_type, size=stored.size, sha256=stored.sha256,
                   created_by_token_id=token_id, create_time=now, attachments=attachments)

    def void(self, reason: str) -> Document:
        if self.state is State.VOIDED:
            raise FailedPrecondition(f"{self.name} is already voided",
                                     reason="DOCUMENT_ALREADY_VOIDED")
        return dataclasses.replace(self, state=State.VOIDED, void_reason=reason)

    def chained(self, record_hash: str, previous_hash: str) -> Document:
        return dataclasses.replace(self, chain_hash=record_hash, previous_chain_hash=previous_hash)


@dataclass(frozen=True, slots=True)
class Item:
    code: str
    quantity: int
    damaged: bool = False


@dataclass(frozen=True, slots=True)
class ItemException:
    kind: str  # SHORTAGE, OVERAGE, DAMAGED
    code: str
    expected: int
    delivered: int


def delivery_exceptions(expected: list[Item], scanned: list[Item]) -> list[ItemException]:
    """Shortages, overages and damaged items, by item code (codes in sorted order)."""
    want: dict[str, int] = {}
    for item in expected:
        want[item.code] = want.get(item.code, 0) + item.quantity
    got: dict[str, int] = {}
    damaged: dict[str, int] = {}
    for item in scanned:
        got[item.code] = got.get(item.code, 0) + item.quantity
        if item.damaged:
            damaged[item.code] = damaged.get(item.code, 0) + item.quantity
    found: list[ItemException] = []
    for code in sorted(set(want) | set(got)):
        expected_n, delivered_n = want.get(code, 0), got.get(code, 0)
        if delivered_n < expected_n:
            found.append(ItemException("SHORTAGE", code, expected_n, delivered_n))
        elif delivered_n > expected_n:
            found.append(ItemException("OVERAGE", code, expected_n, delivered_n))
        if code in damaged:
            found.append(ItemException("DAMAGED", code, expected_n, damaged[code]))
    return found


class BatchState(IntEnum):
    RUNNING = 1
    DONE = 2
    CANCELLED = 3


@dataclass(frozen=True, slots=True)
class Batch:
    """A BatchGenerateDocuments operation: `request` is the contract request (bytes); the
    documents are made in request order, `completed` of `total` so far."""

    id: str
    client_id: str
    token_id: str
    create_time: datetime
    total: int
    request: bytes
    state: BatchState = BatchState.RUNNING
    completed: int = 0
    documents: tuple[str, ...] = ()

    @classmethod
    def create(cls, client_id: str, token_id: str, total: int, request: bytes, now: datetime
               ) -> Batch:
        return cls(os.urandom(16).hex(), client_id, token_id, now, total, request)

    @property
    def done(self) -> bool:
        return self.state is not BatchState.RUNNING

    def progressed(self, made: tuple[str, ...]) -> Batch:
        documents = self.documents + made
        state = BatchState.DONE if len(documents) >= self.total else self.state
        return dataclasses.replace(self, documents=documents, completed=len(documents),
                                   state=state)

    def cancel(self) -> Batch:
        return self if self.done else dataclasses.replace(self, state=BatchState.CANCELLED)
