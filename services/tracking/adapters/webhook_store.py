"""Partner webhooks' SQL: endpoints, deliveries (the durable queue) and dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.tracking.adapters.tables import (
    webhook_dead_letters as dead,
)
from services.tracking.adapters.tables import (
    webhook_deliveries as deliveries,
)
from services.tracking.adapters.tables import (
    webhook_endpoints as endpoints,
)
from services.tracking.adapters.tables import (
    webhook_replays as replays,
)
from services.tracking.domain.webhooks import FAILED, PENDING, RETRYING

DUE = (PENDING, RETRYING)


class WebhookStore:
    async def add_endpoint(self, conn: AsyncConnection, row: dict[str, Any]) -> None:
        await conn.execute(sa.insert(endpoints).values(row))

    async def endpoint(self, conn: AsyncConnection, client_id: str | None, endpoint_id: str,
                       *, lock: bool = False) -> Any:
        query = sa.select(endpoints).where(endpoints.c.id == endpoint_id)
        if client_id is not None:
            query = query.where(endpoints.c.client_id == client_id)
        if lock:
            query = query.with_for_update()
        return (await conn.execute(query)).one_or_none()

    async def endpoints(self, conn: AsyncConnection, client_id: str,
                        after: tuple[datetime, str] | None, limit: int) -> list[Any]:
        query = sa.select(endpoints).where(endpoints.c.client_id == client_id)
        if after is not None:
            query = query.where(sa.tuple_(endpoints.c.create_time, endpoints.c.id)
                                > sa.tuple_(*after))
        query = query.order_by(endpoints.c.create_time, endpoints.c.id).limit(limit)
        return list((await conn.execute(query)).all())

    async def update_endpoint(self, conn: AsyncConnection, endpoint_id: str,
                              values: dict[str, Any]) -> None:
        await conn.execute(sa.update(endpoints).where(endpoints.c.id == endpoint_id).values(
            version=endpoints.c.version + 1, **values))

    async def delete_endpoint(self, conn: AsyncConnection, endpoint_id: str) -> None:
        await conn.execute(sa.delete(deliveries).where(deliveries.c.endpoint_id == endpoint_id))
        await conn.execute(sa.delete(endpoints).where(endpoints.c.id == endpoint_id))

    async def subscribed(self, conn: AsyncConnection, client_id: str) -> list[Any]:
        """The client's enabled endpoints (their event types are matched by the caller)."""
        return list((await conn.execute(
            sa.select(endpoints.c.id, endpoints.c.event_types).where(
                endpoints.c.client_id == client_id, endpoints.c.enabled))).all())

    async def add_deliveries(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """New deliveries; one that exists for the same endpoint and event is left alone."""
        if rows:
            await conn.execute(pg_insert(deliveries).values(rows).on_conflict_do_nothing(
                constraint="webhook_deliveries_event"))

    async def claim(self, conn: AsyncConnection, now: datetime, limit: int,
                    busy: set[str]) -> list[Any]:
        """Due deliveries, locked (SKIP LOCKED: another dispatcher takes others); endpoints in
        `busy` have no free slot and are skipped."""
        query = (sa.select(deliveries.c.id, deliveries.c.endpoint_id)
                 .where(deliveries.c.state.in_(DUE), deliveries.c.next_attempt_time <= now)
                 .order_by(deliveries.c.next_attempt_time).limit(limit)
                 .with_for_update(skip_locked=True))
        if busy:
            query = query.where(deliveries.c.endpoint_id.not_in(sorted(busy)))
        return list((await conn.execute(query)).all())

    async def lease(self, conn: AsyncConnection, ids: list[str], until: datetime) -> list[Any]:
        """Push the claimed rows' next attempt past the attempt's longest duration, so that a
        dispatcher killed mid-attempt leaves them due again then (same webhook-id)."""
        if not ids:
            return []
        return list((await conn.execute(
            sa.update(deliveries).where(deliveries.c.id.in_(ids))
            .values(next_attempt_time=until).returning(*deliveries.c))).all())

    async def record_attempt(self, conn: AsyncConnection, delivery_id: str, attempt: dict,
                             state: int, next_time: datetime | None) -> None:
        await conn.execute(sa.update(deliveries).where(deliveries.c.id == delivery_id).values(
            state=state, next_attempt_time=next_time,
            attempt_count=deliveries.c.attempt_count + 1,
            attempts=deliveries.c.attempts.op("||")(
                sa.bindparam("attempt", [attempt], type_=JSONB))))

    async def dead_letter(self, conn: AsyncConnection, row: Any, reason: str,
                          now: datetime) -> None:
        await conn.execute(pg_insert(dead).values(
            delivery_id=row.id, endpoint_id=row.endpoint_id, client_id=row.client_id,
            reason=reason, create_time=now).on_conflict_do_nothing())

    async def delivery(self, conn: AsyncConnection, client_id: str, endpoint_id: str,
                       delivery_id: str) -> Any:
        return (await conn.execute(sa.select(deliveries).where(
            deliveries.c.id == delivery_id, deliveries.c.endpoint_id == endpoint_id,
            deliveries.c.client_id == client_id))).one_or_none()

    async def deliveries(self, conn: AsyncConnection, endpoint_id: str, state: int,
                         event_type: str, after: tuple[datetime, str] | None,
                         limit: int) -> list[Any]:
        query = sa.select(deliveries).where(deliveries.c.endpoint_id == endpoint_id)
        if state:
            query = query.where(deliveries.c.state == state)
        if event_type:
            query = query.where(deliveries.c.event_type == event_type)
        if after is not None:
            query = query.where(sa.tuple_(deliveries.c.create_time, deliveries.c.id)
                                < sa.tuple_(*after))
        query = query.order_by(deliveries.c.create_time.desc(), deliveries.c.id.desc())
        return list((await conn.execute(query.limit(limit))).all())

    async def reschedule(self, conn: AsyncConnection, delivery_id: str, now: datetime) -> None:
        await conn.execute(sa.update(deliveries).where(deliveries.c.id == delivery_id).values(
            state=RETRYING, next_attempt_time=now))

    async def fail_endpoint_deliveries(self, conn: AsyncConnection, endpoint_id: str) -> None:
        """A disabled endpoint's waiting deliveries stop waiting (RetryDelivery revives one)."""
        await conn.execute(sa.update(deliveries).where(
            deliveries.c.endpoint_id == endpoint_id, deliveries.c.state.in_(DUE)).values(
            state=FAILED, next_attempt_time=None))


    async def replay(self, conn: AsyncConnection, endpoint_id: str, start: datetime | None,
                     end: datetime | None, failed_only: bool, now: datetime) -> int:
        """Schedule the endpoint's deliveries in the range (or its FAILED ones) again now."""
        query = sa.update(deliveries).where(deliveries.c.endpoint_id == endpoint_id)
        if start is not None:
            query = query.where(deliveries.c.create_time >= start)
        if end is not None:
            query = query.where(deliveries.c.create_time < end)
        if failed_only:
            query = query.where(deliveries.c.state == FAILED)
        result = await conn.execute(query.values(state=RETRYING, next_attempt_time=now))
        return result.rowcount

    async def add_replay(self, conn: AsyncConnection, row: dict[str, Any]) -> None:
        await conn.execute(sa.insert(replays).values(row))

    async def replay_of(self, conn: AsyncConnection, client_id: str, replay_id: str) -> Any:
        return (await conn.execute(sa.select(replays).where(
            replays.c.id == replay_id, replays.c.client_id == client_id))).one_or_none()

    async def replays(self, conn: AsyncConnection, client_id: str,
                      after: tuple[datetime, str] | None, limit: int) -> list[Any]:
        query = sa.select(replays).where(replays.c.client_id == client_id)
        if after is not None:
            query = query.where(sa.tuple_(replays.c.create_time, replays.c.id)
                                < sa.tuple_(*after))
        query = query.order_by(replays.c.create_time.desc(), replays.c.id.desc()).limit(limit)
        return list((await conn.execute(query)).all())

    async def delete_replay(self, conn: AsyncConnection, client_id: str, replay_id: str) -> int:
        return (await conn.execute(sa.delete(replays).where(
            replays.c.id == replay_id, replays.c.client_id == client_id))).rowcount
