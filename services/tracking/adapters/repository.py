"""SQL for tracking, in SQLAlchemy Core. Implements the use cases' `Store` port.

The position path is a handful of statements per request whatever its size: the vehicles'
last known rows locked in one SELECT, all positions inserted with one `INSERT … SELECT FROM
unnest(…)` (duplicates dropped by the primary key), the last known rows upserted likewise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import shapely
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY

from services.kit.uow import Transaction
from services.tracking.adapters.tables import (
    geofences,
    milestones,
    presences,
    route_stops,
    tracking_links,
    trackings,
    vehicle_state,
    vehicles,
)
from services.tracking.domain.eta import PlannedStop
from services.tracking.domain.geofencing import Fence, Presence
from services.tracking.domain.positions import Fix, LastKnown
from services.tracking.domain.shipment import Milestone, Type
from services.tracking.use_cases.ports import (
    LinkRow,
    RouteStopRow,
    StoredFence,
    StoredMilestone,
    TrackingRow,
)

TEXTS, TIMES = ARRAY(sa.Text), ARRAY(sa.DateTime(timezone=True))
FLOATS = ARRAY(sa.Float(precision=53))


def _p(name: str, type_: Any) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=type_)


_INSERT_POSITIONS = sa.text(
    "INSERT INTO tracking.positions "
    "(client_id, vehicle_id, time, lat, lng, accuracy, speed, heading, record_time) "
    "SELECT :client_id, v, t, la, ln, a, s, h, :now FROM unnest("
    ":vehicles, :times, :lats, :lngs, :accs, :speeds, :headings) AS u(v, t, la, ln, a, s, h) "
    "ON CONFLICT DO NOTHING RETURNING vehicle_id, time"
).bindparams(_p("client_id", sa.Text), _p("now", sa.DateTime(timezone=True)),
             _p("vehicles", TEXTS), _p("times", TIMES), _p("lats", FLOATS), _p("lngs", FLOATS),
             _p("accs", FLOATS), _p("speeds", FLOATS), _p("headings", FLOATS))

_UPSERT_LAST = sa.text(
    "INSERT INTO tracking.vehicle_state "
    "(client_id, vehicle_id, time, lat, lng, accuracy, speed, heading) "
    "SELECT :client_id, v, t, la, ln, a, s, h FROM unnest("
    ":vehicles, :times, :lats, :lngs, :accs, :speeds, :headings) AS u(v, t, la, ln, a, s, h) "
    "ON CONFLICT (client_id, vehicle_id) DO UPDATE SET time = excluded.time, "
    "lat = excluded.lat, lng = excluded.lng, accuracy = excluded.accuracy, "
    "speed = excluded.speed, heading = excluded.heading "
    "WHERE tracking.vehicle_state.time < excluded.time"
).bindparams(_p("client_id", sa.Text), _p("vehicles", TEXTS), _p("times", TIMES),
             _p("lats", FLOATS), _p("lngs", FLOATS), _p("accs", FLOATS), _p("speeds", FLOATS),
             _p("headings", FLOATS))


_DELETE_PRESENCES = sa.text(
    "DELETE FROM tracking.presences p USING unnest(:vehicles, :fences) AS u(v, f) "
    "WHERE p.client_id = :client_id AND p.vehicle_id = u.v AND p.fence_id = u.f"
).bindparams(_p("client_id", sa.Text), _p("vehicles", TEXTS), _p("fences", TEXTS))

_UPSERT_PRESENCES = sa.text(
    "INSERT INTO tracking.presences "
    "(client_id, vehicle_id, fence_id, enter_time, last_time, dwelled, detained) "
    "SELECT :client_id, v, f, e, l, dw, de FROM unnest("
    ":vehicles, :fences, :enters, :lasts, :dwelled, :detained) AS u(v, f, e, l, dw, de) "
    "ON CONFLICT (client_id, vehicle_id, fence_id) DO UPDATE SET "
    "enter_time = excluded.enter_time, last_time = excluded.last_time, "
    "dwelled = excluded.dwelled, detained = excluded.detained"
).bindparams(_p("client_id", sa.Text), _p("vehicles", TEXTS), _p("fences", TEXTS),
             _p("enters", TIMES), _p("lasts", TIMES), _p("dwelled", ARRAY(sa.Boolean)),
             _p("detained", ARRAY(sa.Boolean)))


def _columns(fixes: Sequence[Fix]) -> dict[str, list[Any]]:
    return {"vehicles": [f.vehicle for f in fixes], "times": [f.time for f in fixes],
            "lats": [f.lat for f in fixes], "lngs": [f.lng for f in fixes],
            "accs": [f.accuracy for f in fixes], "speeds": [f.speed for f in fixes],
            "headings": [f.heading for f in fixes]}


def _tracking(row: Any) -> TrackingRow:
    return TrackingRow(row.client_id, row.order_id, bytes(row.order_body), row.vehicle_id,
                       row.state, row.state_time, row.milestone_count, tuple(row.exceptions),
                       row.update_time, row.version)


class TrackingStore:
    # ------------------------------------------------------------------ vehicles, positions

    async def register_vehicles(self, tx: Transaction, client_id: str, ids: Iterable[str],
                                now: datetime) -> None:
        ids = sorted(set(ids))
        if ids:
            await tx.execute(postgresql.insert(vehicles).values(
                [{"client_id": client_id, "vehicle_id": v, "known_since": now} for v in ids]
            ).on_conflict_do_nothing())

    async def known_vehicles(self, tx: Transaction, client_id: str, ids: Sequence[str]
                             ) -> set[str]:
        rows = await tx.execute(sa.select(vehicles.c.vehicle_id).where(
            vehicles.c.client_id == client_id, vehicles.c.vehicle_id.in_(ids)))
        return {r[0] for r in rows}

    async def lock_last_known(self, tx: Transaction, client_id: str, ids: Sequence[str]
                              ) -> dict[str, LastKnown]:
        # FOR UPDATE in a fixed order: two requests for the same vehicles queue, never deadlock
        rows = await tx.execute(
            sa.select(vehicle_state).where(vehicle_state.c.client_id == client_id,
                                           vehicle_state.c.vehicle_id.in_(ids))
            .order_by(vehicle_state.c.vehicle_id).with_for_update())
        return {r.vehicle_id: LastKnown(r.time, r.lat, r.lng) for r in rows}

    async def insert_positions(self, tx: Transaction, client_id: str, fixes: Sequence[Fix],
                               now: datetime) -> set[tuple[str, datetime]]:
        if not fixes:
            return set()
        rows = await tx.execute(_INSERT_POSITIONS,
                                {"client_id": client_id, "now": now, **_columns(fixes)})
        return {(r[0], r[1]) for r in rows}

    async def save_last_known(self, tx: Transaction, client_id: str, fixes: Sequence[Fix]
                              ) -> None:
        if fixes:
            await tx.execute(_UPSERT_LAST, {"client_id": client_id, **_columns(fixes)})

    async def last_position(self, tx: Transaction, client_id: str, vehicle_id: str
                            ) -> Fix | None:
        row = (await tx.execute(sa.select(vehicle_state).where(
            vehicle_state.c.client_id == client_id,
            vehicle_state.c.vehicle_id == vehicle_id))).one_or_none()
        return None if row is None else Fix(row.vehicle_id, row.time, row.lat, row.lng,
                                            row.accuracy, row.speed, row.heading)

    # ------------------------------------------------------------------ trackings, milestones

    async def upsert_order(self, tx: Transaction, client_id: str, order_id: str, body: bytes,
                           now: datetime) -> None:
        statement = postgresql.insert(trackings).values(
            client_id=client_id, order_id=order_id, order_body=body, vehicle_id="", state=1,
            state_time=None, milestone_count=0, exceptions=[], update_time=now, version=1)
        await tx.execute(statement.on_conflict_do_update(
            index_elements=[trackings.c.client_id, trackings.c.order_id],
            set_={"order_body": statement.excluded.order_body}))

    async def tracking(self, tx: Transaction, client_id: str, order_id: str, *,
                       for_update: bool = False) -> TrackingRow | None:
        query = sa.select(trackings).where(trackings.c.client_id == client_id,
                                           trackings.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _tracking(row)

    async def save_tracking(self, tx: Transaction, row: TrackingRow) -> None:
        await tx.execute(sa.update(trackings).where(
            trackings.c.client_id == row.client_id, trackings.c.order_id == row.order_id
        ).values(state=row.state, state_time=row.state_time,
                 milestone_count=row.milestone_count, exceptions=list(row.exceptions),
                 update_time=row.update_time, version=row.version, vehicle_id=row.vehicle_id))

    async def assign_vehicle(self, tx: Transaction, client_id: str,
                             vehicle_by_order: dict[str, str], now: datetime) -> None:
        for order_id, vehicle_id in sorted(vehicle_by_order.items()):
            await tx.execute(sa.update(trackings).where(
                trackings.c.client_id == client_id, trackings.c.order_id == order_id,
                trackings.c.vehicle_id != vehicle_id
            ).values(vehicle_id=vehicle_id, update_time=now, version=trackings.c.version + 1))

    async def insert_milestone(self, tx: Transaction, client_id: str, order_id: str,
                               stored: StoredMilestone) -> bool:
        """False when the same milestone (stop, type, event time, reason) is already there."""
        m = stored.milestone
        result = await tx.execute(postgresql.insert(milestones).values(
            id=stored.id, client_id=client_id, order_id=order_id, stop_id=m.stop_id,
            type=int(m.type), event_time=m.event_time, exception_reason=m.exception_reason,
            source=m.source, record_time=stored.record_time, body=stored.body,
        ).on_conflict_do_nothing().returning(milestones.c.id))
        return result.first() is not None

    async def milestones(self, tx: Transaction, client_id: str, order_id: str, *,
                         after: tuple[datetime, str] | None = None, limit: int | None = None
                         ) -> list[StoredMilestone]:
        query = sa.select(milestones).where(milestones.c.client_id == client_id,
                                            milestones.c.order_id == order_id)
        if after is not None:
            query = query.where(sa.tuple_(milestones.c.event_time, milestones.c.id)
                                > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
        query = query.order_by(milestones.c.event_time, milestones.c.id)
        if limit is not None:
            query = query.limit(limit)
        return [StoredMilestone(r.id, Milestone(r.stop_id, Type(r.type), r.event_time,
                                                r.exception_reason, r.source),
                                r.record_time, bytes(r.body))
                for r in await tx.execute(query)]

    async def existing_milestone(self, tx: Transaction, client_id: str, order_id: str,
                                 m: Milestone) -> StoredMilestone | None:
        row = (await tx.execute(sa.select(milestones).where(
            milestones.c.client_id == client_id, milestones.c.order_id == order_id,
            milestones.c.stop_id == m.stop_id, milestones.c.type == int(m.type),
            milestones.c.event_time == m.event_time,
            milestones.c.exception_reason == m.exception_reason))).one_or_none()
        return None if row is None else StoredMilestone(row.id, m, row.record_time,
                                                        bytes(row.body))

    async def stop_progress(self, tx: Transaction, client_id: str, order_ids: Sequence[str]
                            ) -> dict[tuple[str, str], dict[int, datetime]]:
        """(order, stop) -> {milestone type: earliest event time}."""
        if not order_ids:
            return {}
        rows = await tx.execute(
            sa.select(milestones.c.order_id, milestones.c.stop_id, milestones.c.type,
                      sa.func.min(milestones.c.event_time))
            .where(milestones.c.client_id == client_id, milestones.c.order_id.in_(order_ids))
            .group_by(milestones.c.order_id, milestones.c.stop_id, milestones.c.type))
        out: dict[tuple[str, str], dict[int, datetime]] = {}
        for order_id, stop_id, kind, first in rows:
            out.setdefault((order_id, stop_id), {})[kind] = first
        return out

    # ------------------------------------------------------------------ route stops, ETAs

    async def replace_route_stops(self, tx: Transaction, client_id: str,
                                  rows: Sequence[RouteStopRow]) -> None:
        """The client's active plan's stops. ETAs already published for a stop that is still
        planned are kept, so a replan does not republish every ETA."""
        old = {(r.order_id, r.stop_id): r for r in await self.route_stops(tx, client_id)}
        await tx.execute(sa.delete(route_stops).where(route_stops.c.client_id == client_id))
        values = []
        for r in rows:
            before = old.get((r.stop.order_id, r.stop.stop_id))
            values.append({
                "client_id": client_id, "vehicle_id": r.vehicle_id, "seq": r.seq,
                "order_id": r.stop.order_id, "stop_id": r.stop.stop_id, "lat": r.stop.lat,
                "lng": r.stop.lng, "service_s": r.stop.service.total_seconds(),
                "window_start": r.stop.window_start, "window_end": r.stop.window_end,
                "eta": before.eta if before else None,
                "published_eta": before.published_eta if before else None,
                "late_risk": before.late_risk if before else False})
        if values:
            await tx.execute(sa.insert(route_stops), values)

    async def route_stops(self, tx: Transaction, client_id: str, *,
                          vehicle_ids: Sequence[str] | None = None,
                          order_id: str | None = None) -> list[RouteStopRow]:
        query = sa.select(route_stops).where(route_stops.c.client_id == client_id)
        if vehicle_ids is not None:
            query = query.where(route_stops.c.vehicle_id.in_(vehicle_ids))
        if order_id is not None:
            query = query.where(route_stops.c.order_id == order_id)
        rows = await tx.execute(query.order_by(route_stops.c.vehicle_id, route_stops.c.seq))
        return [RouteStopRow(
            r.vehicle_id, r.seq,
            PlannedStop(r.order_id, r.stop_id, r.lat, r.lng, timedelta(seconds=r.service_s),
                        r.window_start, r.window_end),
            r.eta, r.published_eta, r.late_risk) for r in rows]

    async def save_etas(self, tx: Transaction, client_id: str, rows: Sequence[RouteStopRow]
                        ) -> None:
        for r in rows:
            await tx.execute(sa.update(route_stops).where(
                route_stops.c.client_id == client_id, route_stops.c.vehicle_id == r.vehicle_id,
                route_stops.c.seq == r.seq,
            ).values(eta=r.eta, published_eta=r.published_eta, late_risk=r.late_risk))

    # ------------------------------------------------------------------ geofences

    async def insert_fence(self, tx: Transaction, fence: StoredFence) -> None:
        await tx.execute(postgresql.insert(geofences).values(_fence_values(fence)))

    async def replace_stop_fences(self, tx: Transaction, client_id: str,
                                  fences: Sequence[StoredFence]) -> None:
        keep = [f.fence.id for f in fences]
        await tx.execute(sa.delete(geofences).where(
            geofences.c.client_id == client_id, geofences.c.origin == 2,
            geofences.c.id.not_in(keep) if keep else sa.true()))
        if fences:
            statement = postgresql.insert(geofences).values([_fence_values(f) for f in fences])
            await tx.execute(statement.on_conflict_do_update(
                index_elements=[geofences.c.id],
                set_={c: statement.excluded[c] for c in (
                    "vehicle_id", "inner_wkb", "outer_wkb", "dwell_s", "body")}))
        await tx.execute(sa.delete(presences).where(
            presences.c.client_id == client_id,
            ~sa.exists().where(geofences.c.id == presences.c.fence_id)))

    async def fences(self, tx: Transaction, client_id: str) -> list[StoredFence]:
        rows = await tx.execute(sa.select(geofences).where(geofences.c.client_id == client_id))
        return [_fence(r) for r in rows]

    async def fence(self, tx: Transaction, client_id: str, fence_id: str) -> StoredFence | None:
        row = (await tx.execute(sa.select(geofences).where(
            geofences.c.client_id == client_id, geofences.c.id == fence_id))).one_or_none()
        return None if row is None else _fence(row)

    async def list_fences(self, tx: Transaction, client_id: str,
                          after: tuple[datetime, str] | None, limit: int) -> list[StoredFence]:
        query = sa.select(geofences).where(geofences.c.client_id == client_id)
        key = sa.tuple_(geofences.c.create_time, geofences.c.id)
        if after is not None:
            query = query.where(key < sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
        query = query.order_by(geofences.c.create_time.desc(), geofences.c.id.desc())
        return [_fence(r) for r in await tx.execute(query.limit(limit))]

    async def delete_fence(self, tx: Transaction, client_id: str, fence_id: str) -> None:
        await tx.execute(sa.delete(geofences).where(geofences.c.client_id == client_id,
                                                    geofences.c.id == fence_id))
        await tx.execute(sa.delete(presences).where(presences.c.client_id == client_id,
                                                    presences.c.fence_id == fence_id))

    async def presences(self, tx: Transaction, client_id: str, vehicle_ids: Sequence[str]
                        ) -> dict[tuple[str, str], Presence]:
        rows = await tx.execute(
            sa.select(presences).where(presences.c.client_id == client_id,
                                       presences.c.vehicle_id.in_(vehicle_ids))
            .order_by(presences.c.vehicle_id, presences.c.fence_id).with_for_update())
        return {(r.vehicle_id, r.fence_id): Presence(r.fence_id, r.vehicle_id, r.enter_time,
                                                     r.last_time, r.dwelled, r.detained)
                for r in rows}

    async def save_presences(self, tx: Transaction, client_id: str,
                             changed: dict[tuple[str, str], Presence | None]) -> None:
        """Two statements whatever the count: a vehicle inside a fence updates its row on
        every fix, so this runs for most positions of a busy fleet."""
        gone = sorted(key for key, p in changed.items() if p is None)
        if gone:
            await tx.execute(_DELETE_PRESENCES, {
                "client_id": client_id, "vehicles": [v for v, _ in gone],
                "fences": [f for _, f in gone]})
        kept = [p for p in changed.values() if p is not None]
        if kept:
            await tx.execute(_UPSERT_PRESENCES, {
                "client_id": client_id, "vehicles": [p.vehicle for p in kept],
                "fences": [p.fence_id for p in kept],
                "enters": [p.enter_time for p in kept], "lasts": [p.last_time for p in kept],
                "dwelled": [p.dwelled for p in kept], "detained": [p.detained for p in kept]})

    # ------------------------------------------------------------------ tracking links

    async def insert_link(self, tx: Transaction, link: LinkRow) -> None:
        await tx.execute(sa.insert(tracking_links).values(
            id=link.id, client_id=link.client_id, order_id=link.order_id,
            expire_time=link.expire_time, revoked=link.revoked, create_time=link.create_time))

    async def link(self, tx: Transaction, link_id: str) -> LinkRow | None:
        row = (await tx.execute(sa.select(tracking_links).where(
            tracking_links.c.id == link_id))).one_or_none()
        return None if row is None else LinkRow(row.id, row.client_id, row.order_id,
                                                row.expire_time, row.revoked, row.create_time)

    async def revoke_link(self, tx: Transaction, client_id: str, link_id: str) -> None:
        await tx.execute(sa.update(tracking_links).where(
            tracking_links.c.client_id == client_id, tracking_links.c.id == link_id
        ).values(revoked=True))


def _fence_values(stored: StoredFence) -> dict[str, Any]:
    f = stored.fence
    return {"id": f.id, "client_id": f.client_id, "origin": f.origin, "order_id": f.order_id,
            "stop_id": f.stop_id, "vehicle_id": f.vehicle,
            "dwell_s": f.dwell.total_seconds(), "inner_wkb": shapely.to_wkb(f.inner),
            "outer_wkb": shapely.to_wkb(f.outer), "create_time": stored.create_time,
            "body": stored.body}


def _fence(r: Any) -> StoredFence:
    return StoredFence(
        Fence(r.id, r.client_id, shapely.from_wkb(bytes(r.inner_wkb)),
              shapely.from_wkb(bytes(r.outer_wkb)), timedelta(seconds=r.dwell_s), r.origin,
              r.order_id, r.stop_id, r.vehicle_id),
        r.create_time, bytes(r.body))
