"""Geofences: create, read, delete, the stop fences of the active plan, and each client's
spatial index (kept in memory, rebuilt when that client's fences change in this process).

With several worker processes a fence created in one is seen by the others after
`INDEX_TTL` (their cached index expires); presences and events are in Postgres either way.
An expired index is rebuilt by one task while the others go on with the old one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from services.kit.errors import FailedPrecondition, NotFound
from services.kit.uow import Transaction, UnitOfWork
from services.tracking.domain.geofencing import Fence, FenceIndex, circle, grown
from services.tracking.use_cases.ports import RouteStopRow, Store, StoredFence

INDEX_TTL = 30.0  # seconds a cached index is trusted without a local change


def _not_found(fence_id: str) -> NotFound:
    return NotFound(f"geofence geofences/{fence_id} not found", reason="GEOFENCE_NOT_FOUND")


def stop_fence_id(client_id: str, order_id: str, stop_id: str) -> str:
    """The same stop keeps the same fence across replans (and so its presences)."""
    return hashlib.sha256(f"{client_id}|{order_id}|{stop_id}".encode()).hexdigest()[:32]


class Geofences:
    def __init__(self, uow: UnitOfWork, store: Store, clock: Callable[[], datetime], *,
                 stop_radius_m: float, dwell: timedelta,
                 stop_body: Callable[[Fence], bytes]) -> None:
        self._uow = uow
        self._store = store
        self._clock = clock
        self._stop_radius_m = stop_radius_m
        self._dwell = dwell
        self._stop_body = stop_body
        self._indexes: dict[str, tuple[float, FenceIndex]] = {}
        self._loading: dict[str, asyncio.Future[FenceIndex]] = {}

    @property
    def default_dwell(self) -> timedelta:
        return self._dwell

    async def index(self, tx: Transaction, client_id: str) -> FenceIndex:
        cached = self._indexes.get(client_id)
        if cached is not None and time.monotonic() - cached[0] < INDEX_TTL:
            return cached[1]
        loading = self._loading.get(client_id)
        if loading is not None:
            return cached[1] if cached is not None else await asyncio.shield(loading)
        future: asyncio.Future[FenceIndex] = asyncio.get_running_loop().create_future()
        self._loading[client_id] = future
        try:
            index = FenceIndex([s.fence for s in await self._store.fences(tx, client_id)])
            if self._loading.get(client_id) is future:  # not forgotten meanwhile
                self._indexes[client_id] = (time.monotonic(), index)
            future.set_result(index)
            return index
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters get it, nobody else needs to
            raise
        finally:
            if self._loading.get(client_id) is future:
                del self._loading[client_id]

    def forget(self, client_id: str) -> None:
        self._indexes.pop(client_id, None)
        self._loading.pop(client_id, None)

    async def create(self, client_id: str, inner: object, dwell: timedelta | None,
                     body: Callable[[str, datetime], bytes], request_id: str = ""
                     ) -> StoredFence:
        """`inner` is the validated shape; `body(name, create_time)` its contract bytes."""
        fence_id = os.urandom(16).hex()
        now = self._clock()
        fence = Fence(fence_id, client_id, inner, grown(inner), dwell or self._dwell)
        stored = StoredFence(fence, now, body(fence_id, now))
        async with self._uow.transaction(request_id) as tx:
            await self._store.insert_fence(tx, stored)
        self.forget(client_id)
        return stored

    async def get(self, client_id: str, fence_id: str) -> StoredFence:
        async with self._uow.transaction() as tx:
            stored = await self._store.fence(tx, client_id, fence_id)
        if stored is None:
            raise _not_found(fence_id)
        return stored

    async def list(self, client_id: str, after: tuple[datetime, str] | None, limit: int
                   ) -> list[StoredFence]:
        async with self._uow.transaction() as tx:
            return await self._store.list_fences(tx, client_id, after, limit)

    async def delete(self, client_id: str, fence_id: str, request_id: str = "") -> None:
        async with self._uow.transaction(request_id) as tx:
            stored = await self._store.fence(tx, client_id, fence_id)
            if stored is None:
                raise _not_found(fence_id)
            if stored.fence.origin == 2:
                raise FailedPrecondition("a stop geofence follows the active route plan and "
                                         "cannot be deleted", reason="STOP_GEOFENCE")
            await self._store.delete_fence(tx, client_id, fence_id)
        self.forget(client_id)

    async def follow_plan(self, tx: Transaction, client_id: str, rows: list[RouteStopRow]
                          ) -> None:
        """A fence of `stop_radius_m` around every stop of the new active plan; the previous
        plan's stop fences that it no longer has go (with their presences)."""
        now = self._clock()
        fences: dict[str, StoredFence] = {}  # by id: a stop twice in a plan is one fence
        for r in rows:
            inner, outer = circle(r.stop.lat, r.stop.lng, self._stop_radius_m)
            fence = Fence(stop_fence_id(client_id, r.stop.order_id, r.stop.stop_id), client_id,
                          inner, outer, self._dwell, 2, r.stop.order_id, r.stop.stop_id,
                          r.vehicle_id)
            fences[fence.id] = StoredFence(fence, now, self._stop_body(fence))
        await self._store.replace_stop_fences(tx, client_id, list(fences.values()))
        self.forget(client_id)
