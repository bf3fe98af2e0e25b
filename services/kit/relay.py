"""The outbox relay and its housekeeping: outbox rows to JetStream, at the rate services write.

How a row leaves (`OutboxRelay`):

- One relay per schema publishes at a time: the leader holds a session advisory lock on a
  connection of its own. Every other relay (worker processes, replicas) stands by, retries the
  lock at each poll, and passes its process's commit wake-ups on to the leader with NOTIFY.
  One publisher is what keeps each aggregate's events in commit order in the stream; two
  relays claiming side by side (SKIP LOCKED) could send an aggregate's second event before
  another relay's first.
- The leader works as a pipeline: it claims up to `claim_size` unpublished rows (FOR UPDATE
  SKIP LOCKED, in seq order, in a transaction of its own), sends them all with
  `publish_async` (`Nats-Msg-Id` = event id), and claims the next batch while up to `window`
  publishes wait for their acks. Batches complete strictly in order: the oldest batch's acks
  are awaited, its rows stamped with one UPDATE and committed, then the next. One NATS
  connection sends in order, so the stream holds the outbox order.
- Any failure (an ack missing after `ack_timeout`, NATS or Postgres gone) rolls back every
  batch in flight: their rows are claimed and published again in the same order, and JetStream
  drops the copies it already has (`Nats-Msg-Id`, duplicate window `DUPLICATE_WINDOW`). A
  crash between ack and stamp does the same on restart.
- Wake-ups: the unit of work calls `wake()` after a commit that wrote events; the leader also
  LISTENs for other processes' NOTIFY; `poll_interval` is only the fallback.
- Every `report_interval` the leader logs what it did: rows, rate, mean batch, oldest
  unpublished row's age (the lag metrics, until there is a metrics endpoint).

`OutboxHousekeeping` deletes published rows older than the retention, in seq-range chunks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.db import KitTables
from services.kit.events import EVENT_TYPE_HEADER

log = logging.getLogger("cartage.relay")

DUPLICATE_WINDOW = timedelta(hours=2)
REQUEST_ID_HEADER = "Cartage-Request-Id"
MSG_ID_HEADER = "Nats-Msg-Id"


async def connect(url: str, *, name: str, stop: asyncio.Event | None = None) -> NatsClient:
    """Connect, retrying the first connection too (nats-py gives up on it by default), and
    reconnect forever afterwards. Returns once connected; raises CancelledError if stopped."""
    delay = 0.2
    while True:
        try:
            return await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                # The relay keeps thousands of publishes in flight.
                pending_size=64 * 1024 * 1024,
            )
        except (OSError, nats.errors.NoServersError, TimeoutError) as error:
            if stop is not None and stop.is_set():
                raise asyncio.CancelledError from error
            log.warning("nats not reachable, retrying", extra={"url": url, "error": str(error)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ensure_stream(js: JetStreamContext, name: str, subjects: Sequence[str], *,
                        update: bool = True) -> None:
    """Create a file-backed stream with our duplicate window, or update it to that config
    (`update=False`: leave an existing stream as its owner declared it; consumers use that)."""
    config = js_api.StreamConfig(
        name=name,
        subjects=list(subjects),
        storage=js_api.StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
    )
    try:
        await js.stream_info(name)
        if update:
            await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)


def plain_url(engine: AsyncEngine) -> str:
    """The engine's URL for asyncpg itself."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _lock_key(schema: str) -> int:
    """The advisory lock the leading relay of `schema` holds (a stable signed 64-bit id)."""
    return zlib.crc32(f"cartage.outbox-relay:{schema}".encode()) | (0x5E1A << 32)


@dataclass(slots=True)
class _Batch:
    pool: asyncpg.Pool
    conn: asyncpg.Connection
    tx: Any
    seqs: list[int]
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Stats:
    rows: int = 0
    batches: int = 0
    duplicates: int = 0
    since: float = field(default_factory=time.monotonic)


