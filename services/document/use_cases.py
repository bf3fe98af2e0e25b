"""What the document service does, independent of gRPC. Content is stored first (content-
addressed, so a retry or a failed transaction leaves at most an unreferenced object); the
record, its chain record, the signed chain head, the event and the idempotency record are then
written in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.document.domain import chain, links
from services.document.domain.model import (
    Batch,
    BatchState,
    Content,
    Document,
    Item,
    ItemException,
    Kind,
    StoredContent,
    delivery_exceptions,
)
from services.kit.clock import utc_now
from services.kit.errors import FailedPrecondition, NotFound
from services.kit.idempotency import Codec, IdempotencyKey, idempotent
from services.kit.uow import OutgoingEvent, Transaction, UnitOfWork

PDF = "application/pdf"
PodResult = tuple[Document, list[Document], list[ItemException]]


@dataclass(frozen=True, slots=True)
class ListQuery:
    client_id: str
    filters: tuple[tuple[str, str, Any], ...]
    descending: bool
    after: tuple[datetime, str] | None
    limit: int


class Documents(Protocol):
    """Where document records and the chain are kept (adapters/repository.py)."""

    def insert(self, tx: Transaction, *documents: Document) -> None: ...
    def save(self, tx: Transaction, document: Document) -> None: ...
    async def get(self, tx: Transaction, client_id: str, document_id: str, *,
                  for_update: bool = False) -> Document | None: ...
    async def list(self, tx: Transaction, query: ListQuery) -> list[Document]: ...
    async def lock_chain(self, tx: Transaction, client_id: str) -> chain.Head | None: ...
    async def append(self, tx: Transaction, client_id: str, records: list[chain.Record],
                     head: chain.Head, first: bool) -> None: ...
    async def chain_of(self, tx: Transaction, client_id: str
                       ) -> tuple[list[chain.Record], chain.Head | None, dict[str, str]]: ...


class ContentStore(Protocol):
    async def put(self, data: bytes, content_type: str) -> StoredContent: ...
    async def get(self, sha256: str) -> bytes: ...


class Renderer(Protocol):
    def render(self, content: Any, subject: str) -> bytes: ...
    def render_pod(self, pod: Any, subject: str, exceptions: Sequence[ItemException]
                   ) -> bytes: ...


class Events(Protocol):
    def generated(self, document: Document) -> OutgoingEvent: ...
    def captured(self, document: Document, exceptions: Sequence[ItemException],
                 delivered_to: int) -> OutgoingEvent: ...
    def voided(self, document: Document, when: datetime) -> OutgoingEvent: ...


@dataclass(frozen=True, slots=True)
class Codecs:
    document: Codec[Document]
    pod: Codec[PodResult]


@dataclass(frozen=True, slots=True)
class PodInput:
    """A validated proof of delivery: the contract message (for the PDF) and what we need."""

    message: Any
    signature: Content
    photos: tuple[Content, ...]
    expected: tuple[Item, ...]
    scanned: tuple[Item, ...]
    delivered_to: int


def _not_found(document_id: str) -> NotFound:
    # Another client's document is indistinguishable from a missing one.
    return NotFound(f"document documents/{document_id} not found", reason="DOCUMENT_NOT_FOUND")


class DocumentUseCases:
    def __init__(self, uow: UnitOfWork, repository: Documents, store: ContentStore,
                 renderer: Renderer, events: Events, codecs: Codecs, key: bytes, *,
                 link_ttl: timedelta, link_prefix: str,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._uow = uow
        self._documents = repository
        self._store = store
        self._renderer = renderer
        self._events = events
        self._codecs = codecs
        self._key = key
        self._link_ttl = link_ttl
        self._link_prefix = link_prefix
        self._clock = clock

    async def _chain(self, tx: Transaction, client_id: str, event: str, document: Document,
                     when: datetime) -> Document:
        """Append `event` of `document` to the client's chain; the document with its link."""
        [chained] = await self.chain_many(tx, client_id, event, [document], when)
        return chained

    async def chain_many(self, tx: Transaction, client_id: str, event: str,
                         documents: Sequence[Document], when: datetime) -> list[Document]:
        """Append `event` of each document, in order (one lock, one head update)."""
        head = await self._documents.lock_chain(tx, client_id)
        first, records, chained = head is None, [], []
        for document in documents:
            record = chain.next_record(head, client_id, event, document.id, document.sha256,
                                       when)
            head = chain.Head(record.seq, record.hash, "")
            records.append(record)
            chained.append(document.chained(record.hash, record.previous_hash))
        if records:
            last = records[-1]
            signed = chain.Head(last.seq, last.hash,
                                chain.sign_head(self._key, client_id, last.seq, last.hash))
            await self._documents.append(tx, client_id, records, signed, first=first)
        return chained

    def insert(self, tx: Transaction, *documents: Document) -> None:
        self._documents.insert(tx, *documents)

    async def store_pdf(self, content: Any, subject: str) -> StoredContent:
        data = await asyncio.to_thread(self._renderer.render, content, subject)
        return await self._store.put(data, PDF)

    async def generate(self, client_id: str, token_id: str, kind: Kind, subject: str,
                       content: Any, key: IdempotencyKey | None, request_id: str = ""
                       ) -> Document:
        stored = await self.store_pdf(content, subject)

        async def work(tx: Transaction) -> Document:
            now = self._clock()
            document = Document.create(client_id, token_id, kind, subject, stored, now)
            document = await self._chain(tx, client_id, "generated", document, now)
            self._documents.insert(tx, document)
            tx.publish(self._events.generated(document))
            return document

        return await idempotent(self._uow, key, self._codecs.document, work,
                                request_id=request_id)

    async def capture_pod(self, client_id: str, token_id: str, subject: str, pod: PodInput,
                          key: IdempotencyKey | None, request_id: str = "") -> PodResult:
        exceptions = delivery_exceptions(list(pod.expected), list(pod.scanned))
        data = await asyncio.to_thread(self._renderer.render_pod, pod.message, subject,
                                       exceptions)
        originals = [await self._store.put(c.data, c.content_type)
                     for c in (pod.signature, *pod.photos)]
        summary = await self._store.put(data, PDF)

        async def work(tx: Transaction) -> PodResult:
            now = self._clock()
            stored_originals = []
            for stored in originals:
                original = Document.create(client_id, token_id, Kind.POD_ATTACHMENT, subject,
                                           stored, now)
                stored_originals.append(await self._chain(tx, client_id, "captured", original,
                                                          now))
            document = Document.create(client_id, token_id, Kind.PROOF_OF_DELIVERY, subject,
                                       summary, now,
                                       attachments=tuple(d.id for d in stored_originals))
            document = await self._chain(tx, client_id, "captured", document, now)
            self._documents.insert(tx, *stored_originals, document)
            tx.publish(self._events.captured(document, exceptions, pod.delivered_to))
            return document, stored_originals, exceptions

        return await idempotent(self._uow, key, self._codecs.pod, work, request_id=request_id)

    async def get(self, client_id: str, document_id: str) -> Document:
        async with self._uow.transaction() as tx:
            document = await self._documents.get(tx, client_id, document_id)
        if document is None:
            raise _not_found(document_id)
        return document

    async def content(self, client_id: str, document_id: str) -> tuple[Document, bytes]:
        document = await self.get(client_id, document_id)
        return document, await self._store.get(document.sha256)

    async def list(self, query: ListQuery) -> list[Document]:
        async with self._uow.transaction() as tx:
            return await self._documents.list(tx, query)

    async def void(self, client_id: str, document_id: str, reason: str,
                   key: IdempotencyKey | None, request_id: str = "") -> Document:
        async def work(tx: Transaction) -> Document:
            document = await self._documents.get(tx, client_id, document_id, for_update=True)
            if document is None:
                raise _not_found(document_id)
            voided = document.void(reason)
            now = self._clock()
            await self._chain(tx, client_id, "voided", voided, now)
            self._documents.save(tx, voided)
            tx.publish(self._events.voided(voided, now))
            return voided

        return await idempotent(self._uow, key, self._codecs.document, work,
                                request_id=request_id)

    async def create_link(self, client_id: str, document_id: str, ttl: timedelta | None
                          ) -> tuple[str, str, datetime]:
        await self.get(client_id, document_id)  # NOT_FOUND for another client's document
        expires = self._clock() + (ttl or self._link_ttl)
        token = links.sign(self._key, links.Link(client_id, document_id,
                                                 int(expires.timestamp())))
        return f"{self._link_prefix}/{token}", token, expires.replace(microsecond=0)

    async def download(self, token: str) -> tuple[Document, bytes]:
        """The document a signed link names (PERMISSION_DENIED when altered or expired); the
        download is recorded in the owner's chain."""
        link = links.verify(self._key, token, int(self._clock().timestamp()))
        async with self._uow.transaction() as tx:
            document = await self._documents.get(tx, link.client_id, link.document_id)
            if document is None:
                raise _not_found(link.document_id)
            await self._chain(tx, link.client_id, "downloaded", document, self._clock())
        return document, await self._store.get(document.sha256)

    async def verify_chain(self, client_id: str) -> chain.Verdict:
        async with self._uow.transaction() as tx:
            records, head, hashes = await self._documents.chain_of(tx, client_id)
        return chain.verify(self._key, client_id, records, head, hashes)


