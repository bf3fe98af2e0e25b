"""What a caller reads: an order's tracking record put together (state, stops with ETAs, last
position), and tracking links (signed, expiring, revocable tokens for a redacted view)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.kit.errors import NotFound
from services.kit.uow import UnitOfWork
from services.tracking.domain.positions import Fix
from services.tracking.use_cases.milestones import Milestones, order_not_found
from services.tracking.use_cases.ports import (
    Codecs,
    LinkRow,
    OrderStops,
    RouteStopRow,
    Store,
    StoredMilestone,
    TrackingRow,
)


@dataclass(frozen=True, slots=True)
class TrackingView:
    row: TrackingRow
    stops: OrderStops | None
    route: tuple[RouteStopRow, ...]  # the order's stops in the active plan
    milestones: tuple[StoredMilestone, ...]
    last_position: Fix | None


class Views:
    def __init__(self, uow: UnitOfWork, store: Store, milestones: Milestones, codecs: Codecs,
                 clock: Callable[[], datetime], link_secret: bytes) -> None:
        self._uow = uow
        self._store = store
        self._milestones = milestones
        self._codecs = codecs
        self._clock = clock
        self._secret = link_secret or os.urandom(32)

    async def tracking(self, client_id: str, order_id: str) -> TrackingView:
        async with self._uow.transaction() as tx:
            row = await self._milestones.tracking(tx, client_id, order_id)
            route = await self._store.route_stops(tx, client_id, order_id=order_id)
            milestones = await self._store.milestones(tx, client_id, order_id)
            last = (await self._store.last_position(tx, client_id, row.vehicle_id)
                    if row.vehicle_id else None)
        return TrackingView(row, self._codecs.order_stops(row.order_body), tuple(route),
                            tuple(milestones), last)

    # ------------------------------------------------------------------ links

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def token(self, link: LinkRow) -> str:
        payload = f"{link.id}.{int(link.expire_time.timestamp())}"
        return f"{payload}.{self._sign(payload)}"

    async def create_link(self, client_id: str, order_id: str, ttl: timedelta,
                          request_id: str = "") -> LinkRow:
        now = self._clock()
        link = LinkRow(os.urandom(16).hex(), client_id, order_id, now + ttl, False, now)
        async with self._uow.transaction(request_id) as tx:
            await self._milestones.tracking(tx, client_id, order_id)
            await self._store.insert_link(tx, link)
        return link

    async def revoke_link(self, client_id: str, link_id: str, request_id: str = "") -> LinkRow:
        async with self._uow.transaction(request_id) as tx:
            link = await self._store.link(tx, link_id)
            if link is None or link.client_id != client_id:
                raise NotFound(f"tracking link trackingLinks/{link_id} not found",
                               reason="TRACKING_LINK_NOT_FOUND")
            await self._store.revoke_link(tx, client_id, link_id)
        return LinkRow(link.id, link.client_id, link.order_id, link.expire_time, True,
                       link.create_time)

    async def shared(self, token: str) -> TrackingView:
        """The view behind a token: forged, expired, revoked or unknown are all NOT_FOUND."""
        gone = NotFound("this tracking link does not exist or has expired",
                        reason="TRACKING_LINK_NOT_FOUND")
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise gone
        if not hmac.compare_digest(self._sign(f"{parts[0]}.{parts[1]}"), parts[2]):
            raise gone
        if int(parts[1]) < self._clock().timestamp():
            raise gone
        async with self._uow.transaction() as tx:
            link = await self._store.link(tx, parts[0])
        if link is None or link.revoked or link.expire_time < self._clock():
            raise gone
        try:
            return await self.tracking(link.client_id, link.order_id)
        except NotFound:
            raise order_not_found(link.order_id) from None
