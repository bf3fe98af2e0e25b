"""Async SQLAlchemy engine and the kit's own tables.

Each service owns one Postgres schema. Next to its business tables the schema holds three kit
tables, created by the service's first migration through `create_kit_tables`:

- `outbox`: events written in the same transaction as the change they describe; the relay
  (`services.kit.messaging.OutboxRelay`) publishes them to JetStream and stamps `published_at`.
- `inbox`: ids of events a consumer has handled, so a redelivery has no effect.
- `idempotency_keys`: per client and method, the fingerprint of a request and its stored response.

The unit of work that writes to them is `services.kit.uow`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str, *, pool_size: int = 20, max_overflow: int = 0) -> AsyncEngine:
    """An asyncpg engine. `url` may be a plain `postgresql://` URL (as in DATABASE_URL).

    No overflow by default: under a burst, overflow connections are opened and closed again
    for each checkout, and a new asyncpg connection costs more than waiting for a pooled one."""
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: it costs a round trip per transaction; a dropped connection surfaces as
        # an error on use, and SQLAlchemy invalidates it.
    )


def reachable(engine: AsyncEngine) -> Callable[[], Awaitable[bool]]:
    """A health check: the database answers."""
    async def check() -> bool:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True

    return check


def to_async_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}")


def insert_row(table: sa.Table, row: dict[str, Any]) -> sa.Insert:
    """An INSERT of one row in the keyword form, whose compiled SQL SQLAlchemy caches (a
    multi-row VALUES list is recompiled on every call, which costs more than the insert)."""
    return sa.insert(table).values(**row)


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


__all__ = ["KitTables", "constraint_name", "create_engine", "create_kit_tables", "insert_row"]
