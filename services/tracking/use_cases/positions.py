"""Positions in: sort, store, move each vehicle's last known position forward, then run the
geofences and ETAs on the fixes that are new — all in one transaction per request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.kit.errors import NotFound
from services.kit.uow import Transaction, UnitOfWork
from services.tracking.domain import eta as eta_model
from services.tracking.domain.geofencing import Happening, Presence, step
from services.tracking.domain.positions import Fix, LastKnown, Refused, newest, sort_fixes
from services.tracking.domain.shipment import Milestone, Type
from services.tracking.use_cases.geofences import Geofences
from services.tracking.use_cases.milestones import Milestones
from services.tracking.use_cases.ports import Codecs, Events, Store

GEOFENCE_SOURCE = 3  # cartage.tracking.v1.MilestoneSource GEOFENCE


@dataclass(frozen=True, slots=True)
class Rules:
    free_time: timedelta
    eta_threshold: timedelta
    speed: eta_model.Speed


@dataclass(slots=True)
class Outcome:
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    refused: list[Refused] = field(default_factory=list)


STORED, LATE = "stored", "late"
Fate = str | Refused  # STORED, LATE, or why it was refused; no entry: a duplicate
SHARED_BATCH = 2000  # positions one group commit takes at most


def _outcome(fixes: Sequence[tuple[int, Fix]], fates: dict[int, Fate],
             refused: Sequence[Refused], offset: int) -> Outcome:
    """The outcome of one request whose fixes are at `offset`… of a (shared) `fates`."""
    out = Outcome(refused=list(refused))
    for position, (index, _) in enumerate(fixes):
        fate = fates.get(offset + position)
        if fate is None:
            out.duplicates += 1
        elif isinstance(fate, Refused):
            out.refused.append(Refused(index, fate.reason, fate.description))
        else:
            out.accepted += 1
            out.late += fate == LATE
    out.refused.sort(key=lambda r: r.index)
    return out


class Positions:
    def __init__(self, uow: UnitOfWork, store: Store, events: Events, codecs: Codecs,
                 geofences: Geofences, milestones: Milestones, rules: Rules,
                 clock: Callable[[], datetime]) -> None:
        self._uow = uow
        self._store = store
        self._events = events
        self._codecs = codecs
        self._geofences = geofences
        self._milestones = milestones
        self._rules = rules
        self._clock = clock
        self._known: dict[str, set[str]] = {}
        self._pending: dict[str, list[tuple[list[tuple[int, Fix]], asyncio.Future[Any]]]] = {}
        self._flushing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(self, client_id: str, fixes: Sequence[tuple[int, Fix]],
                     refused: Sequence[Refused] = (), request_id: str = "") -> Outcome:
        """One request in its own transaction. `refused`: items the API already found
        malformed (they count in the outcome)."""
        await self._check_vehicles(client_id, fixes)
        fates = await self._store_fixes(client_id, fixes, request_id)
        return _outcome(fixes, fates, refused, 0)

    async def record_shared(self, client_id: str, fixes: Sequence[tuple[int, Fix]],
                            refused: Sequence[Refused] = ()) -> Outcome:
        """The same outcome as `record`, but stored together with whatever other requests of
        the client are waiting (group commit): while one transaction runs, the next one
        gathers the stream messages that arrive meanwhile, up to `SHARED_BATCH` positions.
        For streams, whose messages are small and many."""
        await self._check_vehicles(client_id, fixes)
        if not fixes:
            return _outcome(fixes, {}, refused, 0)
        waiting = asyncio.get_running_loop().create_future()
        self._pending.setdefault(client_id, []).append((list(fixes), waiting))
        if client_id not in self._flushing:
            self._flushing.add(client_id)
            task = asyncio.create_task(self._flush(client_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        fates, offset = await waiting
        return _outcome(fixes, fates, refused, offset)

    async def _flush(self, client_id: str) -> None:
        try:
            while self._pending.get(client_id):
                queue = self._pending[client_id]
                taken: list[tuple[list[tuple[int, Fix]], asyncio.Future[Any], int]] = []
                merged: list[tuple[int, Fix]] = []
                while queue and (not merged or len(merged) + len(queue[0][0]) <= SHARED_BATCH):
                    items, waiting = queue.pop(0)
                    offset = len(merged)
                    merged += [(offset + k, fix) for k, (_, fix) in enumerate(items)]
                    taken.append((items, waiting, offset))
                try:
                    fates = await self._store_fixes(client_id, merged, "")
                except Exception as error:  # every request of the group gets the error
                    for _, waiting, _ in taken:
                        if not waiting.done():
                            waiting.set_exception(error)
                    continue
                for _, waiting, offset in taken:
                    if not waiting.done():
                        waiting.set_result((fates, offset))
        finally:
            self._flushing.discard(client_id)

    async def _check_vehicles(self, client_id: str, fixes: Sequence[tuple[int, Fix]]) -> None:
        """NOT_FOUND for a vehicle the client does not have. Known vehicles are remembered
        (a vehicle never stops being the client's)."""
        known = self._known.setdefault(client_id, set())
        unknown = sorted({fix.vehicle for _, fix in fixes} - known)
        if not unknown:
            return
        async with self._uow.transaction() as tx:
            found = await self._store.known_vehicles(tx, client_id, unknown)
        known |= found
        missing = [v for v in unknown if v not in found]
        if missing:
            raise NotFound(f"vehicle vehicles/{missing[0]} not found",
                           reason="VEHICLE_NOT_FOUND", metadata={"vehicle": missing[0]})

    async def _store_fixes(self, client_id: str, fixes: Sequence[tuple[int, Fix]],
                           request_id: str) -> dict[int, Fate]:
        """Each index's fate (missing: refused by the domain, see `_outcome`)."""
        vehicles = sorted({fix.vehicle for _, fix in fixes})
        fates: dict[int, Fate] = {}
        async with self._uow.transaction(request_id) as tx:
            now = self._clock()
            last = await self._store.lock_last_known(tx, client_id, vehicles) if vehicles \
                else {}
            sorted_ = sort_fixes(fixes, now, last)
            for refusal in sorted_.refused:
                fates[refusal.index] = refusal
            accepted = [fix for _, fix in sorted_.accepted]
            inserted = await self._store.insert_positions(tx, client_id, accepted, now)
            stored = []
            for index, fix in sorted_.accepted:
                if (fix.vehicle, fix.time) in inserted:
                    stored.append(fix)
                    known = last.get(fix.vehicle)
                    fates[index] = LATE if known is not None and fix.time < known.time \
                        else STORED
            moved = newest(stored, last)
            forward = [f for f in stored if f.vehicle not in last or f.time > last[f.vehicle].time]
            latest = {v: k for v, k in moved.items() if last.get(v) != k}
            await self._store.save_last_known(tx, client_id, [
                next(f for f in reversed(forward) if f.vehicle == v) for v in sorted(latest)])
            if forward:
                await self._fences(tx, client_id, forward)
                await self._etas(tx, client_id, latest, now)
        return fates

    async def _fences(self, tx: Transaction, client_id: str, fixes: list[Fix]) -> None:
        """Enter / exit / dwell / detention for the new fixes, in time order."""
        index = await self._geofences.index(tx, client_id)
        inside = await self._store.presences(tx, client_id, sorted({f.vehicle for f in fixes}))
        if not len(index) and not inside:
            return
        located = index.locate([f.lat for f in fixes], [f.lng for f in fixes])
        current: dict[tuple[str, str], Presence | None] = dict(inside)
        changed: dict[tuple[str, str], Presence | None] = {}
        # per vehicle, the fences it is inside now (kept up to date below)
        within: dict[str, set[str]] = {}
        for vehicle, fence_id in inside:
            within.setdefault(vehicle, set()).add(fence_id)
        now = self._clock()
        for fix, here in zip(fixes, located, strict=True):
            own = within.setdefault(fix.vehicle, set())
            ids = own | set(here) if here else set(own)
            for fence_id in sorted(ids):
                fence = index.get(fence_id)
                if fence is None:
                    continue
                key = (fix.vehicle, fence_id)
                result = step(current.get(key), fence, fix.vehicle, fix.time, fix.lat, fix.lng,
                              here.get(fence_id, False), fence_id in here,
                              self._rules.free_time)
                if result.presence != current.get(key):
                    current[key] = changed[key] = result.presence
                    if result.presence is None:
                        own.discard(fence_id)
                    else:
                        own.add(fence_id)
                for occurrence in result.occurrences:
                    tx.publish(self._events.geofence(client_id, occurrence,
                                                     self._rules.free_time.total_seconds(), now))
                    if (occurrence.what == Happening.ENTERED and fence.origin == 2
                            and fence.vehicle == fix.vehicle):
                        await self._milestones.record_in(
                            tx, client_id, fence.order_id,
                            Milestone(fence.stop_id, Type.ARRIVED, occurrence.time, 0,
                                      GEOFENCE_SOURCE),
                            self._codecs.milestone_body(fix.vehicle, fix.lat, fix.lng),
                            fix.vehicle)
        if changed:
            await self._store.save_presences(tx, client_id, changed)

    async def _etas(self, tx: Transaction, client_id: str, latest: dict[str, LastKnown],
                    now: datetime) -> None:
        rows = await self._store.route_stops(tx, client_id, vehicle_ids=sorted(latest))
        if not rows:
            return
        progress = await self._store.stop_progress(
            tx, client_id, sorted({r.stop.order_id for r in rows}))
        changed = []
        for vehicle, position in latest.items():
            own = [r for r in rows if r.vehicle_id == vehicle]
            stops = []
            for r in own:
                seen = progress.get((r.stop.order_id, r.stop.stop_id), {})
                done = any(t in seen for t in (Type.DEPARTED, Type.PICKED_UP, Type.DELIVERED))
                stops.append(replace(r.stop, arrived=seen.get(Type.ARRIVED), done=done))
            for r, value in zip(own, eta_model.etas(position, stops, self._rules.speed),
                                strict=True):
                if value is None or value == r.eta:
                    continue
                row = replace(r, eta=value)
                if eta_model.moved(r.published_eta, value, self._rules.eta_threshold):
                    row = replace(row, published_eta=value)
                    tx.publish(self._events.eta_updated(client_id, row, now))
                if not r.late_risk and eta_model.late(value, r.stop.window_end):
                    row = replace(row, late_risk=True)
                    tx.publish(self._events.late_risk(client_id, row, now))
                changed.append(row)
        await self._store.save_etas(tx, client_id, changed)