class Batches(Protocol):
    """Where batch operations are kept (adapters/repository.py)."""

    def insert(self, tx: Transaction, batch: Batch) -> None: ...
    def save(self, tx: Transaction, batch: Batch) -> None: ...
    async def get(self, tx: Transaction, client_id: str, batch_id: str, *,
                  for_update: bool = False) -> Batch | None: ...
    async def claim_running(self, tx: Transaction) -> Batch | None: ...
    async def list(self, tx: Transaction, client_id: str, done: bool | None,
                   after: tuple[datetime, str] | None, limit: int) -> list[Batch]: ...
    async def delete(self, tx: Transaction, batch_id: str) -> None: ...
    async def documents_of(self, tx: Transaction, client_id: str, ids: tuple[str, ...]
                           ) -> list[Document]: ...


# One item of a batch: its document type, subject and content message.
BatchItem = tuple[Kind, str, Any]


def _batch_not_found(batch_id: str) -> NotFound:
    return NotFound(f"operation operations/document/{batch_id} not found",
                    reason="OPERATION_NOT_FOUND")


class BatchUseCases:
    """BatchGenerateDocuments: the batch row is written with its idempotency record; a worker
    (`run`) makes its documents `chunk` at a time, one transaction per chunk that holds the
    batch row (SKIP LOCKED: several processes share the work without doing any twice)."""

    def __init__(self, uow: UnitOfWork, batches: Batches, documents: DocumentUseCases,
                 events: Events, items: Callable[[bytes], list[BatchItem]],
                 codec: Codec[str], *, chunk: int = 50,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._uow = uow
        self._batches = batches
        self._documents = documents
        self._events = events
        self._items = items
        self._codec = codec
        self._chunk = chunk
        self._clock = clock
        self.wake = asyncio.Event()

    async def start(self, client_id: str, token_id: str, total: int, request: bytes,
                    key: IdempotencyKey | None, request_id: str = "") -> str:
        async def work(tx: Transaction) -> str:
            batch = Batch.create(client_id, token_id, total, request, self._clock())
            self._batches.insert(tx, batch)
            return batch.id

        batch_id = await idempotent(self._uow, key, self._codec, work, request_id=request_id)
        self.wake.set()
        return batch_id

    async def get(self, client_id: str, batch_id: str) -> tuple[Batch, list[Document]]:
        async with self._uow.transaction() as tx:
            batch = await self._batches.get(tx, client_id, batch_id)
            if batch is None:
                raise _batch_not_found(batch_id)
            made = (await self._batches.documents_of(tx, client_id, batch.documents)
                    if batch.state is BatchState.DONE else [])
        return batch, made

    async def list(self, client_id: str, done: bool | None,
                   after: tuple[datetime, str] | None, limit: int) -> list[Batch]:
        async with self._uow.transaction() as tx:
            return await self._batches.list(tx, client_id, done, after, limit)

    async def cancel(self, client_id: str, batch_id: str) -> None:
        async with self._uow.transaction() as tx:
            batch = await self._batches.get(tx, client_id, batch_id, for_update=True)
            if batch is None:
                raise _batch_not_found(batch_id)
            self._batches.save(tx, batch.cancel())

    async def delete(self, client_id: str, batch_id: str) -> None:
        async with self._uow.transaction() as tx:
            batch = await self._batches.get(tx, client_id, batch_id, for_update=True)
            if batch is None:
                raise _batch_not_found(batch_id)
            if not batch.done:
                raise FailedPrecondition("the operation is still running; cancel it first",
                                         reason="OPERATION_RUNNING")
            await self._batches.delete(tx, batch_id)

    async def step(self) -> bool:
        """Make the next chunk of the oldest running batch; False when none is running."""
        async with self._uow.transaction() as tx:
            batch = await self._batches.claim_running(tx)
            if batch is None:
                return False
            items = self._items(batch.request)[batch.completed:batch.completed + self._chunk]
            now = self._clock()
            made: list[Document] = []
            for kind, subject, content in items:
                stored = await self._documents.store_pdf(content, subject)
                made.append(Document.create(batch.client_id, batch.token_id, kind, subject,
                                            stored, now))
            made = await self._documents.chain_many(tx, batch.client_id, "generated", made, now)
            self._documents.insert(tx, *made)
            for document in made:
                tx.publish(self._events.generated(document))
            self._batches.save(tx, batch.progressed(tuple(d.id for d in made)))
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """The worker job: make chunks while any batch runs, else wait for a new one (or poll:
        another process may have taken a request)."""
        while not stop.is_set():
            if await self.step():
                continue
            self.wake.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
