"""The outbox relay and its housekeeping: outbox rows to JetStream, at the rate services write.

How a row leaves (`OutboxRelay`):

- One relay per schema publishes at a time: the leader holds a session advisory lock on a
  connection of its own. Every other relay (worker processes, replicas) stands by, retries the
  lock at each poll, and passes its process's commit wake-ups on to the leader with NOTIFY.
  One publisher is what keeps each aggregate's events in commit order in the stream; two
  relays claiming side by side (SKIP LOCKED) could send an aggregate's second event before
  another relay's first.
- The leader works as a pipeline: it claims up to `claim_size` unpublished rows (oldest
  first, on the partial index; no row locks, it is the only publisher, and the rows of the
  batches still in flight are left out by seq), publishes them all with a reply subject for
  JetStream's ack (`Nats-Msg-Id` = event id), and claims the next batch while up to `window`
  rows wait for their acks. A stamper task completes batches strictly in order: it waits for
  the oldest batch's acks and stamps it, together with every later batch already acked, with
  one UPDATE. One NATS connection sends in order, so the stream holds the outbox order; a
  claim always starts at the oldest unpublished row, so a row that committed late still goes
  out before any later change of its aggregate (those wait for its commit).
- Any failure (an ack missing after `ack_timeout`, NATS or Postgres gone) abandons every
  batch in flight unstamped: their rows are claimed and published again in the same order, and
  JetStream drops the copies it already has (`Nats-Msg-Id`, duplicate window
  `DUPLICATE_WINDOW`). A crash between ack and stamp does the same on restart. (A leader whose
  lock connection dies notices before its next claim; a batch it sends meanwhile may reach the
  stream beside the new leader's, again deduplicated by id.)
- The relay runs on an event loop in a thread of its own (`run`), so that request handlers
  holding the service's loop do not hold it up.
- Wake-ups: the unit of work calls `wake()` after a commit that wrote events; the leader also
  LISTENs for other processes' NOTIFY; `poll_interval` is only the fallback.
- Every `report_interval` the leader logs what it did: rows, rate, mean batch, oldest
  unpublished row's age (the lag metrics, until there is a metrics endpoint).

`OutboxHousekeeping` deletes published rows older than the retention, in seq-range chunks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import nats
import uvloop
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NoStreamResponseError, NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.db import KitTables
from services.kit.events import EVENT_TYPE_HEADER
from services.kit.metrics import OUTBOX_BACKLOG, OUTBOX_LAG, OUTBOX_PUBLISHED

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


class _Acks:
    """JetStream's publish acks, on one reply subscription. What nats-py's `publish_async`
    does, without its per-message semaphore, deadline wrapper, random token and PubAck
    dataclass: about a third of the relay's CPU per event went there. A future's result is
    whether JetStream already had the message (a duplicate)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self._next = 0

    @classmethod
    async def open(cls, nc: NatsClient) -> _Acks:
        acks = cls(nc.new_inbox() + ".")
        await nc.subscribe(acks.prefix + "*", cb=acks._on_reply)
        return acks

    def expect(self) -> tuple[str, asyncio.Future[bool]]:
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        return token, future

    def forget(self, tokens: Sequence[str]) -> None:
        for token in tokens:
            self._pending.pop(token, None)

    async def _on_reply(self, msg: Any) -> None:
        future = self._pending.pop(msg.subject[len(self.prefix):], None)
        if future is None or future.done():
            return
        data = msg.data
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(NoStreamResponseError())
        elif b'"error"' in data:
            future.set_exception(RuntimeError(f"JetStream refused the event: {data[:300]!r}"))
        else:
            future.set_result(b'"duplicate":true' in data)


@dataclass(slots=True)
class _Batch:
    seqs: list[int]
    acks: _Acks
    tokens: list[str] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    sent: asyncio.Event = field(default_factory=asyncio.Event)  # every row handed to NATS


