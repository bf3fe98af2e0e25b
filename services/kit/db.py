"""Async SQLAlchemy engine, the kit's own tables, and the unit of work.

Each service owns one Postgres schema. Next to its business tables the schema holds three kit
tables, created by the service's first migration through `create_kit_tables`:

- `outbox`: events written in the same transaction as the change they describe; the relay
  (`services.kit.outbox`) publishes them to JetStream and stamps `published_at`.
- `inbox`: ids of events a consumer has handled, so a redelivery has no effect.
- `idempotency_keys`: per client and method, the fingerprint of a request and its stored response.

The unit of work (`UnitOfWork.transaction()`) collects a transaction's inserts and updates
(`defer`), its events (`publish`) and its idempotency record (`remember`) and sends them to
Postgres as ONE statement of data-modifying CTEs at commit. That keeps the hot write path
(an order, its outbox row and its idempotency row) at a single round trip inside the
transaction, which is what lets a Python service keep up with raw asyncpg (see bench/).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.kit.errors import Aborted, FieldViolation, InvalidArgument

T = TypeVar("T")


def create_engine(url: str, *, pool_size: int = 20, max_overflow: int = 10) -> AsyncEngine:
    """An asyncpg engine. `url` may be a plain `postgresql://` URL (as in DATABASE_URL)."""
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: it costs a round trip per transaction; a dropped connection surfaces as
        # an error on use, and SQLAlchemy invalidates it.
    )


def to_async_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}")


def insert_rows(table: sa.Table, rows: Sequence[dict[str, Any]]) -> sa.Insert:
    """An INSERT of `rows`. One row uses the keyword form, whose compiled SQL SQLAlchemy caches;
    a multi-row VALUES list is recompiled on every call, which costs more than the insert."""
    if len(rows) == 1:
        return sa.insert(table).values(**rows[0])
    return sa.insert(table).values(list(rows))


def constraint_name(error: IntegrityError) -> str | None:
    """The name of the violated constraint, read from the asyncpg exception under SQLAlchemy's."""
    cause: BaseException | None = error.orig
    while cause is not None:
        name = getattr(cause, "constraint_name", None)
        if name:
            return str(name)
        cause = cause.__cause__
    return None


@dataclass(frozen=True)
class KitTables:
    """The kit's tables inside one service schema."""

    metadata: sa.MetaData
    outbox: sa.Table
    inbox: sa.Table
    idempotency: sa.Table

    @classmethod
    def for_schema(cls, metadata: sa.MetaData) -> KitTables:
        outbox = sa.Table(
            "outbox",
            metadata,
            sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
            sa.Column("event_id", sa.Text, nullable=False, unique=True),
            sa.Column("subject", sa.Text, nullable=False),
            sa.Column("event_type", sa.Text, nullable=False),
            sa.Column("payload", sa.LargeBinary, nullable=False),
            sa.Column("request_id", sa.Text, nullable=False, server_default=""),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                      server_default=sa.func.now()),
            sa.Column("published_at", sa.DateTime(timezone=True)),
        )
        inbox = sa.Table(
            "inbox",
            metadata,
            sa.Column("consumer", sa.Text, primary_key=True),
            sa.Column("event_id", sa.Text, primary_key=True),
            sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False,
                      server_default=sa.func.now()),
        )
        idempotency = sa.Table(
            "idempotency_keys",
            metadata,
            sa.Column("scope", sa.Text, primary_key=True),
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("request_hash", sa.LargeBinary, nullable=False),
            sa.Column("response", sa.LargeBinary, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                      server_default=sa.func.now()),
        )
        return cls(metadata, outbox, inbox, idempotency)


def create_kit_tables(op: Any, schema: str) -> None:
    """Version 1 of the kit tables, for a service's first Alembic migration. Spelled out here
    (not derived from `KitTables`) so that the migration stays frozen when the model moves on."""
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False, unique=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        schema=schema,
    )
    # The relay scans only unpublished rows; a partial index keeps that scan tiny.
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["seq"], schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        schema=schema,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.LargeBinary, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        schema=schema,
    )


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An event to publish after commit: `payload` is the serialized protobuf message."""

    subject: str
    event_type: str
    payload: bytes
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's request key (AIP-155 `request_id` / `Idempotency-Key`) for one method.

    `fingerprint` identifies the request's content, so the same key with a different payload
    can be refused rather than silently answered with the first response."""

    scope: str
    key: str
    fingerprint: bytes

    @classmethod
    def of(cls, client_id: str, method: str, key: str, payload: bytes) -> IdempotencyKey:
        if len(key) > 100:
            raise InvalidArgument.single("request_id", "must be at most 100 characters")
        return cls(f"{client_id}/{method}", key, hashlib.sha256(payload).digest())

    @property
    def lock_id(self) -> str:
        return f"{self.scope}/{self.key}"


class IdempotencyConflict(InvalidArgument):
    default_reason = "IDEMPOTENCY_KEY_REUSED"


class RequestInFlight(Aborted):
    default_reason = "REQUEST_IN_FLIGHT"


