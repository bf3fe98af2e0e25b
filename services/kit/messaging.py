"""NATS JetStream consumers: the runner every service reacts through, and the job that runs them.

Delivery guarantees, end to end (publishing: `kit.relay`, re-exported here):

- Publishing: the relay publishes unpublished outbox rows with header `Nats-Msg-Id` = the event
  id, waits for JetStream's acks, and only then stamps the rows; a republish after a crash is
  dropped by JetStream within the stream's duplicate window (`DUPLICATE_WINDOW`).
- Consuming: `EventConsumer` fetches a batch from a durable pull consumer and, for a handler
  that allows it (`batch_transaction`), records the event ids in the service's `inbox` table
  with one statement in the same transaction as the handler's effects for the whole batch,
  commits, and only then acks (otherwise the same per event). A redelivery finds its id
  and does nothing. If the batch's transaction fails, its messages are handled again one
  transaction each, so that only the message that fails is retried with backoff and, after
  `max_attempts`, copied to the dead-letter stream and terminated; the others go through.
- Order: with `concurrency=1` (the default) a consumer handles its events in stream order. With
  more, a fetched batch is split into that many lanes handled side by side; a `key` keeps the
  events of one key (an aggregate) in one lane, in order.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
import sqlalchemy as sa
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.kit.events import catalog
from services.kit.jobs import Job
from services.kit.metrics import CONSUMER_DEAD_LETTERS, CONSUMER_REDELIVERIES
from services.kit.relay import (
    DUPLICATE_WINDOW,
    MSG_ID_HEADER,
    REQUEST_ID_HEADER,
    OutboxHousekeeping,
    OutboxRelay,
    _sleep_or_stop,
    connect,
    ensure_stream,
)
from services.kit.uow import Transaction, UnitOfWork

__all__ = ["DEAD_LETTER_STREAM", "DEAD_LETTER_SUBJECT_PREFIX", "DUPLICATE_WINDOW",
           "MSG_ID_HEADER", "REQUEST_ID_HEADER", "ConsumerGone", "ConsumerJob", "ConsumerSpec",
           "EventConsumer", "Handler", "OutboxHousekeeping", "OutboxRelay", "connect",
           "ensure_stream"]

log = logging.getLogger(__name__)

DEAD_LETTER_STREAM = "DEAD_LETTER"
DEAD_LETTER_SUBJECT_PREFIX = "deadletter"


Handler = Callable[[Transaction, Msg], Awaitable[None]]


class ConsumerGone(RuntimeError):
    """The durable consumer disappeared from JetStream."""


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer on one stream."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    max_attempts: int = 5
    backoff: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0, 60.0)
    ack_wait: float = 30.0
    # Messages fetched at once; with `batch_transaction` a batch is one transaction (per lane).
    batch: int = 200
    # True only for a handler that allows it: the unit of work sends queued writes
    # (`insert`, `defer`) at commit, so in a shared transaction an event would not see what
    # the one before it queued (routing's order read model and the order service's plan
    # follower both read what the previous event wrote), and a handler's work outside the
    # database would be repeated when the batch falls back to one transaction per event.
    batch_transaction: bool = False
    # Lanes handled side by side; 1 keeps the stream's order for the whole consumer.
    concurrency: int = 1
    # With concurrency > 1: the events of one key (say, the aggregate's name) share a lane and
    # keep their order; None spreads events over the lanes in no particular order.
    key: Callable[[Msg], str] | None = None

    @classmethod
    def of(cls, durable: str, *subjects: str, **options: Any) -> ConsumerSpec:
        """A consumer of these event subjects; the stream comes from the contracts' registry
        (`kit.events`), and all subjects must be on one stream."""
        streams = {catalog().of_subject(subject).stream for subject in subjects}
        if len(streams) != 1:
            raise ValueError(f"{durable}: subjects {subjects} are not on one stream")
        return cls(stream=streams.pop(), durable=durable, filter_subjects=subjects, **options)


class EventConsumer:
    """Runs a handler for each event exactly once in effect (inbox + ack after commit)."""

    def __init__(self, uow: UnitOfWork, nc: NatsClient, spec: ConsumerSpec, handler: Handler):
        self._uow = uow
        self._nc = nc
        self._js = nc.jetstream(timeout=5)
        self._spec = spec
        self._handler = handler
        self._inbox = uow.tables.inbox
        self._sub: Any = None
        inbox = self._inbox
        # All of a batch's ids in one statement; the ones returned are new.
        self._insert_many = sa.text(
            f'INSERT INTO "{uow.tables.schema}".{inbox.name} (consumer, event_id) '
            f"SELECT :consumer, unnest(:ids) ON CONFLICT DO NOTHING RETURNING event_id"
        ).bindparams(sa.bindparam("consumer", type_=sa.Text),
                     sa.bindparam("ids", type_=postgresql.ARRAY(sa.Text)))

    async def subscribe(self) -> None:
        """Create (or find) the durable consumer and bind a pull subscription to it."""
        spec = self._spec
        await ensure_stream(self._js, DEAD_LETTER_STREAM, [f"{DEAD_LETTER_SUBJECT_PREFIX}.>"])
        config = js_api.ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            # Redelivery is bounded by our own attempt count (so the dead-letter copy is made
            # by us, crash-safely), not by JetStream's max_deliver.
            max_deliver=-1,
            ack_wait=spec.ack_wait,
            filter_subjects=list(spec.filter_subjects),
            max_ack_pending=max(1000, 2 * spec.batch),
        )
        self._sub = await self._js.pull_subscribe(
            "", durable=spec.durable, stream=spec.stream, config=config
        )

    async def run(self, stop: asyncio.Event, *, batch: int | None = None) -> None:
        """Handle events until `stop`. Raises ConsumerGone when the durable consumer no longer
        exists (deleted by an operator, or lost with the server's store), so that the
        supervisor subscribes again, which re-creates it."""
        if self._sub is None:
            await self.subscribe()
        sub = self._sub
        size = batch or self._spec.batch
        while not stop.is_set():
            try:
                messages = await sub.fetch(size, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as error:
                await self._check_durable(error)
                await _sleep_or_stop(stop, 1.0)
                continue
            for msg in messages:
                if (msg.metadata.num_delivered or 1) > 1:
                    CONSUMER_REDELIVERIES.labels(self._spec.durable).inc()
            lanes = self._lanes(messages)
            if len(lanes) == 1:
                await self.handle_batch(lanes[0])
            else:
                await asyncio.gather(*(self.handle_batch(lane) for lane in lanes))

    def _lanes(self, messages: list[Msg]) -> list[list[Msg]]:
        count = self._spec.concurrency
        if count <= 1 or len(messages) <= 1:
            return [messages]
        lanes: list[list[Msg]] = [[] for _ in range(count)]
        key = self._spec.key
        for i, msg in enumerate(messages):
            lane = zlib.crc32(key(msg).encode()) % count if key is not None else i % count
            lanes[lane].append(msg)
        return [lane for lane in lanes if lane]

    async def _check_durable(self, error: Exception) -> None:
        """After a failed fetch: raise ConsumerGone if the durable is gone; otherwise (NATS
        unreachable or restarting) log and let the caller retry, since nats-py reconnects."""
        try:
            await self._js.consumer_info(self._spec.stream, self._spec.durable)
        except NotFoundError:
            raise ConsumerGone(f"durable consumer {self._spec.durable} on stream "
                               f"{self._spec.stream} is gone") from error
        except Exception:
            pass
        log.warning("fetch failed", extra={"consumer": self._spec.durable,
                                           "error": repr(error)})

    async def handle_batch(self, messages: Sequence[Msg]) -> None:
        """The batch in one transaction (inbox ids inserted together), then the acks; if the
        transaction fails, each message again in a transaction of its own (`handle`)."""
        if len(messages) == 1 or not self._spec.batch_transaction:
            for msg in messages:
                await self.handle(msg)
            return
        ids = [_event_id(msg) for msg in messages]
        try:
            async with self._uow.transaction() as tx:
                new = set((await tx.execute(self._insert_many, {
                    "consumer": self._spec.durable, "ids": ids})).scalars())
                for event_id, msg in zip(ids, messages, strict=True):
                    if event_id in new:
                        new.discard(event_id)  # a duplicate within the batch is a no-op too
                        await self._handler(tx, msg)
        except Exception as error:
            log.warning("event batch failed; handling its events one by one",
                        extra={"consumer": self._spec.durable, "events": len(messages),
                               "error": repr(error)})
            for msg in messages:
                await self.handle(msg)
            return
        for msg in messages:
            await msg.ack()
        # The acks are on their way in order; a PING/PONG round trip shows the server has
        # them (a lost ack only means a redelivery, which the inbox turns into a no-op).
        await self._nc.flush()

    async def handle(self, msg: Msg) -> None:
        event_id = _event_id(msg)
        try:
            async with self._uow.transaction() as tx:
                inserted = await tx.execute(
                    pg_insert(self._inbox)
                    .values(consumer=self._spec.durable, event_id=event_id)
                    .on_conflict_do_nothing()
                    .returning(self._inbox.c.event_id)
                )
                if inserted.first() is not None:
                    await self._handler(tx, msg)
            await msg.ack_sync()
        except Exception as error:
            await self._failed(msg, event_id, error)

    async def _failed(self, msg: Msg, event_id: str, error: Exception) -> None:
        attempt = msg.metadata.num_delivered or 1
        if attempt >= self._spec.max_attempts:
            log.error(
                "event handler failed for the last time; dead-lettered",
                extra={"event_id": event_id, "subject": msg.subject, "attempts": attempt,
                       "error": repr(error)},
            )
            headers = dict(msg.headers or {})
            headers[MSG_ID_HEADER] = f"{self._spec.durable}:{event_id}"
            headers["Cartage-Original-Subject"] = msg.subject
            headers["Cartage-Error"] = repr(error)[:500]
            await self._js.publish(
                f"{DEAD_LETTER_SUBJECT_PREFIX}.{self._spec.stream}.{self._spec.durable}",
                msg.data,
                headers=headers,
            )
            await msg.term()
            CONSUMER_DEAD_LETTERS.labels(self._spec.durable).inc()
            return
        delay = self._spec.backoff[min(attempt - 1, len(self._spec.backoff) - 1)]
        log.warning(
            "event handler failed; will retry",
            extra={"event_id": event_id, "attempt": attempt, "retry_in_s": delay,
                   "error": repr(error)},
        )
        await msg.nak(delay=delay * (0.8 + 0.4 * random.random()))


def _event_id(msg: Msg) -> str:
    return (msg.headers or {}).get(MSG_ID_HEADER) or f"seq:{msg.metadata.sequence.stream}"


class ConsumerJob:
    """A service's consumers on one NATS connection, as one supervised job (`kit.jobs`).

    It declares the streams it reads if they do not exist yet (from the contracts' registry,
    leaving an existing stream as its owner declared it), so it needs no other service running,
    subscribes every consumer, and then runs them until `stop`; if one fails the others are
    stopped and the job raises, and the supervisor starts it again. Ready while connected and
    subscribed."""

    def __init__(self, uow: UnitOfWork, nats_url: str, name: str,
                 consumers: Sequence[tuple[ConsumerSpec, Handler]]) -> None:
        self._uow = uow
        self._nats_url = nats_url
        self.name = name
        self._consumers = list(consumers)
        self._nc: NatsClient | None = None
        self._subscribed = False

    async def ready(self) -> bool:
        return self._subscribed and self._nc is not None and self._nc.is_connected

    async def run(self, stop: asyncio.Event) -> None:
        try:
            self._nc = nc = await connect(self._nats_url, name=self.name, stop=stop)
        except asyncio.CancelledError:
            return
        try:
            js = nc.jetstream(timeout=5)
            streams = catalog().streams()
            for stream in sorted({spec.stream for spec, _ in self._consumers}):
                await ensure_stream(js, stream, streams[stream], update=False)
            runners = [EventConsumer(self._uow, nc, spec, handler)
                       for spec, handler in self._consumers]
            for runner in runners:
                await runner.subscribe()
            self._subscribed = True
            async with asyncio.TaskGroup() as group:
                for runner in runners:
                    group.create_task(runner.run(stop))
        finally:
            self._subscribed = False
            await nc.close()

    def job(self) -> Job:
        return Job(self.name, self.run, ready=self.ready)
