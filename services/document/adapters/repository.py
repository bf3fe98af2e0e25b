"""SQL for documents and their hash chain, in SQLAlchemy Core. Implements the use cases'
`Documents` port."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.document.adapters.tables import batches, chain, chain_heads, documents
from services.document.domain import chain as chains
from services.document.domain.model import Batch, BatchState, Document, Kind, State
from services.document.use_cases import ListQuery
from services.kit.uow import Transaction


def _values(document: Document) -> dict[str, Any]:
    return {
        "id": document.id, "client_id": document.client_id, "type": int(document.kind),
        "subject": document.subject, "content_type": document.content_type,
        "size_bytes": document.size, "sha256": document.sha256,
        "created_by_token_id": document.created_by_token_id,
        "create_time": document.create_time, "state": int(document.state),
        "void_reason": document.void_reason, "attachments": ",".join(document.attachments),
        "chain_hash": document.chain_hash, "previous_chain_hash": document.previous_chain_hash,
    }


def _from_row(row: Mapping[str, Any]) -> Document:
    return Document(
        id=row["id"], client_id=row["client_id"], kind=Kind(row["type"]),
        subject=row["subject"], content_type=row["content_type"], size=row["size_bytes"],
        sha256=row["sha256"], created_by_token_id=row["created_by_token_id"],
        create_time=row["create_time"], state=State(row["state"]),
        void_reason=row["void_reason"],
        attachments=tuple(a for a in row["attachments"].split(",") if a),
        chain_hash=row["chain_hash"], previous_chain_hash=row["previous_chain_hash"])


FILTER_COLUMNS = {
    "subject": documents.c.subject,
    "type": documents.c.type,
    "state": documents.c.state,
    "create_time": documents.c.create_time,
}
_OPERATORS = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


class DocumentRepository:
    def insert(self, tx: Transaction, *new: Document) -> None:
        tx.insert(documents, [_values(d) for d in new])

    def save(self, tx: Transaction, document: Document) -> None:
        """Write a changed document (state, reason). The caller holds the row lock."""
        tx.defer(sa.update(documents).where(documents.c.id == document.id).values(
            state=int(document.state), void_reason=document.void_reason))

    async def get(self, tx: Transaction, client_id: str, document_id: str, *,
                  for_update: bool = False) -> Document | None:
        query = sa.select(documents).where(documents.c.id == document_id,
                                           documents.c.client_id == client_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _from_row(row._mapping)

    async def list(self, tx: Transaction, query: ListQuery) -> list[Document]:
        key = sa.tuple_(documents.c.create_time, documents.c.id)
        conditions = [_OPERATORS[op](FILTER_COLUMNS[field], value)
                      for field, op, value in query.filters]
        statement = sa.select(documents).where(documents.c.client_id == query.client_id,
                                               *conditions)
        if query.after is not None:
            after = sa.tuple_(sa.literal(query.after[0]), sa.literal(query.after[1]))
            statement = statement.where(key < after if query.descending else key > after)
        if query.descending:
            statement = statement.order_by(documents.c.create_time.desc(), documents.c.id.desc())
        else:
            statement = statement.order_by(documents.c.create_time, documents.c.id)
        rows = await tx.execute(statement.limit(query.limit))
        return [_from_row(row._mapping) for row in rows]

    async def lock_chain(self, tx: Transaction, client_id: str) -> chains.Head | None:
        """Serialise appends to one client's chain (until commit) and read its head."""
        await tx.execute(sa.select(sa.func.pg_advisory_xact_lock(
            sa.func.hashtextextended(f"document-chain:{client_id}", 0))))
        row = (await tx.execute(sa.select(chain_heads).where(
            chain_heads.c.client_id == client_id))).one_or_none()
        return None if row is None else chains.Head(row.seq, row.hash, row.signature)

    async def append(self, tx: Transaction, client_id: str, records: list[chains.Record],
                     head: chains.Head, first: bool) -> None:
        """Written at once: the next append in the same transaction reads this head."""
        await tx.execute(sa.insert(chain), [
            {"client_id": client_id, "seq": r.seq, "record": r.record,
             "previous_hash": r.previous_hash, "hash": r.hash} for r in records])
        values = {"seq": head.seq, "hash": head.hash, "signature": head.signature}
        if first:
            await tx.execute(sa.insert(chain_heads).values(client_id=client_id, **values))
        else:
            await tx.execute(sa.update(chain_heads).where(
                chain_heads.c.client_id == client_id).values(**values))

    async def chain_of(self, tx: Transaction, client_id: str
                       ) -> tuple[list[chains.Record], chains.Head | None, dict[str, str]]:
        rows = await tx.execute(sa.select(chain).where(chain.c.client_id == client_id)
                                .order_by(chain.c.seq))
        records = [chains.Record(r.seq, bytes(r.record), r.previous_hash, r.hash) for r in rows]
        head_row = (await tx.execute(sa.select(chain_heads).where(
            chain_heads.c.client_id == client_id))).one_or_none()
        head = None if head_row is None else chains.Head(head_row.seq, head_row.hash,
                                                        head_row.signature)
        hashes = {r.id: r.sha256 for r in await tx.execute(
            sa.select(documents.c.id, documents.c.sha256).where(
                documents.c.client_id == client_id))}
        return records, head, hashes


