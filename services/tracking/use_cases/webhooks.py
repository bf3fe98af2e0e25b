"""Partner webhooks: endpoints (create, read, change, rotate), the fan-out of each domain event
into pending deliveries, and the dispatcher that sends them (Standard Webhooks 1.0)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound
from services.kit.uow import Transaction, UnitOfWork
from services.tracking.domain import webhooks as rules
from services.tracking.domain.webhooks import (
    BY_PARTNER,
    DELIVERED,
    FAILED,
    GONE,
    PENDING,
    RETRYING,
    Public,
    body,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Raises InvalidArgument-worthy text (as an exception with a message) when a URL's host
# resolves to a forbidden address (adapters.webhook_sender.resolve_checked).
ResolveCheck = Callable[[rules.Target], Awaitable[None]]
# The adapters (webhook_store.WebhookStore, webhook_sender.Cipher and Sender) are duck-typed
# here: their methods are the ports.
WebhookStore = Cipher = Sender = Any


def new_id(prefix: str = "") -> str:
    return prefix + os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Policy:
    allow_loopback: bool
    schedule_scale: float = 1.0
    rotation_grace: timedelta = timedelta(hours=24)
    lease_s: float = 60.0


class Endpoints:
    def __init__(self, uow: UnitOfWork, store: WebhookStore, cipher: Cipher, clock: Clock,
                 policy: Policy, resolve_check: ResolveCheck) -> None:
        self._uow, self._store, self._cipher = uow, store, cipher
        self._clock, self._policy, self._resolve_check = clock, policy, resolve_check

    def check_url(self, url: str, field: str) -> rules.Target:
        target, problem = rules.url_problem(url, allow_http=self._policy.allow_loopback)
        if problem is None and target is not None:
            literal = rules.literal_address(target.host)
            if literal is not None:
                reason = rules.address_problem(literal,
                                               allow_loopback=self._policy.allow_loopback)
                problem = None if reason is None else f"{target.host} {reason}"
        if problem is not None:
            raise InvalidArgument(f"{field}: {problem}", violations=[
                rules_violation(field, problem, "UNSAFE_URL")])
        return target

    async def check_resolves(self, target: rules.Target, field: str) -> None:
        """Creation refuses a name resolving to a forbidden address (re-checked per attempt)."""
        try:
            await self._resolve_check(target)
        except ValueError as exc:
            raise InvalidArgument(f"{field}: {exc}", violations=[
                rules_violation(field, str(exc), "UNSAFE_URL")]) from None

    async def create(self, client_id: str, values: dict[str, Any]) -> tuple[Any, str]:
        target = self.check_url(values["url"], "webhook_endpoint.url")
        await self.check_resolves(target, "webhook_endpoint.url")
        secret, now = rules.new_secret(), self._clock()
        row = {"id": new_id(), "client_id": client_id, "url": values["url"],
               "event_types": values["event_types"], "description": values["description"],
               "enabled": True, "disabled_reason": 0, "secret": self._cipher.seal(secret),
               "previous_secret": None, "previous_secret_until": None, "version": 1,
               "create_time": now, "update_time": now}
        async with self._uow.transaction() as tx:
            await self._store.add_endpoint(tx.conn, row)
            stored = await self._store.endpoint(tx.conn, client_id, row["id"])
        return stored, secret

    async def get(self, client_id: str, endpoint_id: str) -> Any:
        async with self._uow.transaction() as tx:
            return await self._found(tx, client_id, endpoint_id)

    async def list(self, client_id: str, after: Any, limit: int) -> list[Any]:
        async with self._uow.transaction() as tx:
            return await self._store.endpoints(tx.conn, client_id, after, limit)

    async def update(self, client_id: str, endpoint_id: str, etag: str,
                     values: dict[str, Any]) -> Any:
        from services.kit.domain import check_etag

        if "url" in values:
            target = self.check_url(values["url"], "webhook_endpoint.url")
            await self.check_resolves(target, "webhook_endpoint.url")
        async with self._uow.transaction() as tx:
            row = await self._found(tx, client_id, endpoint_id, lock=True)
            check_etag(etag, etag_of(row), "webhook endpoint")
            if "enabled" in values:
                values["disabled_reason"] = 0 if values["enabled"] else BY_PARTNER
            await self._store.update_endpoint(tx.conn, endpoint_id,
                                              {**values, "update_time": self._clock()})
            if values.get("enabled") is False:
                await self._store.fail_endpoint_deliveries(tx.conn, endpoint_id)
            return await self._store.endpoint(tx.conn, client_id, endpoint_id)

    async def delete(self, client_id: str, endpoint_id: str) -> None:
        async with self._uow.transaction() as tx:
            await self._found(tx, client_id, endpoint_id, lock=True)
            await self._store.delete_endpoint(tx.conn, endpoint_id)

    async def rotate(self, client_id: str, endpoint_id: str) -> tuple[Any, str]:
        secret, now = rules.new_secret(), self._clock()
        async with self._uow.transaction() as tx:
            row = await self._found(tx, client_id, endpoint_id, lock=True)
            await self._store.update_endpoint(tx.conn, endpoint_id, {
                "secret": self._cipher.seal(secret), "previous_secret": row.secret,
                "previous_secret_until": now + self._policy.rotation_grace,
                "update_time": now})
            return await self._store.endpoint(tx.conn, client_id, endpoint_id), secret

    async def deliveries(self, client_id: str, endpoint_id: str, state: int, event_type: str,
                         after: Any, limit: int) -> list[Any]:
        async with self._uow.transaction() as tx:
            await self._found(tx, client_id, endpoint_id)
            return await self._store.deliveries(tx.conn, endpoint_id, state, event_type, after,
                                                limit)

    async def retry(self, client_id: str, endpoint_id: str, delivery_id: str) -> Any:
        async with self._uow.transaction() as tx:
            endpoint = await self._found(tx, client_id, endpoint_id)
            if not endpoint.enabled:
                raise FailedPrecondition("the endpoint is disabled; enable it first",
                                         reason="ENDPOINT_DISABLED")
            row = await self._store.delivery(tx.conn, client_id, endpoint_id, delivery_id)
            if row is None:
                raise NotFound(f"no delivery {delivery_id}", reason="DELIVERY_NOT_FOUND")
            await self._store.reschedule(tx.conn, delivery_id, self._clock())
            return await self._store.delivery(tx.conn, client_id, endpoint_id, delivery_id)

    async def replay(self, client_id: str, endpoint_id: str, start: datetime | None,
                     end: datetime | None, failed_only: bool) -> Any:
        """A ReplayWebhookEvents operation: the deliveries are scheduled in one statement, so
        the operation is done when it is returned."""
        if start is not None and end is not None and end <= start:
            raise InvalidArgument.single("end_time", "must be after start_time")
        now = self._clock()
        async with self._uow.transaction() as tx:
            endpoint = await self._found(tx, client_id, endpoint_id)
            if not endpoint.enabled:
                raise FailedPrecondition("the endpoint is disabled; enable it first",
                                         reason="ENDPOINT_DISABLED")
            count = await self._store.replay(tx.conn, endpoint_id, start, end, failed_only, now)
            row = {"id": new_id(), "client_id": client_id, "endpoint_id": endpoint_id,
                   "scheduled": count, "create_time": now}
            await self._store.add_replay(tx.conn, row)
            return await self._store.replay_of(tx.conn, client_id, row["id"])

    async def replay_of(self, client_id: str, replay_id: str) -> Any:
        async with self._uow.transaction() as tx:
            row = await self._store.replay_of(tx.conn, client_id, replay_id)
        if row is None:
            raise NotFound(f"no operation {replay_id}", reason="OPERATION_NOT_FOUND")
        return row

    async def replays(self, client_id: str, after: Any, limit: int) -> list[Any]:
        async with self._uow.transaction() as tx:
            return await self._store.replays(tx.conn, client_id, after, limit)

    async def delete_replay(self, client_id: str, replay_id: str) -> None:
        async with self._uow.transaction() as tx:
            if not await self._store.delete_replay(tx.conn, client_id, replay_id):
                raise NotFound(f"no operation {replay_id}", reason="OPERATION_NOT_FOUND")

    async def send_test(self, client_id: str, endpoint_id: str) -> Any:
        now = self._clock()
        async with self._uow.transaction() as tx:
            endpoint = await self._found(tx, client_id, endpoint_id)
            event_id = new_id("test_")
            data = {"webhookEndpoint": f"webhookEndpoints/{endpoint.id}", "eventId": event_id}
            delivery_id = new_id("msg_")
            await self._store.add_deliveries(tx.conn, [delivery_row(
                delivery_id, endpoint.id, client_id, event_id, rules.TEST_EVENT_TYPE,
                body(rules.TEST_EVENT_TYPE, now, data), now)])
            return await self._store.delivery(tx.conn, client_id, endpoint_id, delivery_id)

    async def _found(self, tx: Transaction, client_id: str, endpoint_id: str, *,
                     lock: bool = False) -> Any:
        row = await self._store.endpoint(tx.conn, client_id, endpoint_id, lock=lock)
        if row is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}", reason="ENDPOINT_NOT_FOUND")
        return row


def rules_violation(field: str, description: str, reason: str) -> Any:
    from services.kit.errors import FieldViolation

    return FieldViolation(field, description, reason)


def etag_of(row: Any) -> str:
    return f'W/"{row.version}"'


def delivery_row(delivery_id: str, endpoint_id: str, client_id: str, event_id: str,
                 event_type: str, payload: bytes, now: datetime) -> dict[str, Any]:
    return {"id": delivery_id, "endpoint_id": endpoint_id, "client_id": client_id,
            "event_id": event_id, "event_type": event_type, "body": payload, "state": PENDING,
            "attempt_count": 0, "next_attempt_time": now, "attempts": [], "create_time": now}


async def fan_out(tx: Transaction, store: WebhookStore, event: Public, now: datetime) -> int:
    """A pending delivery for each of the event's tenant's enabled endpoints that subscribed
    to its type, in the consumer's transaction (with its inbox record)."""
    rows = [delivery_row(new_id("msg_"), endpoint.id, event.client_id, event.event_id,
                         event.event_type, event.body, now)
            for endpoint in await store.subscribed(tx.conn, event.client_id)
            if rules.matches(endpoint.event_types, event.event_type)]
    await store.add_deliveries(tx.conn, rows)
    return len(rows)


