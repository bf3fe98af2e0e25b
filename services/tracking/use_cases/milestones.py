"""Milestones: record one (from the API or a geofence), list them, and keep the order's
tracking record equal to the projection of its milestones."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from services.kit.errors import NotFound
from services.kit.uow import Transaction, UnitOfWork
from services.tracking.domain.shipment import Milestone, Type, project
from services.tracking.use_cases.ports import Events, Store, StoredMilestone, TrackingRow


def order_not_found(order_id: str) -> NotFound:
    # Another client's order is indistinguishable from a missing one.
    return NotFound(f"order orders/{order_id} has no tracking record",
                    reason="TRACKING_NOT_FOUND")


class Milestones:
    def __init__(self, uow: UnitOfWork, store: Store, events: Events,
                 clock: Callable[[], datetime]) -> None:
        self._uow = uow
        self._store = store
        self._events = events
        self._clock = clock

    async def record(self, client_id: str, order_id: str, milestone: Milestone, body: bytes,
                     vehicle: str = "", request_id: str = "") -> StoredMilestone:
        async with self._uow.transaction(request_id) as tx:
            return await self.record_in(tx, client_id, order_id, milestone, body, vehicle)

    async def record_in(self, tx: Transaction, client_id: str, order_id: str,
                        milestone: Milestone, body: bytes, vehicle: str = "",
                        ) -> StoredMilestone:
        """In the caller's transaction. A duplicate returns the stored milestone and changes
        nothing (no event either)."""
        tracking = await self._store.tracking(tx, client_id, order_id, for_update=True)
        if tracking is None:
            raise order_not_found(order_id)
        now = self._clock()
        stored = StoredMilestone(os.urandom(16).hex(), milestone, now, body)
        if not await self._store.insert_milestone(tx, client_id, order_id, stored):
            existing = await self._store.existing_milestone(tx, client_id, order_id, milestone)
            return existing or stored
        view = project(s.milestone for s in await self._store.milestones(tx, client_id,
                                                                          order_id))
        await self._store.save_tracking(tx, replace(
            tracking, state=int(view.state), state_time=view.state_time,
            milestone_count=view.milestone_count, exceptions=view.exceptions,
            update_time=now, version=tracking.version + 1))
        tx.publish(self._events.milestone_recorded(client_id, order_id, stored,
                                                   int(view.state)))
        if milestone.type == Type.EXCEPTION:
            tx.publish(self._events.exception(client_id, order_id, milestone,
                                              vehicle or tracking.vehicle_id, now))
        return stored

    async def list(self, client_id: str, order_id: str, after: tuple[datetime, str] | None,
                   limit: int) -> list[StoredMilestone]:
        async with self._uow.transaction() as tx:
            if await self._store.tracking(tx, client_id, order_id) is None:
                raise order_not_found(order_id)
            return await self._store.milestones(tx, client_id, order_id, after=after,
                                                limit=limit)

    async def tracking(self, tx: Transaction, client_id: str, order_id: str) -> TrackingRow:
        row = await self._store.tracking(tx, client_id, order_id)
        if row is None:
            raise order_not_found(order_id)
        return row