def _abandon(batch: _Batch) -> None:
    batch.acks.forget(batch.tokens)
    for future in batch.futures:
        if future.done():
            if not future.cancelled():
                future.exception()  # retrieved, so asyncio does not log it as lost
        else:
            future.cancel()


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
        self._loop: asyncio.AbstractEventLoop | None = None  # the relay thread's
        self._nc: NatsClient | None = None
        self.leading = False
        schema = tables.schema
        table = f'"{schema}".outbox'
        self._channel = f"cartage_outbox_{schema}"
        self._lock = _lock_key(schema)
        # Served by the partial index ix_outbox_unpublished however long the history is.
        self._claim_sql = (
            f"SELECT seq, event_id, subject, event_type, payload, request_id FROM {table} "
            f"WHERE published_at IS NULL AND seq <> ALL($2::bigint[]) ORDER BY seq LIMIT $1")
        self._stamp_sql = (f"UPDATE {table} SET published_at = clock_timestamp() "
                           f"WHERE seq = ANY($1::bigint[])")
        self._oldest_sql = (f"SELECT EXTRACT(EPOCH FROM clock_timestamp() - created_at) "
                            f"FROM {table} WHERE published_at IS NULL ORDER BY seq LIMIT 1")
        self._backlog_sql = f"SELECT count(*) FROM {table} WHERE published_at IS NULL"

    def wake(self) -> None:
        """Called after a commit that wrote events (from the service's event loop)."""
        loop = self._loop
        if loop is not None and not self._wake.is_set():  # a racy read at worst wakes twice
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the relay's loop just closed
                pass

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def ready(self) -> bool:
        """A health check: the relay can publish."""
        return self.connected

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop`, on an event loop in a thread of its own. Under load the service's
        loop runs request handlers that hold it for tens of milliseconds at a time (a 500-order
        batch); a relay sharing that loop got a turn per handler step and fell seconds behind.
        In its own thread it gets the interpreter every switch interval (5 ms) instead."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        ready = threading.Event()
        own_stop: list[asyncio.Event] = []

        def settle(error: BaseException | None) -> None:
            if not finished.done():
                if error is None:
                    finished.set_result(None)
                else:
                    finished.set_exception(error)

        async def main() -> None:
            own_stop.append(asyncio.Event())
            self._wake = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            ready.set()
            await self._run_here(own_stop[0])

        def thread() -> None:
            error: BaseException | None = None
            try:
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    runner.run(main())
            except BaseException as exc:  # handed to the service's loop, which raises it
                error = exc
            finally:
                self._loop = None
                ready.set()
                try:
                    loop.call_soon_threadsafe(settle, error)
                except RuntimeError:  # the service's loop is already closed: nobody waits
                    pass

        worker = threading.Thread(target=thread, name=f"{self._name}-outbox-relay", daemon=True)
        worker.start()
        await asyncio.to_thread(ready.wait)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([stopper, finished], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            relay_loop = self._loop
            if relay_loop is not None and own_stop:
                relay_loop.call_soon_threadsafe(own_stop[0].set)
            await asyncio.shield(finished)

    async def _run_here(self, stop: asyncio.Event) -> None:
        try:
            self._nc = await connect(self._nats_url, name=f"{self._name}-relay", stop=stop)
        except asyncio.CancelledError:
            return
        js = self._nc.jetstream(timeout=5)
        acks = await _Acks.open(self._nc)
        backoff = 0.1
        streams_ready = False
        try:
            while not stop.is_set():
                try:
                    if not streams_ready:
                        for stream, subjects in self._streams.items():
                            await ensure_stream(js, stream, subjects)
                        streams_ready = True
                    await self._session(acks, stop)
                    backoff = 0.1
                except Exception as error:  # NATS or Postgres down: rows wait in the outbox
                    log.warning("outbox relay failed, will retry", extra={"error": repr(error)})
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self.leading = False
            await self._nc.close()

    async def _session(self, acks: _Acks, stop: asyncio.Event) -> None:
        """One control connection: stand by until this relay leads, then relay until stopped
        or until something fails (the caller retries)."""
        url = plain_url(self._engine)
        control = await asyncpg.connect(url)
        claims = stamps = None
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
            # Claims and stamps on connections of their own, so that they overlap.
            claims = await asyncpg.connect(url)
            # The claim must walk ix_outbox_unpublished in seq order and stop after LIMIT rows.
            # With stale statistics (a burst of inserts not yet analyzed) the planner instead
            # read every unpublished row and sorted them on disk: 250 ms instead of 1 ms per
            # claim of 2,000 out of 40,000. And it must plan with the batches in flight as a
            # constant, which Postgres hashes: a generic plan checked each row against the
            # array one element at a time (6,000 in flight: 100-350 ms per claim). This
            # connection runs the claim only.
            await claims.execute("SET enable_sort = off; SET enable_bitmapscan = off; "
                                 "SET plan_cache_mode = force_custom_plan")
            stamps = await asyncpg.connect(url)
            await self._lead(acks, stop, control, claims, stamps)
        finally:
            self.leading = False
            for conn in (claims, stamps, control):
                if conn is not None:
                    await _quietly(conn.close())

    async def _lead(self, acks: _Acks, stop: asyncio.Event,
                    control: asyncpg.Connection, claims: asyncpg.Connection,
                    stamps: asyncpg.Connection) -> None:
        """Claim and publish here; a stamper task waits for each batch's acks and stamps the
        batches in order. The leader needs no row locks: it is the only publisher, and the
        batches in flight are left out of the next claim by their seqs, so a claim still
        starts at the oldest unpublished row (one that committed late is not skipped)."""
        in_flight: deque[_Batch] = deque()
        queued = asyncio.Event()
        room = asyncio.Event()
        stats = _Stats()
        stamper = asyncio.ensure_future(
            self._stamp_in_order(queued, in_flight, room, stamps, stats))
        try:
            while not stop.is_set():
                if control.is_closed():
                    raise ConnectionError("lost the relay's control connection (and its lock)")
                if stamper.done():
                    stamper.result()  # raises what stopped it
                    raise RuntimeError("the relay's stamper ended")
                if sum(len(b.seqs) for b in in_flight) >= self._window:
                    room.clear()
                    await _wait_any(stop, room, self._ack_timeout, stamper)
                    continue
                # Cleared before claiming, so a commit that lands meanwhile wakes us again.
                self._wake.clear()
                exclude = [seq for b in in_flight for seq in b.seqs]
                rows = await claims.fetch(self._claim_sql, self._claim_size, exclude)
                if rows:
                    batch = _Batch([row[0] for row in rows], acks)
                    in_flight.append(batch)
                    publish = self._nc.publish
                    for _, event_id, subject, event_type, payload, request_id in rows:
                        token, future = acks.expect()
                        batch.tokens.append(token)
                        batch.futures.append(future)
                        await publish(subject, payload, reply=acks.prefix + token, headers={
                            MSG_ID_HEADER: event_id, EVENT_TYPE_HEADER: event_type,
                            REQUEST_ID_HEADER: request_id})
                    batch.sent.set()
                    queued.set()
                if len(rows) < self._claim_size:  # caught up
                    if time.monotonic() - stats.since >= self._report_interval:
                        await self._report(control, stats)
                    await _wait_any(stop, self._wake, self._poll_interval, stamper)
                    # Let concurrent commits gather into one claim (a few ms of lag).
                    await _sleep_or_stop(stop, self._coalesce)
                elif time.monotonic() - stats.since >= self._report_interval:
                    await self._report(control, stats)
        finally:
            stamper.cancel()
            await asyncio.gather(stamper, return_exceptions=True)
            for batch in in_flight:  # not stamped: claimed and published again, in order
                _abandon(batch)

    async def _stamp_in_order(self, queued: asyncio.Event, in_flight: deque[_Batch],
                              room: asyncio.Event, stamps: asyncpg.Connection,
                              stats: _Stats) -> None:
        """Wait for the oldest batch's acks, then stamp it together with every later batch
        whose acks are in too (one UPDATE, autocommit: fewer, larger writes keep up better),
        and drop them from the batches in flight. Raise on the first batch that misses an
        ack, so that no later batch is stamped before it."""
        while True:
            while not in_flight or not in_flight[0].sent.is_set():
                queued.clear()
                await queued.wait()
            futures = in_flight[0].futures
            # The futures carry no deadline of their own (NATS may be gone): give them one.
            _, pending = await asyncio.wait(futures, timeout=self._ack_timeout)
            if pending:
                raise TimeoutError(f"{len(pending)} of {len(futures)} JetStream acks missing "
                                   f"after {self._ack_timeout:.0f}s")
            group = [in_flight[0]]
            for later in itertools.islice(in_flight, 1, None):
                if not later.sent.is_set() or not all(f.done() for f in later.futures):
                    break
                group.append(later)
            acks = [future.result() for batch in group for future in batch.futures]
            if self._crash_after_publish:
                os._exit(17)
            seqs = [seq for batch in group for seq in batch.seqs]
            await stamps.execute(self._stamp_sql, seqs)
            for _ in group:
                in_flight.popleft()
            room.set()
            stats.rows += len(seqs)
            OUTBOX_PUBLISHED.labels(self._name).inc(len(seqs))
            stats.batches += len(group)
            stats.duplicates += sum(acks)

    async def _report(self, control: asyncpg.Connection, stats: _Stats) -> None:
        now = time.monotonic()
        if now - stats.since < self._report_interval:
            return
        oldest = await control.fetchval(self._oldest_sql)
        OUTBOX_LAG.labels(self._name).set(float(oldest) if oldest is not None else 0.0)
        OUTBOX_BACKLOG.labels(self._name).set(
            await control.fetchval(self._backlog_sql) if oldest is not None else 0)
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


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float,
                    also: asyncio.Future[Any] | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait([*waiters, *([also] if also is not None else [])], timeout=seconds,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
