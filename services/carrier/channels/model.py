"""The canonical tender model every channel speaks: plain frozen dataclasses, no I/O, no protos.

The carrier service converts its shipments into a `TenderDocument` once; each channel (EDI X12,
the JSON carrier API) builds its wire format from that and parses what comes back into a
`TenderResponse`. Codes here are canonical (`DRY_VAN`, `LIFTGATE`, `NO_CAPACITY`); `codes.py`
maps them to what each channel speaks.

Exceptions::

    ChannelError          the bytes we got (or were asked to send) do not fit the channel:
                          unparseable, wrong counts, unknown codes. `what` says what, `where`
                          where (segment position, JSON field). Not retryable as is.
    CarrierUnavailable    the carrier could not be reached or failed (timeout, 5xx, reset).
                          The tender is still open: the caller may retry or wait for expiry.
    UnsafeDestination     a carrier endpoint that resolves to an address we never send to
                          (private, link-local, metadata, ...). Raised before any connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

StopKind = Literal["PICKUP", "DELIVERY"]
Purpose = Literal["ORIGINAL", "CANCEL"]


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    address_lines: tuple[str, ...]
    city: str
    region: str
    postal_code: str
    country: str  # ISO 3166-1 alpha-2


@dataclass(frozen=True, slots=True)
class TenderStop:
    sequence: int
    kind: StopKind
    party: Party
    window_start: datetime | None
    window_end: datetime | None
    reference: str


@dataclass(frozen=True, slots=True)
class TenderDocument:
    tender_id: str
    shipment_id: str
    sender_id: str
    carrier_scac: str
    equipment: str  # canonical: DRY_VAN, REEFER, FLATBED, CONTAINER
    weight_kg: Decimal
    pallets: int
    volume_m3: Decimal | None
    accessorials: tuple[str, ...]  # canonical: LIFTGATE, RESIDENTIAL, INSIDE_DELIVERY, HAZMAT
    stops: tuple[TenderStop, ...]
    offered_amount: Decimal
    currency: str  # ISO 4217
    respond_by: datetime
    purpose: Purpose = "ORIGINAL"


@dataclass(frozen=True, slots=True)
class TenderResponse:
    tender_id: str
    carrier_scac: str
    accepted: bool
    reason_code: str | None  # canonical decline reason (codes.DECLINE_REASONS), None on accept
    reason: str | None
    responded_at: datetime | None


class ChannelError(Exception):
    """Input or output that does not fit the channel; `where` locates it (segment, field)."""

    def __init__(self, what: str, where: str | None = None) -> None:
        super().__init__(f"{what} (at {where})" if where else what)
        self.what = what
        self.where = where


class CarrierUnavailable(Exception):
    """The carrier did not answer usably at the transport level (timeout, 5xx, connect error)."""


class UnsafeDestination(Exception):
    """A carrier endpoint we refuse to contact; raised before any connection is attempted."""
