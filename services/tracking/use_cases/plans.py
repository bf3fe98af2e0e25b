"""The read models other services' events feed: orders (a tracking record each), the active
route plan (vehicles, stops with windows for ETAs, stop geofences) and known vehicles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.kit.uow import Transaction
from services.tracking.domain.eta import PlannedStop
from services.tracking.domain.shipment import DELIVERY, PICKUP
from services.tracking.use_cases.geofences import Geofences
from services.tracking.use_cases.ports import Codecs, RouteStopRow, Store


@dataclass(frozen=True, slots=True)
class PlannedVisit:
    """One stop of a route, as the plan event has it."""

    vehicle_id: str
    order_id: str
    stop_id: str
    lat: float
    lng: float
    service: timedelta


class ReadModels:
    def __init__(self, store: Store, codecs: Codecs, geofences: Geofences,
                 clock: Callable[[], datetime]) -> None:
        self._store = store
        self._codecs = codecs
        self._geofences = geofences
        self._clock = clock

    async def order_changed(self, tx: Transaction, client_id: str, order_id: str,
                            body: bytes) -> None:
        await self._store.upsert_order(tx, client_id, order_id, body, self._clock())

    async def vehicles_seen(self, tx: Transaction, client_id: str, ids: Sequence[str]) -> None:
        await self._store.register_vehicles(tx, client_id, ids, self._clock())

    async def plan_active(self, tx: Transaction, client_id: str, vehicle_ids: Sequence[str],
                          visits: Sequence[PlannedVisit]) -> None:
        """The client's new active plan replaces the previous one."""
        now = self._clock()
        await self._store.register_vehicles(tx, client_id, vehicle_ids, now)
        rows: list[RouteStopRow] = []
        seq: dict[str, int] = {}
        for visit in visits:
            stop = PlannedStop(visit.order_id, visit.stop_id, visit.lat, visit.lng,
                               visit.service)
            tracking = await self._store.tracking(tx, client_id, visit.order_id)
            stops = self._codecs.order_stops(tracking.order_body) if tracking else None
            if stops is not None:
                known = stops.pickup if visit.stop_id == PICKUP else stops.delivery
                stop = replace(stop, window_start=known.window_start,
                               window_end=known.window_end)
            seq[visit.vehicle_id] = seq.get(visit.vehicle_id, -1) + 1
            rows.append(RouteStopRow(visit.vehicle_id, seq[visit.vehicle_id], stop, None, None,
                                     False))
        await self._store.replace_route_stops(tx, client_id, rows)
        await self._store.assign_vehicle(
            tx, client_id, {v.order_id: v.vehicle_id for v in visits
                            if v.stop_id in (PICKUP, DELIVERY)}, now)
        await self._geofences.follow_plan(tx, client_id, rows)
