"""What the tracking use cases need from outside: storage, event builders and codecs
(Protocols; the adapters and the composition root provide them), and the rows they pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.kit.uow import OutgoingEvent, Transaction
from services.tracking.domain.eta import PlannedStop
from services.tracking.domain.geofencing import Fence, Occurrence, Presence
from services.tracking.domain.positions import Fix, LastKnown
from services.tracking.domain.shipment import Milestone


@dataclass(frozen=True, slots=True)
class TrackingRow:
    client_id: str
    order_id: str
    order_body: bytes  # cartage.order.v1.Order
    vehicle_id: str
    state: int
    state_time: datetime | None
    milestone_count: int
    exceptions: tuple[int, ...]
    update_time: datetime
    version: int


@dataclass(frozen=True, slots=True)
class StoredMilestone:
    id: str
    milestone: Milestone
    record_time: datetime
    body: bytes  # cartage.tracking.v1.Milestone (location, note, vehicle)


@dataclass(frozen=True, slots=True)
class RouteStopRow:
    vehicle_id: str
    seq: int
    stop: PlannedStop
    eta: datetime | None
    published_eta: datetime | None
    late_risk: bool


@dataclass(frozen=True, slots=True)
class StoredFence:
    fence: Fence
    create_time: datetime
    body: bytes  # cartage.tracking.v1.Geofence as created


@dataclass(frozen=True, slots=True)
class LinkRow:
    id: str
    client_id: str
    order_id: str
    expire_time: datetime
    revoked: bool
    create_time: datetime


@dataclass(frozen=True, slots=True)
class OrderStops:
    """What the tracking service uses of an order (from the order service's events)."""

    pickup: PlannedStop
    delivery: PlannedStop
    pickup_locality: str
    delivery_locality: str


class Store(Protocol):
    async def register_vehicles(self, tx: Transaction, client_id: str, ids: Iterable[str],
                                now: datetime) -> None: ...
    async def known_vehicles(self, tx: Transaction, client_id: str, ids: Sequence[str]
                             ) -> set[str]: ...
    async def lock_last_known(self, tx: Transaction, client_id: str, ids: Sequence[str]
                              ) -> dict[str, LastKnown]: ...
    async def insert_positions(self, tx: Transaction, client_id: str, fixes: Sequence[Fix],
                               now: datetime) -> set[tuple[str, datetime]]: ...
    async def save_last_known(self, tx: Transaction, client_id: str, fixes: Sequence[Fix]
                              ) -> None: ...
    async def last_position(self, tx: Transaction, client_id: str, vehicle_id: str
                            ) -> Fix | None: ...
    async def upsert_order(self, tx: Transaction, client_id: str, order_id: str, body: bytes,
                           now: datetime) -> None: ...
    async def tracking(self, tx: Transaction, client_id: str, order_id: str, *,
                       for_update: bool = False) -> TrackingRow | None: ...
    async def save_tracking(self, tx: Transaction, row: TrackingRow) -> None: ...
    async def assign_vehicle(self, tx: Transaction, client_id: str,
                             vehicle_by_order: dict[str, str], now: datetime) -> None: ...
    async def insert_milestone(self, tx: Transaction, client_id: str, order_id: str,
                               stored: StoredMilestone) -> bool: ...
    async def milestones(self, tx: Transaction, client_id: str, order_id: str, *,
                         after: tuple[datetime, str] | None = None, limit: int | None = None
                         ) -> list[StoredMilestone]: ...
    async def existing_milestone(self, tx: Transaction, client_id: str, order_id: str,
                                 m: Milestone) -> StoredMilestone | None: ...
    async def stop_progress(self, tx: Transaction, client_id: str, order_ids: Sequence[str]
                            ) -> dict[tuple[str, str], dict[int, datetime]]: ...
    async def replace_route_stops(self, tx: Transaction, client_id: str,
                                  rows: Sequence[RouteStopRow]) -> None: ...
    async def route_stops(self, tx: Transaction, client_id: str, *,
                          vehicle_ids: Sequence[str] | None = None,
                          order_id: str | None = None) -> list[RouteStopRow]: ...
    async def save_etas(self, tx: Transaction, client_id: str, rows: Sequence[RouteStopRow]
                        ) -> None: ...
    async def insert_fence(self, tx: Transaction, fence: StoredFence) -> None: ...
    async def replace_stop_fences(self, tx: Transaction, client_id: str,
                                  fences: Sequence[StoredFence]) -> None: ...
    async def fences(self, tx: Transaction, client_id: str) -> list[StoredFence]: ...
    async def fence(self, tx: Transaction, client_id: str, fence_id: str
                    ) -> StoredFence | None: ...
    async def list_fences(self, tx: Transaction, client_id: str,
                          after: tuple[datetime, str] | None, limit: int
                          ) -> list[StoredFence]: ...
    async def delete_fence(self, tx: Transaction, client_id: str, fence_id: str) -> None: ...
    async def presences(self, tx: Transaction, client_id: str, vehicle_ids: Sequence[str]
                        ) -> dict[tuple[str, str], Presence]: ...
    async def save_presences(self, tx: Transaction, client_id: str,
                             changed: dict[tuple[str, str], Presence | None]) -> None: ...
    async def insert_link(self, tx: Transaction, link: LinkRow) -> None: ...
    async def link(self, tx: Transaction, link_id: str) -> LinkRow | None: ...
    async def revoke_link(self, tx: Transaction, client_id: str, link_id: str) -> None: ...


class Events(Protocol):
    """The events tracking publishes (adapters/events.py)."""

    def milestone_recorded(self, client_id: str, order_id: str, stored: StoredMilestone,
                           state: int) -> OutgoingEvent: ...
    def eta_updated(self, client_id: str, row: RouteStopRow, now: datetime) -> OutgoingEvent: ...
    def late_risk(self, client_id: str, row: RouteStopRow, now: datetime) -> OutgoingEvent: ...
    def exception(self, client_id: str, order_id: str, milestone: Milestone, vehicle: str,
                  now: datetime) -> OutgoingEvent: ...
    def geofence(self, client_id: str, occurrence: Occurrence, free_time_s: float,
                 now: datetime) -> OutgoingEvent: ...


@dataclass(frozen=True, slots=True)
class Codecs:
    """Contract bytes the use cases store without knowing the contract (conversion.py)."""

    # (vehicle, lat, lng) -> the body of a milestone the service records itself (geofence)
    milestone_body: Callable[[str, float, float], bytes]
    # cartage.order.v1.Order bytes -> its stops
    order_stops: Callable[[bytes], OrderStops | None]