class Dispatcher:
    """Claims due deliveries (FOR UPDATE SKIP LOCKED, then a lease), sends each at most
    `per_endpoint` at a time per endpoint and `overall` in all, and records the outcome."""

    def __init__(self, uow: UnitOfWork, store: WebhookStore, cipher: Cipher, sender: Sender,
                 clock: Clock, policy: Policy, *, per_endpoint: int = 4, overall: int = 64,
                 poll_s: float = 0.2) -> None:
        self._uow, self._store, self._cipher, self._sender = uow, store, cipher, sender
        self._clock, self._policy = clock, policy
        self._per_endpoint, self._overall, self._poll_s = per_endpoint, overall, poll_s
        self._in_flight: dict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                claimed = await self.claim_once()
                if not claimed:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._poll_s)
                    except TimeoutError:
                        pass
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def claim_once(self) -> int:
        free = self._overall - len(self._tasks)
        if free <= 0:
            await asyncio.sleep(self._poll_s / 4)
            return 0
        busy = {e for e, n in self._in_flight.items() if n >= self._per_endpoint}
        now = self._clock()
        async with self._uow.transaction() as tx:
            candidates = await self._store.claim(tx.conn, now, free * 2, busy)
            taken, counts = [], dict(self._in_flight)
            for row in candidates:
                if len(taken) < free and counts.get(row.endpoint_id, 0) < self._per_endpoint:
                    counts[row.endpoint_id] = counts.get(row.endpoint_id, 0) + 1
                    taken.append(row.id)
            rows = await self._store.lease(tx.conn, taken,
                                           now + timedelta(seconds=self._policy.lease_s))
        for row in rows:
            self._in_flight[row.endpoint_id] += 1
            task = asyncio.create_task(self._attempt(row))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _attempt(self, row: Any) -> None:
        try:
            await self.attempt(row)
        except Exception:
            log.exception("webhook attempt failed unexpectedly; the lease will expire",
                          extra={"delivery": row.id})
        finally:
            self._in_flight[row.endpoint_id] -= 1
            if self._in_flight[row.endpoint_id] <= 0:
                self._in_flight.pop(row.endpoint_id, None)
            self._wake.set()

    async def attempt(self, row: Any) -> None:
        async with self._uow.transaction() as tx:
            endpoint = await self._store.endpoint(tx.conn, None, row.endpoint_id)
        if endpoint is None:
            return  # deleted with its deliveries meanwhile
        now = self._clock()
        if not endpoint.enabled:
            await self._finish(row, {"attempt_time": now.isoformat(), "http_status": 0,
                                     "latency_s": 0.0, "response": "endpoint disabled"},
                               FAILED, None, "endpoint disabled")
            return
        secrets = [self._cipher.open(endpoint.secret)]
        if endpoint.previous_secret is not None and endpoint.previous_secret_until and \
                endpoint.previous_secret_until > now:
            secrets.append(self._cipher.open(endpoint.previous_secret))
        target, problem = rules.url_problem(endpoint.url,
                                            allow_http=self._policy.allow_loopback)
        timestamp = int(now.timestamp())
        payload = bytes(row.body)
        headers = {"webhook-id": row.id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": rules.signature_header(secrets, row.id, timestamp,
                                                               payload)}
        if target is None:
            answer_status, latency, excerpt, retry_after = 0, 0.0, f"refused: {problem}", None
        else:
            answer = await self._sender.post(target, headers, payload)
            answer_status, latency = answer.status, answer.latency_s
            excerpt, retry_after = answer.excerpt, answer.retry_after
        attempt = {"attempt_time": now.isoformat(), "http_status": answer_status,
                   "latency_s": round(latency, 6), "response": excerpt}
        if 200 <= answer_status < 300:
            await self._finish(row, attempt, DELIVERED, None, None)
        elif answer_status == 410:
            await self._finish(row, attempt, FAILED, None, "the receiver answered 410 Gone",
                               disable=True)
        else:
            delay = rules.delay_before(row.attempt_count + 1, self._policy.schedule_scale,
                                       rules.parse_retry_after(retry_after))
            if delay is None:
                await self._finish(row, attempt, FAILED, None, "every attempt failed")
            else:
                await self._finish(row, attempt, RETRYING,
                                   self._clock() + timedelta(seconds=delay), None)

    async def _finish(self, row: Any, attempt: dict, state: int, next_time: datetime | None,
                      dead_reason: str | None, *, disable: bool = False) -> None:
        now = self._clock()
        async with self._uow.transaction() as tx:
            await self._store.record_attempt(tx.conn, row.id, attempt, state, next_time)
            if dead_reason is not None:
                await self._store.dead_letter(tx.conn, row, dead_reason, now)
            if disable:
                await self._store.update_endpoint(tx.conn, row.endpoint_id, {
                    "enabled": False, "disabled_reason": GONE, "update_time": now})
                await self._store.fail_endpoint_deliveries(tx.conn, row.endpoint_id)
