"""The unit of work: a transaction's writes, events and idempotency record, sent as few
statements as possible.

A `Transaction` collects inserts (`insert`), other writes (`defer`), events (`publish`) and the
idempotency record (`remember`) and sends them at commit as ONE statement of data-modifying
CTEs. Reads that must happen first go through `execute`.

Idempotent operations (`kit.idempotency`) build on `claim`, `remember` and `gate_on`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit.db import DirectStatements, KitTables, insert_many, insert_row
from services.kit.idempotency import IdempotencyKey, conflict, in_flight


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An event to publish after commit: `payload` is the serialized protobuf message."""

    subject: str
    event_type: str
    payload: bytes
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def _lock(key: IdempotencyKey) -> sa.ColumnElement[Any]:
    return sa.func.pg_try_advisory_xact_lock(
        sa.func.hashtextextended(sa.literal(key.lock_id), 0))


@dataclass(slots=True)
class _Guard:
    """What the single gated statement found: whether it wrote, or why not."""

    got_lock: bool = True
    prior_hash: bytes | None = None
    prior_response: bytes | None = None


class Transaction:
    """One database transaction plus the writes, events and idempotency record it will commit."""

    def __init__(self, conn: AsyncConnection | None, tables: KitTables, request_id: str) -> None:
        self.conn = conn
        self._tables = tables
        self._request_id = request_id
        self._inserts: list[tuple[sa.Table, list[dict[str, Any]]]] = []
        self._deferred: list[sa.Executable] = []
        self._events: list[OutgoingEvent] = []
        self._remembered: tuple[IdempotencyKey, bytes] | None = None
        self._gate: IdempotencyKey | None = None
        self.guard = _Guard()

    async def execute(self, statement: sa.Executable, params: Any = None) -> sa.CursorResult[Any]:
        """Run a statement now (reads, locks, anything whose result is needed before commit)."""
        if self.conn is None:
            raise TypeError("a single-statement transaction cannot execute before its commit")
        return await self.conn.execute(statement, params)

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Queue rows to insert at commit."""
        self._inserts.append((table, list(rows)))

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
        got = (await self.conn.execute(sa.select(_lock(key)))).scalar_one()
        if not got:
            raise in_flight()
        stored = (await self.conn.execute(
            sa.select(idem.c.request_hash, idem.c.response).where(
                idem.c.scope == key.scope, idem.c.key == key.key))).one_or_none()
        if stored is None:
            return None
        if stored.request_hash != key.fingerprint:
            raise conflict()
        return bytes(stored.response)

    def remember(self, key: IdempotencyKey, response: bytes) -> None:
        self._remembered = (key, response)

    def gate_on(self, key: IdempotencyKey) -> None:
        """Make the commit statement write only if `key` is free and has no stored response
        (see the module docstring); the outcome is in `self.guard` after commit."""
        self._gate = key

    def _rows(self) -> list[tuple[sa.Table, list[dict[str, Any]]]]:
        rows = list(self._inserts)
        if self._events:
            rows.append((self._tables.outbox, [
                {"event_id": e.event_id, "subject": e.subject, "event_type": e.event_type,
                 "payload": e.payload, "request_id": self._request_id}
                for e in self._events]))
        if self._remembered is not None:
            key, response = self._remembered
            rows.append((self._tables.idempotency, [
                {"scope": key.scope, "key": key.key, "request_hash": key.fingerprint,
                 "response": response}]))
        return rows

    def _single_statement(self) -> tuple[sa.Select[Any], dict[str, Any]] | None:
        """The whole transaction as one statement (None when it writes nothing)."""
        rows = self._rows()
        if self._deferred or any(len(batch) != 1 for _, batch in rows):
            raise TypeError("a single-statement transaction takes single-row inserts only")
        if not rows:
            return None
        return _folded([(table, batch[0]) for table, batch in rows], self._gate)

    async def _flush(self) -> None:
        if self._gate is not None:
            raise TypeError("gate_on needs a single-statement transaction")
        rows = self._rows()
        single = [(table, batch[0]) for table, batch in rows if len(batch) == 1]
        for table, batch in rows:
            if len(batch) > 1:
                await insert_many(self.conn, table, batch)
        if self._deferred:
            writes = [insert_row(table, row) for table, row in single] + self._deferred
            if len(writes) == 1:
                await self.conn.execute(writes[0])
            else:
                ctes = [w.cte(f"w{i}") for i, w in enumerate(writes)]
                await self.conn.execute(sa.select(sa.literal(1)).add_cte(*ctes))
        elif single:
            statement, params = _folded(single, None)
            await self.conn.execute(statement, params)


# Folded statements by shape (tables, columns, gated or not). Building a CTE construct costs as
# much Python as executing it, so each shape is built once with bind parameters and reused;
# SQLAlchemy then also finds its compiled form in the cache at once.
_SHAPES: dict[tuple[Any, ...], sa.Select[Any]] = {}


def _folded(writes: list[tuple[sa.Table, dict[str, Any]]], gate: IdempotencyKey | None
            ) -> tuple[sa.Select[Any], dict[str, Any]]:
    shape = (gate is not None, *((table, tuple(row)) for table, row in writes))
    params = {f"w{i}_{name}": value
              for i, (_, row) in enumerate(writes) for name, value in row.items()}
    if gate is not None:
        params |= {"lock_id": gate.lock_id, "scope": gate.scope, "key": gate.key}
    statement = _SHAPES.get(shape)
    if statement is None:
        statement = _SHAPES[shape] = _build(writes, gated=gate is not None)
    return statement, params


def _build(writes: list[tuple[sa.Table, dict[str, Any]]], *, gated: bool) -> sa.Select[Any]:
    def value(i: int, table: sa.Table, name: str) -> sa.BindParameter[Any]:
        return sa.bindparam(f"w{i}_{name}", type_=table.c[name].type)

    if not gated:
        ctes = [sa.insert(table).values({name: value(i, table, name) for name in row})
                .cte(f"w{i}") for i, (table, row) in enumerate(writes)]
        return sa.select(sa.literal(1)).add_cte(*ctes)
    idem = next(t for t, _ in writes if t.name == "idempotency_keys")
    lock = sa.select(sa.func.pg_try_advisory_xact_lock(
        sa.func.hashtextextended(sa.bindparam("lock_id", type_=sa.Text), 0)).label("got")
    ).cte("lock")
    prior = sa.select(idem.c.request_hash, idem.c.response).where(
        idem.c.scope == sa.bindparam("scope", type_=sa.Text),
        idem.c.key == sa.bindparam("key", type_=sa.Text)).cte("prior")
    gate = sa.select(sa.literal(1).label("ok")).select_from(lock).where(
        lock.c.got, ~sa.exists(sa.select(prior.c.request_hash))).cte("gate")
    ctes = [
        sa.insert(table).from_select(
            list(row), sa.select(*[value(i, table, name) for name in row]).select_from(gate)
        ).cte(f"w{i}")
        for i, (table, row) in enumerate(writes)
    ]
    return sa.select(
        sa.select(lock.c.got).scalar_subquery().label("got"),
        sa.select(prior.c.request_hash).scalar_subquery().label("prior_hash"),
        sa.select(prior.c.response).scalar_subquery().label("prior_response"),
    ).add_cte(*ctes)


class UnitOfWork:
    """Opens transactions; after each commit that wrote events it calls `on_events` (the
    relay's wake-up), so events leave within milliseconds instead of at the next poll."""

    def __init__(self, engine: AsyncEngine, tables: KitTables, *,
                 on_events: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.tables = tables
        self._on_events = on_events
        self._direct = DirectStatements(engine)

    async def read_one(self, statement: sa.Executable, params: dict[str, Any]
                       ) -> Mapping[str, Any] | None:
        """One row (or None) of a read that needs no transaction around it (autocommit,
        straight on asyncpg). `statement` should be built once, with bind parameters."""
        return await self._direct.fetchrow(statement, params)

    async def close(self) -> None:
        """Close the single-statement pool (the engine is disposed by its owner)."""
        await self._direct.close()

    @asynccontextmanager
    async def transaction(self, request_id: str = "", *, single_statement: bool = False
                          ) -> AsyncIterator[Transaction]:
        """`single_statement=True`: the body only queues single-row inserts and events (no
        `execute`), so the commit statement is the whole transaction; it runs in autocommit
        straight on asyncpg (`db.DirectStatements`)."""
        if single_statement:
            tx = Transaction(None, self.tables, request_id)
            yield tx
            folded = tx._single_statement()
            if folded is not None:
                row = await self._direct.fetchrow(*folded)
                if tx._gate is not None and row is not None:
                    tx.guard = _Guard(bool(row["got"]), row["prior_hash"], row["prior_response"])
        else:
            async with self.engine.connect() as conn:
                tx = Transaction(conn, self.tables, request_id)
                yield tx
                await tx._flush()
                await conn.commit()
        if tx.events and self._on_events is not None:
            self._on_events()
