"""Async SQLAlchemy engine and the kit's own tables.

Each service owns one Postgres schema. Next to its business tables the schema holds three kit
tables, created by the service's first migration through `create_kit_tables`:

- `outbox`: events written in the same transaction as the change they describe; the relay
  (`services.kit.relay.OutboxRelay`) publishes them to JetStream and stamps `published_at`.
- `inbox`: ids of events a consumer has handled, so a redelivery has no effect.
- `idempotency_keys`: per client and method, the fingerprint of a request and its stored response.

The unit of work that writes to them is `services.kit.uow`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


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


# asyncpg's errors for a server that is gone, going or not back yet (SQLSTATE classes 08 and
# 57P0x), plus a refused or dropped connection.
_UNREACHABLE = (ConnectionError, asyncpg.PostgresConnectionError,
                asyncpg.ConnectionDoesNotExistError, asyncpg.CannotConnectNowError,
                asyncpg.AdminShutdownError, asyncpg.CrashShutdownError)


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached (down, restarting, connection
    lost) rather than that a statement failed: a downstream outage, not a bug."""
    seen: BaseException | None = error
    for _ in range(8):  # the error, the driver's error it wraps, and so on
        if seen is None:
            break
        if isinstance(seen, _UNREACHABLE):
            return True
        if isinstance(seen, sa.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


#: SQLSTATEs of text Postgres cannot store: a NUL character in text (22021) or a \u0000
#: escape in jsonb (22P05). Only a request can carry one, so it is the caller's error.
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


def unstorable_text(error: BaseException) -> bool:
    """Whether `error` is Postgres refusing a string of the request (a NUL character)."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            break
        if getattr(seen, "sqlstate", None) in _UNSTORABLE_TEXT:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


@dataclass(frozen=True, slots=True)
class _Compiled:
    statement: sa.Executable
    sql: str
    names: tuple[str, ...]  # bind names in positional order
    constants: dict[str, Any]  # literal binds' values
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # the dialect's conversions

    @classmethod
    def of(cls, statement: sa.Executable, engine: AsyncEngine) -> _Compiled:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        binds = compiled.binds
        constants = {name: bind.effective_value for name, bind in binds.items()
                     if not bind.required}
        processors = tuple((position, process) for position, name in enumerate(names)
                           if (process := _bind_processor(binds[name].type, dialect)))
        return cls(statement, compiled.string, names, constants, processors)


def _bind_processor(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect
                    ) -> Callable[[Any], Any] | None:
    """The dialect's conversion of a Python value for the driver (None: sent as it is)."""
    return type_.dialect_impl(dialect).bind_processor(dialect)


_MAX_COMPILED = 256


async def _session_unchanged(_conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (a round trip per checkout): statements
    here run in autocommit and change no session state (their advisory locks are
    transaction-scoped)."""


class DirectStatements:
    """Runs SQLAlchemy Core statements that are atomic on their own straight on an asyncpg pool.

    SQLAlchemy's connection checkout, autocommit switch, execution context and checkin cost
    ~0.2 ms of CPU per statement here, more than the hot insert itself (the order service's
    create use case: 450-500 µs CPU per call through the engine, 260-290 µs this way). Each
    statement is compiled once by SQLAlchemy for the asyncpg dialect and then sent as
    positional SQL with the dialect's own bind conversions applied, so the values reach the
    database as through the engine; asyncpg prepares it once per connection. The pool opens on
    first use with the engine's URL and size."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._compiled: dict[int, _Compiled] = {}
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def fetchrow(self, statement: sa.Executable, params: Mapping[str, Any]
                       ) -> asyncpg.Record | None:
        """Execute in autocommit; an integrity error is raised as SQLAlchemy's IntegrityError
        (with the asyncpg error as `orig`), as the same statement through the engine would."""
        sql, args = self._bind(statement, params)
        pool = self._pool or await self._open()
        try:
            async with pool.acquire() as conn:
                return await conn.fetchrow(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as error:
            raise IntegrityError(sql, None, error) from error

    def _bind(self, statement: sa.Executable, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        # Keyed by identity: callers reuse one construct per statement shape.
        entry = self._compiled.get(id(statement))
        if entry is None or entry.statement is not statement:
            if len(self._compiled) >= _MAX_COMPILED:  # a caller building statements per call
                self._compiled.clear()
            entry = self._compiled[id(statement)] = _Compiled.of(statement, self._engine)
        args = [params[name] if name in params else entry.constants[name] for name in entry.names]
        for position, process in entry.processors:
            if args[position] is not None:
                args[position] = process(args[position])
        return entry.sql, args

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                url = self._engine.url.set(drivername="postgresql")
                size = self._engine.pool.size()  # type: ignore[attr-defined]
                self._pool = await asyncpg.create_pool(
                    url.render_as_string(hide_password=False), min_size=1, max_size=size,
                    reset=_session_unchanged)
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# Per (table, columns): the statement and each column's bind conversion.
_UNNEST: dict[tuple[sa.Table, tuple[str, ...]],
              tuple[str, list[Callable[[Any], Any] | None]]] = {}


async def insert_many(conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]
                      ) -> None:
    """Insert `rows` (dicts with the same keys) in the connection's transaction as ONE
    statement with one array per column, `INSERT ... SELECT * FROM unnest(...)`: asyncpg encodes
    the arrays in C, where executemany through SQLAlchemy spends Python time on every row (its
    parameter processing was the largest SQLAlchemy cost in a profile of 500-order batches). A
    constraint violation fails the whole statement."""
    columns = tuple(rows[0])
    known = _UNNEST.get((table, columns))
    if known is None:
        dialect = conn.dialect
        preparer = dialect.identifier_preparer
        arrays = ", ".join(f"${i}::{table.c[name].type.compile(dialect)}[]"
                           for i, name in enumerate(columns, 1))
        names = ", ".join(preparer.quote(name) for name in columns)
        known = _UNNEST[(table, columns)] = (
            f"INSERT INTO {preparer.format_table(table)} ({names}) SELECT * FROM unnest({arrays})",
            [_bind_processor(table.c[name].type, dialect) for name in columns])
    sql, processors = known
    params = []
    for name, process in zip(columns, processors, strict=True):
        values = [row[name] for row in rows]
        if process is not None:
            values = [None if value is None else process(value) for value in values]
        params.append(values)
    await conn.exec_driver_sql(sql, tuple(params))


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

    @property
    def schema(self) -> str:
        return self.metadata.schema or "public"

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
            # The relay scans only unpublished rows; a partial index keeps that scan tiny.
            sa.Index("ix_outbox_unpublished", "seq",
                     postgresql_where=sa.text("published_at IS NULL")),
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


__all__ = ["DirectStatements", "KitTables", "constraint_name", "create_engine", "create_kit_tables",
           "insert_many", "insert_row"]