class OutboxRelay:
    """Publishes a service's outbox to JetStream (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        tables: KitTables,
        nats_url: str,
        *,
        name: str,
        streams: dict[str, Sequence[str]] | None = None,
        claim_size: int = 2000,
        window: int = 8000,
        poll_interval: float = 0.5,
        coalesce: float = 0.005,
        ack_timeout: float = 10.0,
        report_interval: float = 10.0,
        crash_after_publish: bool = False,
    ) -> None:
        self._engine = engine
        self._nats_url = nats_url
        self._name = name
        self._streams = dict(streams or {})
        self._claim_size = claim_size
        self._window = max(window, claim_size)
        self._poll_interval = poll_interval
        self._coalesce = coalesce
        self._ack_timeout = ack_timeout
        self._report_interval = report_interval
        # Test-only fail point: exit the process after JetStream acked a batch and before its
        # rows are stamped, the exact window in which a naive relay would publish twice.
        self._crash_after_publish = crash_after_publish
        self._wake = asyncio.Event()
        self._nc: NatsClient | None = None
        self.leading = False
        schema = tables.schema
        table = f'"{schema}".outbox'
        self._channel = f"cartage_outbox_{schema}"
        self._lock = _lock_key(schema)
        # Served by the partial index ix_outbox_unpublished however long the history is.
        self._claim_sql = (
            f"SELECT seq, event_id, subject, event_type, payload, request_id FROM {table} "
            f"WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED")
        self._stamp_sql = (f"UPDATE {table} SET published_at = clock_timestamp() "
                           f"WHERE seq = ANY($1::bigint[])")
        self._oldest_sql = (f"SELECT EXTRACT(EPOCH FROM clock_timestamp() - created_at) "
                            f"FROM {table} WHERE published_at IS NULL ORDER BY seq LIMIT 1")

    def wake(self) -> None:
        """Called after a commit that wrote events."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def ready(self) -> bool:
        """A health check: the relay can publish."""
        return self.connected

    async def run(self, stop: asyncio.Event) -> None:
        try:
            self._nc = await connect(self._nats_url, name=f"{self._name}-relay", stop=stop)
        except asyncio.CancelledError:
            return
        js = self._nc.jetstream(timeout=5)
        backoff = 0.1
        streams_ready = False
        try:
            while not stop.is_set():
                try:
                    if not streams_ready:
                        for stream, subjects in self._streams.items():
                            await ensure_stream(js, stream, subjects)
                        streams_ready = True
                    await self._session(js, stop)
                    backoff = 0.1
                except Exception as error:  # NATS or Postgres down: rows wait in the outbox
                    log.warning("outbox relay failed, will retry", extra={"error": repr(error)})
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self.leading = False
            await self._nc.close()

    async def _session(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        """One control connection: stand by until this relay leads, then relay until stopped
        or until something fails (the caller retries)."""
        url = plain_url(self._engine)
        control = await asyncpg.connect(url)
        pool: asyncpg.Pool | None = None
        try:
            while not await control.fetchval("SELECT pg_try_advisory_lock($1)", self._lock):
                # Another relay leads: hand our process's commits to it.
                await _wait_any(stop, self._wake, self._poll_interval)
                if stop.is_set():
                    return
                if self._wake.is_set():
                    self._wake.clear()
                    await control.execute(f"NOTIFY {self._channel}")
            self.leading = True
            await control.add_listener(self._channel, lambda *_: self._wake.set())
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=self._window // self._claim_size + 1)
            await self._lead(js, stop, control, pool)
        finally:
            self.leading = False
            if pool is not None:
                await pool.close()
            await control.close()

    async def _lead(self, js: JetStreamContext, stop: asyncio.Event,
                    control: asyncpg.Connection, pool: asyncpg.Pool) -> None:
        in_flight: deque[_Batch] = deque()
        stats = _Stats()
        try:
            while not stop.is_set():
                if control.is_closed():
                    raise ConnectionError("lost the relay's control connection (and its lock)")
                # Cleared before claiming, so a commit that lands meanwhile wakes us again.
                self._wake.clear()
                caught_up = False
                while sum(len(b.seqs) for b in in_flight) < self._window:
                    batch = await self._claim_and_publish(js, pool)
                    if batch is None:
                        caught_up = True
                        break
                    in_flight.append(batch)
                    if len(batch.seqs) < self._claim_size:
                        caught_up = True
                        break
                if in_flight:
                    await self._complete(in_flight.popleft(), stats)
                if caught_up and not in_flight:
                    await self._report(control, stats)
                    await _wait_any(stop, self._wake, self._poll_interval)
                    # Let concurrent commits gather into one claim (a few ms of lag).
                    await _sleep_or_stop(stop, self._coalesce)
                elif time.monotonic() - stats.since >= self._report_interval:
                    await self._report(control, stats)
        finally:
            for batch in in_flight:  # not stamped: claimed and published again, in order
                await self._abandon(batch)

    async def _claim_and_publish(self, js: JetStreamContext, pool: asyncpg.Pool
                                 ) -> _Batch | None:
        conn = await pool.acquire()
        batch: _Batch | None = None
        tx = conn.transaction()
        try:
            await tx.start()
            rows = await conn.fetch(self._claim_sql, self._claim_size)
            if not rows:
                await tx.rollback()
                await pool.release(conn)
                return None
            batch = _Batch(pool, conn, tx, [row[0] for row in rows])
            for _, event_id, subject, event_type, payload, request_id in rows:
                batch.futures.append(await js.publish_async(
                    subject, payload,
                    headers={MSG_ID_HEADER: event_id, EVENT_TYPE_HEADER: event_type,
                             REQUEST_ID_HEADER: request_id}))
        except BaseException:
            if batch is not None:
                await self._abandon(batch)
            else:
                await _quietly(tx.rollback())
                await _quietly(pool.release(conn))
            raise
        return batch

    async def _complete(self, batch: _Batch, stats: _Stats) -> None:
        """Wait for the batch's acks, stamp its rows and commit (or raise, leaving it to
        `_lead` to roll back)."""
        futures = batch.futures
        # The futures carry no deadline of their own (NATS may be gone): give them one.
        _, pending = await asyncio.wait(futures, timeout=self._ack_timeout)
        if pending:
            raise TimeoutError(f"{len(pending)} of {len(futures)} JetStream acks missing "
                               f"after {self._ack_timeout:.0f}s")
        acks = [future.result() for future in futures]  # raises a publish's error
        if self._crash_after_publish:
            os._exit(17)
        await batch.conn.execute(self._stamp_sql, batch.seqs)
        await batch.tx.commit()
        await batch.pool.release(batch.conn)
        stats.rows += len(batch.seqs)
        stats.batches += 1
        stats.duplicates += sum(1 for ack in acks if ack.duplicate)

    async def _abandon(self, batch: _Batch) -> None:
        for future in batch.futures:
            if future.done():
                if not future.cancelled():
                    future.exception()  # retrieved, so asyncio does not log it as lost
            else:
                future.cancel()
        await _quietly(batch.tx.rollback())
        await _quietly(batch.pool.release(batch.conn))

    async def _report(self, control: asyncpg.Connection, stats: _Stats) -> None:
        now = time.monotonic()
        if now - stats.since < self._report_interval:
            return
        oldest = await control.fetchval(self._oldest_sql)
        if stats.rows or oldest is not None:
            seconds = now - stats.since
            log.info("outbox relay", extra={
                "published": stats.rows,
                "publish_rate_per_s": round(stats.rows / seconds, 1),
                "mean_batch": round(stats.rows / stats.batches, 1) if stats.batches else 0,
                "republished_duplicates": stats.duplicates,
                "oldest_unpublished_age_s": round(float(oldest), 3) if oldest is not None
                else 0.0,
            })
        stats.rows = stats.batches = stats.duplicates = 0
        stats.since = now


class OutboxHousekeeping:
    """Deletes published outbox rows older than `retention`, every `interval`, in chunks of
    `chunk` seqs (each its own short transaction, so the relay and writers never wait long).
    Published rows are no longer needed for delivery: a republish is driven by unpublished rows
    only, and JetStream's duplicate window covers the rest."""

    def __init__(self, engine: AsyncEngine, tables: KitTables, *, retention: timedelta,
                 interval: float = 60.0, chunk: int = 20_000) -> None:
        self._engine = engine
        self._retention = retention
        self._interval = interval
        self._chunk = chunk
        table = f'"{tables.schema}".outbox'
        self._bounds_sql = (
            f"SELECT (SELECT min(seq) FROM {table}), "
            f"(SELECT seq FROM {table} WHERE published_at IS NULL ORDER BY seq LIMIT 1), "
            f"(SELECT max(seq) FROM {table})")
        self._delete_sql = (
            f"WITH gone AS (DELETE FROM {table} WHERE seq >= $1 AND seq < $2 "
            f"AND published_at < clock_timestamp() - $3::interval RETURNING 1) "
            f"SELECT count(*) FROM gone")
        self._kept_sql = (f"SELECT count(*) FROM {table} WHERE seq >= $1 AND seq < $2 "
                          f"AND published_at IS NOT NULL")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                deleted = await self.sweep()
                if deleted:
                    log.info("outbox housekeeping", extra={"deleted": deleted})
            except Exception as error:  # Postgres away: try again next round
                log.warning("outbox housekeeping failed", extra={"error": repr(error)})
            await _sleep_or_stop(stop, self._interval)

    async def sweep(self) -> int:
        """Delete what is due now; returns the number of rows deleted."""
        conn = await asyncpg.connect(plain_url(self._engine))
        try:
            low, first_unpublished, high = await conn.fetchrow(self._bounds_sql)
            if low is None:
                return 0
            end = first_unpublished if first_unpublished is not None else high + 1
            deleted = 0
            while low < end:
                upper = min(low + self._chunk, end)
                gone = await conn.fetchval(self._delete_sql, low, upper, self._retention)
                deleted += gone
                # Rows are published in seq order: once a chunk keeps published rows (too
                # young), every later chunk would too.
                if await conn.fetchval(self._kept_sql, low, upper):
                    break
                low = upper
            return deleted
        finally:
            await conn.close()


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:  # already failing; the original error is what matters
        pass


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
