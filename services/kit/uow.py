"""The unit of work: a transaction's writes, events and idempotency record, sent as few
statements as possible.

A `Transaction` collects inserts (`insert`), other writes (`defer`), events (`publish`) and the
idempotency record (`remember`) and sends them at commit as ONE statement of data-modifying
CTEs. Reads that must happen first go through `execute`.

`idempotent()` runs an operation at most once per idempotency key, in one of two ways:

- `reads=True` (read-modify-write verbs such as cancel): BEGIN; `claim` takes a
  transaction-scoped advisory lock on the key (ABORTED if another transaction holds it) and
  looks for a stored response; the work; the folded write with the key row; COMMIT.
- `reads=False` (pure inserts such as CreateOrder): the work runs first (it only builds rows),
  then ONE autocommit statement takes the lock, looks for a stored response and performs the
  inserts only if the lock was free and no response was stored. One round trip instead of five,
  sent straight on asyncpg (`db.DirectStatements`: SQLAlchemy's per-statement machinery
  costs more CPU than the insert).

Either way a repeat returns the stored response, a different payload under the same key is
refused, and an overlapping repeat gets ABORTED. The key row is written in the same statement
as the work, and its primary key is the last line of defence: a repeat that slips between
another's snapshot and commit fails on it and is retried once, which then finds the response.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit.db import DirectStatements, KitTables, constraint_name, insert_many, insert_row
from services.kit.errors import Aborted, FieldViolation, InvalidArgument

T = TypeVar("T")
IDEMPOTENCY_PK = "idempotency_keys_pkey"


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


def _conflict() -> IdempotencyConflict:
    return IdempotencyConflict(
        "this request_id was already used with a different request",
        violations=[FieldViolation("request_id",
                                   "was already used with a different request; use a new key",
                                   "IDEMPOTENCY_KEY_REUSED")],
    )


def _in_flight() -> RequestInFlight:
    return RequestInFlight("a request with this request_id is still being processed; "
                           "retry shortly")


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
            raise _in_flight()
        stored = (await self.conn.execute(
            sa.select(idem.c.request_hash, idem.c.response).where(
                idem.c.scope == key.scope, idem.c.key == key.key))).one_or_none()
        if stored is None:
            return None
        if stored.request_hash != key.fingerprint:
            raise _conflict()
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

    def set_on_events(self, callback: Callable[[], None]) -> None:
        self._on_events = callback

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
    reads: bool = True,
) -> T:
    """Run `work` in a transaction at most once per key: a repeat gets the stored result.
    `reads=False` promises that `work` only queues single-row inserts and events, which allows
    the one-statement path described in the module docstring."""
    if reads:
        async with uow.transaction(request_id) as tx:
            if key is not None:
                stored = await tx.claim(key)
                if stored is not None:
                    return codec.decode(stored)
            result = await work(tx)
            if key is not None:
                tx.remember(key, codec.encode(result))
        return result
    for attempt in (1, 2):
        try:
            async with uow.transaction(request_id, single_statement=True) as tx:
                result = await work(tx)
                if key is not None:
                    tx.remember(key, codec.encode(result))
                    tx.gate_on(key)
        except IntegrityError as error:
            if attempt == 1 and constraint_name(error) == IDEMPOTENCY_PK:
                continue  # an identical request committed under our feet: replay it
            raise
        guard = tx.guard
        if not guard.got_lock:
            raise _in_flight()
        if guard.prior_hash is not None:
            if key is None or bytes(guard.prior_hash) != key.fingerprint:
                raise _conflict()
            return codec.decode(bytes(guard.prior_response or b""))
        return result
    raise AssertionError("unreachable")