class Transaction:
    """One database transaction plus the writes, events and idempotency record it will commit."""

    def __init__(self, conn: AsyncConnection, tables: KitTables, request_id: str) -> None:
        self.conn = conn
        self._tables = tables
        self._request_id = request_id
        self._deferred: list[sa.Insert | sa.Update | sa.Delete] = []
        self._events: list[OutgoingEvent] = []
        self._remembered: tuple[IdempotencyKey, bytes] | None = None

    async def execute(self, statement: sa.Executable, params: Any = None) -> sa.CursorResult[Any]:
        """Run a statement now (reads, locks, anything whose result is needed before commit)."""
        return await self.conn.execute(statement, params)

    def defer(self, statement: sa.Insert | sa.Update | sa.Delete) -> None:
        """Queue a write whose result is not needed; it is sent with the commit statement."""
        self._deferred.append(statement)

    def publish(self, event: OutgoingEvent) -> None:
        self._events.append(event)

    @property
    def events(self) -> Sequence[OutgoingEvent]:
        return tuple(self._events)

    async def claim(self, key: IdempotencyKey) -> bytes | None:
        """Take the key for this transaction. Returns the stored response of an earlier identical
        request, raises IdempotencyConflict for a different payload under the same key, and
        RequestInFlight while another transaction holds the key."""
        idem = self._tables.idempotency
        got_lock = sa.func.pg_try_advisory_xact_lock(
            sa.func.hashtextextended(sa.literal(key.lock_id), 0)
        )
        row = (await self.conn.execute(sa.select(got_lock.label("got")))).one()
        if not row.got:
            raise RequestInFlight(
                "a request with this request_id is still being processed; retry shortly"
            )
        stored = (
            await self.conn.execute(
                sa.select(idem.c.request_hash, idem.c.response).where(
                    idem.c.scope == key.scope, idem.c.key == key.key
                )
            )
        ).one_or_none()
        if stored is None:
            return None
        if stored.request_hash != key.fingerprint:
            raise IdempotencyConflict(
                "this request_id was already used with a different request",
                violations=[
                    FieldViolation(
                        "request_id",
                        "was already used with a different request; use a new key",
                        "IDEMPOTENCY_KEY_REUSED",
                    )
                ],
            )
        return bytes(stored.response)

    def remember(self, key: IdempotencyKey, response: bytes) -> None:
        self._remembered = (key, response)

    def _commit_statement(self) -> sa.Select[Any] | None:
        writes: list[Any] = list(self._deferred)
        if self._events:
            writes.append(
                insert_rows(
                    self._tables.outbox,
                    [
                        {
                            "event_id": e.event_id,
                            "subject": e.subject,
                            "event_type": e.event_type,
                            "payload": e.payload,
                            "request_id": self._request_id,
                        }
                        for e in self._events
                    ]
                )
            )
        if self._remembered is not None:
            key, response = self._remembered
            writes.append(
                sa.insert(self._tables.idempotency).values(
                    scope=key.scope, key=key.key, request_hash=key.fingerprint, response=response
                )
            )
        if not writes:
            return None
        if len(writes) == 1:
            return writes[0]  # type: ignore[no-any-return]
        ctes = [w.cte(f"w{i}") for i, w in enumerate(writes)]
        return sa.select(sa.literal(1)).add_cte(*ctes)

    async def _flush(self) -> None:
        statement = self._commit_statement()
        if statement is not None:
            await self.conn.execute(statement)


class UnitOfWork:
    """Opens transactions; after each commit that wrote events it calls `on_events` (the
    relay's wake-up), so events leave within milliseconds instead of at the next poll."""

    def __init__(
        self,
        engine: AsyncEngine,
        tables: KitTables,
        *,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.tables = tables
        self._on_events = on_events

    def set_on_events(self, callback: Callable[[], None]) -> None:
        self._on_events = callback

    @asynccontextmanager
    async def transaction(self, request_id: str = "") -> AsyncIterator[Transaction]:
        async with self.engine.connect() as conn:
            tx = Transaction(conn, self.tables, request_id)
            yield tx
            await tx._flush()
            await conn.commit()
        if tx.events and self._on_events is not None:
            self._on_events()


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    """How an idempotent operation's result is stored and replayed (usually protobuf bytes)."""

    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]


async def idempotent(
    uow: UnitOfWork,
    key: IdempotencyKey | None,
    codec: Codec[T],
    work: Callable[[Transaction], Awaitable[T]],
    *,
    request_id: str = "",
) -> T:
    """Run `work` in a transaction at most once per key: a repeat gets the stored result.

    The advisory lock taken by `claim` is held until commit, and the key row is written in the
    same commit as the work, so no interleaving of two identical requests can run the work
    twice: the second either sees the lock (RequestInFlight) or the committed row (replay)."""
    async with uow.transaction(request_id) as tx:
        if key is not None:
            stored = await tx.claim(key)
            if stored is not None:
                return codec.decode(stored)
        result = await work(tx)
        if key is not None:
            tx.remember(key, codec.encode(result))
    return result


__all__ = [
    "Codec",
    "IdempotencyConflict",
    "IdempotencyKey",
    "KitTables",
    "OutgoingEvent",
    "RequestInFlight",
    "Transaction",
    "UnitOfWork",
    "constraint_name",
    "create_engine",
    "create_kit_tables",
    "idempotent",
]
