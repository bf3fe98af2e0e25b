"""Positions in: sort, store, move each vehicle's last known position forward, then run the
geofences and ETAs on the fixes that are new — all in one transaction per request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

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

    async def record(self, client_id: str, fixes: Sequence[tuple[int, Fix]],
                     refused: Sequence[Refused] = (), request_id: str = "") -> Outcome:
        """`refused`: items the API already found malformed (they count in the outcome)."""
        vehicles = sorted({fix.vehicle for _, fix in fixes})
        async with self._uow.transaction(request_id) as tx:
            if vehicles:
                missing = set(vehicles) - await self._store.known_vehicles(tx, client_id,
                                                                           vehicles)
                if missing:
                    first = sorted(missing)[0]
                    raise NotFound(f"vehicle vehicles/{first} not found",
                                   reason="VEHICLE_NOT_FOUND", metadata={"vehicle": first})
            now = self._clock()
            last = await self._store.lock_last_known(tx, client_id, vehicles) if vehicles \
                else {}
            sorted_ = sort_fixes(fixes, now, last)
            accepted = [fix for _, fix in sorted_.accepted]
            inserted = await self._store.insert_positions(tx, client_id, accepted, now)
            stored = [f for f in accepted if (f.vehicle, f.time) in inserted]
            moved = newest(stored, last)
            forward = [f for f in stored if f.vehicle not in last or f.time > last[f.vehicle].time]
            latest = {v: k for v, k in moved.items() if last.get(v) != k}
            await self._store.save_last_known(tx, client_id, [
                next(f for f in reversed(forward) if f.vehicle == v) for v in sorted(latest)])
            if forward:
                await self._fences(tx, client_id, forward)
                await self._etas(tx, client_id, latest, now)
        outcome = Outcome(len(stored), sorted_.duplicates + len(accepted) - len(stored),
                          sum(1 for f in stored if f.vehicle in last
                              and f.time < last[f.vehicle].time),
                          sorted([*refused, *sorted_.refused], key=lambda r: r.index))
        return outcome

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
