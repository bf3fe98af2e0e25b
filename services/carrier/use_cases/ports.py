"""What the carrier use cases need from the outside (adapters implement these Protocols)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from services.carrier.domain.model import (
    Carrier,
    ChannelAnswer,
    RateCardRecord,
    Shipment,
    Tender,
)
from services.carrier.domain.scorecard import LaneStats
from services.kit.idempotency import Codec
from services.kit.uow import OutgoingEvent, Transaction, UnitOfWork


@dataclass(frozen=True, slots=True)
class Page:
    """A keyset page: rows after `after` (time, id), at most `limit` (the API asks for one
    more than it returns, to know whether another page exists)."""

    after: tuple[dt.datetime, str] | None
    limit: int


@dataclass(frozen=True, slots=True)
class TenderQuery:
    """Tenders the `viewer` may see (as the shipper, or as the carrier's OAuth client)."""

    viewer: str
    filters: tuple[tuple[str, Any], ...]
    page: Page


class Repository(Protocol):
    def insert_carrier(self, tx: Transaction, carrier: Carrier) -> None: ...
    def save_carrier(self, tx: Transaction, carrier: Carrier) -> None: ...
    async def get_carrier(self, tx: Transaction, client_id: str, carrier_id: str, *,
                          for_update: bool = False) -> Carrier | None: ...
    async def list_carriers(self, tx: Transaction, client_id: str, page: Page
                            ) -> list[Carrier]: ...
    async def catalog(self, tx: Transaction, client_id: str
                      ) -> tuple[list[Carrier], list[RateCardRecord]]: ...
    async def catalog_version(self, uow: UnitOfWork, client_id: str) -> int: ...
    async def quote_snapshot(self, uow: UnitOfWork, client_id: str, day: dt.date
                             ) -> tuple[int, dict[tuple[str, str], int]]: ...
    def insert_card(self, tx: Transaction, card: RateCardRecord) -> None: ...
    async def get_card(self, tx: Transaction, client_id: str, carrier_id: str, card_id: str
                       ) -> RateCardRecord | None: ...
    async def list_cards(self, tx: Transaction, client_id: str, carrier_id: str, page: Page
                         ) -> list[RateCardRecord]: ...
    async def delete_card(self, tx: Transaction, client_id: str, carrier_id: str,
                          card_id: str) -> bool: ...
    def insert_shipment(self, tx: Transaction, shipment: Shipment) -> None: ...
    async def insert_shipment_once(self, tx: Transaction, shipment: Shipment) -> bool: ...
    def save_shipment(self, tx: Transaction, shipment: Shipment) -> None: ...
    async def shipment_of_order(self, tx: Transaction, client_id: str, order: str
                                ) -> Shipment | None: ...
    async def get_shipment(self, tx: Transaction, client_id: str, shipment_id: str, *,
                           for_update: bool = False) -> Shipment | None: ...
    async def list_shipments(self, tx: Transaction, client_id: str,
                             filters: tuple[tuple[str, Any], ...], page: Page
                             ) -> list[Shipment]: ...
    def insert_tender(self, tx: Transaction, tender: Tender) -> None: ...
    def save_tender(self, tx: Transaction, tender: Tender) -> None: ...
    async def get_tender(self, tx: Transaction, tender_id: str, *, for_update: bool = False
                         ) -> Tender | None: ...
    async def list_tenders(self, tx: Transaction, query: TenderQuery) -> list[Tender]: ...
    async def due_tenders(self, tx: Transaction, now: dt.datetime, limit: int
                          ) -> list[Tender]: ...
    async def booked_counts(self, tx: Transaction, client_id: str, day: dt.date
                            ) -> dict[tuple[str, str], int]: ...
    async def insert_milestone(self, tx: Transaction, *, shipment: Shipment, kind: int,
                               lane_id: str, actual: dt.datetime, on_time: bool,
                               now: dt.datetime) -> bool: ...
    async def lane_stats(self, tx: Transaction, client_id: str, since: dt.datetime,
                         carrier_id: str = "") -> list[LaneStats]: ...


class Events(Protocol):
    """The events the carrier service publishes (adapters/events.py)."""

    def tender_offered(self, tender: Tender) -> OutgoingEvent: ...
    def tender_accepted(self, tender: Tender, order: str) -> OutgoingEvent: ...
    def tender_rejected(self, tender: Tender) -> OutgoingEvent: ...
    def tender_expired(self, tender: Tender) -> OutgoingEvent: ...
    def tender_exhausted(self, shipment: Shipment, tried: int) -> OutgoingEvent: ...
    def shipment_booked(self, shipment: Shipment) -> OutgoingEvent: ...
    def shipment_cancelled(self, shipment: Shipment, previous: int) -> OutgoingEvent: ...


class TenderChannels(Protocol):
    """How an offer reaches a carrier (its `tender_channel`). Called after the offer is
    committed; a channel that fails leaves the offer open until its deadline (the carrier can
    still list and answer it through the API). Returns the carrier's answer when it gave one
    at once (an HTTP carrier replying 200), else None (it answers later: by the API, or by an
    EDI 990 the inbox job reads)."""

    async def offer(self, carrier: Carrier, tender: Tender) -> ChannelAnswer | None: ...


@dataclass(frozen=True, slots=True)
class Codecs:
    """How results are stored for idempotent replays (conversion.py)."""

    carrier: Codec[Carrier]
    card: Codec[RateCardRecord]
    shipment: Codec[Shipment]
    tender: Codec[Tender]
