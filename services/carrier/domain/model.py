"""The carrier service's aggregates: carriers, rate cards, shipments and tenders, with their
state tables. Content lives in the contract's messages (as the order service keeps an order's);
the rules that move state live here."""

from __future__ import annotations

import datetime as dt
import enum
import os
from dataclasses import dataclass, replace

from cartage.carrier.v1 import carrier_pb2, carrier_service_pb2, shipment_pb2
from services.carrier.domain.money import from_float
from services.carrier.domain.quoting import CarrierFacts
from services.carrier.domain.ratecard import as_date
from services.kit.domain import Transitions, check_etag, check_transition
from services.kit.errors import FailedPrecondition


def new_id() -> str:
    return os.urandom(16).hex()


class ShipmentState(enum.IntEnum):
    OPEN = 1
    TENDERED = 2
    BOOKED = 3
    IN_TRANSIT = 4
    DELIVERED = 5
    CANCELLED = 6
    TENDER_EXHAUSTED = 7


class TenderState(enum.IntEnum):
    OFFERED = 1
    ACCEPTED = 2
    REJECTED = 3
    EXPIRED = 4
    WITHDRAWN = 5


S = ShipmentState
SHIPMENT_TRANSITIONS: Transitions[ShipmentState] = {
    S.OPEN: frozenset({S.TENDERED, S.CANCELLED}),
    S.TENDERED: frozenset({S.BOOKED, S.TENDER_EXHAUSTED, S.CANCELLED, S.TENDERED}),
    S.TENDER_EXHAUSTED: frozenset({S.TENDERED, S.CANCELLED}),
    S.BOOKED: frozenset({S.IN_TRANSIT, S.CANCELLED, S.DELIVERED}),
    S.IN_TRANSIT: frozenset({S.DELIVERED}),
    S.DELIVERED: frozenset(),
    S.CANCELLED: frozenset(),
}
T = TenderState
TENDER_TRANSITIONS: Transitions[TenderState] = {
    T.OFFERED: frozenset({T.ACCEPTED, T.REJECTED, T.EXPIRED, T.WITHDRAWN}),
    T.ACCEPTED: frozenset(), T.REJECTED: frozenset(), T.EXPIRED: frozenset(),
    T.WITHDRAWN: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Carrier:
    id: str
    client_id: str
    content: carrier_pb2.Carrier  # the client-owned fields
    create_time: dt.datetime
    update_time: dt.datetime
    version: int = 1

    @property
    def name(self) -> str:
        return f"carriers/{self.id}"

    @property
    def etag(self) -> str:
        return f"v{self.version}"

    @property
    def active(self) -> bool:
        return self.content.state != carrier_pb2.Carrier.STATE_SUSPENDED

    def check_etag(self, etag: str) -> None:
        check_etag(etag, self.etag, "carrier")

    def changed(self, content: carrier_pb2.Carrier, now: dt.datetime) -> Carrier:
        return replace(self, content=content, update_time=now, version=self.version + 1)

    def facts(self) -> CarrierFacts:
        c = self.content
        return CarrierFacts(
            id=self.id, display_name=c.display_name, active=self.active,
            equipment=frozenset(c.equipment),
            max_weight_kg=from_float(c.max_weight_kg) if c.max_weight_kg else None,
            insurance_expiry=as_date(c.insurance_expiry) if c.HasField("insurance_expiry")
            else None,
            authority_expiry=as_date(c.authority_expiry) if c.HasField("authority_expiry")
            else None,
            oauth_client_id=c.oauth_client_id)


@dataclass(frozen=True, slots=True)
class RateCardRecord:
    id: str
    carrier_id: str
    client_id: str
    content: carrier_pb2.RateCard
    create_time: dt.datetime

    @property
    def name(self) -> str:
        return f"carriers/{self.carrier_id}/rateCards/{self.id}"


@dataclass(frozen=True, slots=True)
class Shipment:
    id: str
    client_id: str
    content: shipment_pb2.Shipment  # the client-owned fields
    state: ShipmentState
    create_time: dt.datetime
    update_time: dt.datetime
    version: int = 1
    carrier_id: str = ""
    current_tender_id: str = ""
    agreed_price: shipment_pb2.PriceBreakdown | None = None
    # the ranked carriers of the running waterfall, and how many were offered the load
    waterfall: carrier_service_pb2.QuoteRatesResponse | None = None
    position: int = 0
    timeout_s: float = 0.0
    cancel_reason: str = ""

    @property
    def name(self) -> str:
        return f"shipments/{self.id}"

    @property
    def etag(self) -> str:
        return f"v{self.version}"

    def _move(self, target: ShipmentState, now: dt.datetime, **changes: object) -> Shipment:
        check_transition(SHIPMENT_TRANSITIONS, self.state, target, f"shipment {self.name}")
        return replace(self, state=target, update_time=now, version=self.version + 1,
                       **changes)  # type: ignore[arg-type]

    def start_waterfall(self, waterfall: carrier_service_pb2.QuoteRatesResponse,
                        timeout_s: float, now: dt.datetime) -> Shipment:
        if self.state not in (S.OPEN, S.TENDER_EXHAUSTED):
            raise FailedPrecondition(
                f"shipment {self.name} is {self.state.name}; only OPEN or TENDER_EXHAUSTED "
                "shipments can be tendered", reason="INVALID_STATE_TRANSITION",
                metadata={"state": self.state.name, "target": "TENDERED"})
        return self._move(S.TENDERED, now, waterfall=waterfall, position=0,
                          timeout_s=timeout_s, current_tender_id="")

    def next_candidate(self) -> carrier_service_pb2.CarrierQuote | None:
        """The carrier to offer the load to next, or None when the waterfall is exhausted."""
        if self.waterfall is None or self.position >= len(self.waterfall.quotes):
            return None
        return self.waterfall.quotes[self.position]

    def offered(self, tender_id: str, now: dt.datetime) -> Shipment:
        return self._move(S.TENDERED, now, current_tender_id=tender_id,
                          position=self.position + 1)

    def exhausted(self, now: dt.datetime) -> Shipment:
        return self._move(S.TENDER_EXHAUSTED, now, current_tender_id="")

    def booked(self, carrier_id: str, tender_id: str, price: shipment_pb2.PriceBreakdown,
               now: dt.datetime) -> Shipment:
        return self._move(S.BOOKED, now, carrier_id=carrier_id, current_tender_id=tender_id,
                          agreed_price=price)

    def cancel(self, reason: str, now: dt.datetime) -> Shipment:
        return self._move(S.CANCELLED, now, cancel_reason=reason)


@dataclass(frozen=True, slots=True)
class ChannelAnswer:
    """A carrier's answer to an offer as its channel delivered it (an HTTP reply, an EDI 990):
    accepted, or rejected with the canonical reason code and the carrier's text."""

    accepted: bool
    reason_code: str = ""
    reason: str = ""

    def reject_reason(self) -> str:
        """The reason a rejection is stored with (RejectTender's rule: never empty)."""
        text = ": ".join(p for p in (self.reason_code, self.reason) if p)
        return (text or "rejected by the carrier")[:500]


@dataclass(frozen=True, slots=True)
class Tender:
    id: str
    client_id: str  # the shipper
    shipment_id: str
    carrier_id: str
    carrier_client_id: str  # the carrier's own OAuth client ("" if it has none)
    state: TenderState
    rank: int
    quote: carrier_service_pb2.CarrierQuote  # price, card, lane
    load: shipment_pb2.Shipment
    pickup_day: dt.date
    offer_time: dt.datetime
    deadline: dt.datetime
    respond_time: dt.datetime | None = None
    reject_reason: str = ""
    version: int = 1

    @property
    def name(self) -> str:
        return f"tenders/{self.id}"

    def visible_to(self, client_id: str) -> bool:
        return client_id in (self.client_id, self.carrier_client_id)

    def _answer(self, target: TenderState, now: dt.datetime, **changes: object) -> Tender:
        if self.state != T.OFFERED:
            raise FailedPrecondition(
                f"tender {self.name} is {self.state.name}, no longer open",
                reason="TENDER_NOT_OPEN", metadata={"state": self.state.name})
        check_transition(TENDER_TRANSITIONS, self.state, target, f"tender {self.name}")
        return replace(self, state=target, respond_time=now, version=self.version + 1,
                       **changes)  # type: ignore[arg-type]

    def _open_at(self, now: dt.datetime) -> None:
        if self.state == T.OFFERED and now >= self.deadline:
            raise FailedPrecondition(
                f"tender {self.name} expired at {self.deadline.isoformat()}",
                reason="TENDER_EXPIRED", metadata={"deadline": self.deadline.isoformat()})

    def accept(self, now: dt.datetime) -> Tender:
        self._open_at(now)
        return self._answer(T.ACCEPTED, now)

    def reject(self, reason: str, now: dt.datetime) -> Tender:
        self._open_at(now)
        return self._answer(T.REJECTED, now, reject_reason=reason)

    def expire(self, now: dt.datetime) -> Tender:
        return self._answer(T.EXPIRED, now)

    def withdraw(self, now: dt.datetime) -> Tender:
        return self._answer(T.WITHDRAWN, now)