def _batch(row: Mapping[str, Any]) -> Batch:
    return Batch(id=row["id"], client_id=row["client_id"], token_id=row["token_id"],
                 create_time=row["create_time"], total=row["total"], request=bytes(row["request"]),
                 state=BatchState(row["state"]), completed=row["completed"],
                 documents=tuple(d for d in row["documents"].split(",") if d))


class BatchRepository:
    def insert(self, tx: Transaction, batch: Batch) -> None:
        tx.insert(batches, [{
            "id": batch.id, "client_id": batch.client_id, "token_id": batch.token_id,
            "create_time": batch.create_time, "state": int(batch.state), "total": batch.total,
            "completed": batch.completed, "request": batch.request,
            "documents": ",".join(batch.documents)}])

    def save(self, tx: Transaction, batch: Batch) -> None:
        tx.defer(sa.update(batches).where(batches.c.id == batch.id).values(
            state=int(batch.state), completed=batch.completed,
            documents=",".join(batch.documents)))

    async def get(self, tx: Transaction, client_id: str, batch_id: str, *,
                  for_update: bool = False) -> Batch | None:
        query = sa.select(batches).where(batches.c.id == batch_id,
                                         batches.c.client_id == client_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _batch(row._mapping)

    async def claim_running(self, tx: Transaction) -> Batch | None:
        """The oldest running batch no other worker holds, locked until commit."""
        row = (await tx.execute(
            sa.select(batches).where(batches.c.state == int(BatchState.RUNNING))
            .order_by(batches.c.create_time).limit(1).with_for_update(skip_locked=True))
        ).one_or_none()
        return None if row is None else _batch(row._mapping)

    async def list(self, tx: Transaction, client_id: str, done: bool | None,
                   after: tuple[datetime, str] | None, limit: int) -> list[Batch]:
        """Newest first."""
        statement = sa.select(batches).where(batches.c.client_id == client_id)
        if done is not None:
            running = batches.c.state == int(BatchState.RUNNING)
            statement = statement.where(~running if done else running)
        if after is not None:
            key = sa.tuple_(batches.c.create_time, batches.c.id)
            statement = statement.where(key < sa.tuple_(sa.literal(after[0]),
                                                        sa.literal(after[1])))
        rows = await tx.execute(statement.order_by(batches.c.create_time.desc(),
                                                   batches.c.id.desc()).limit(limit))
        return [_batch(r._mapping) for r in rows]

    async def delete(self, tx: Transaction, batch_id: str) -> None:
        await tx.execute(sa.delete(batches).where(batches.c.id == batch_id))

    async def documents_of(self, tx: Transaction, client_id: str, ids: tuple[str, ...]
                           ) -> list[Document]:
        rows = await tx.execute(sa.select(documents).where(
            documents.c.client_id == client_id, documents.c.id.in_(ids)))
        found = {r.id: _from_row(r._mapping) for r in rows}
        return [found[i] for i in ids if i in found]
