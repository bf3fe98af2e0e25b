"""The JSON/HTTP carrier API channel: offer by POST, answer synchronously, later by callback.

Pure functions; `sender.HttpTenderSender` does the I/O. The wire format (all field names
snake_case, money and weights as decimal strings so no float ever touches them, times RFC 3339
UTC):

    POST /tenders                      Idempotency-Key: <tender_id>
    {"tender_id", "shipment_id", "shipper_id", "carrier_scac", "purpose": "original"|"cancel",
     "equipment": "reefer", "weight_kg": "12500.5", "pallets": 18, "volume_m3": "42.25"|null,
     "accessorials": ["liftgate"], "stops": [{"sequence", "type": "pickup"|"delivery",
     "party": {...}, "window": {"start", "end"}, "reference"}],
     "offer": {"amount": "1250.00", "currency": "EUR"}, "respond_by", "callback_url"|null}

    200/201 → an answer now:  {"tender_id", "carrier_scac", "decision": "accepted"|"rejected",
                               "reason_code": "no_capacity"|null, "reason": str|null,
                               "responded_at": "2026-03-02T09:30:00Z"|null}
    202     → the carrier answers later, by a callback with the same body as a 200.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.carrier.channels import codes
from services.carrier.channels.model import (
    CarrierUnavailable,
    ChannelError,
    TenderDocument,
    TenderResponse,
)

OFFER_PATH = "/tenders"
MAX_BODY = 64 * 1024  # an answer is a few hundred bytes; anything near this is not one
_ANSWER_FIELDS = {"tender_id": str, "carrier_scac": str, "decision": str,
                  "reason_code": (str, type(None)), "reason": (str, type(None)),
                  "responded_at": (str, type(None))}
_REQUIRED = {"tender_id", "carrier_scac", "decision"}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _time(moment: datetime | None, field: str) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ChannelError(f"{field} has no time zone", field)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _amount(value: Decimal, field: str) -> str:
    if not value.is_finite() or value < 0:
        raise ChannelError(f"{field} must be a finite, non-negative number", field)
    return format(value, "f")


def offer_body(document: TenderDocument, *, callback_url: str | None) -> dict[str, Any]:
    """The offer as a JSON-ready dict (the golden file holds its serialisation)."""
    return {
        "tender_id": document.tender_id,
        "shipment_id": document.shipment_id,
        "shipper_id": document.sender_id,
        "carrier_scac": document.carrier_scac,
        "purpose": document.purpose.lower(),
        "equipment": codes.to_vendor(codes.EQUIPMENT, document.equipment, "equipment",
                                     channel="api"),
        "weight_kg": _amount(document.weight_kg, "weight_kg"),
        "pallets": document.pallets,
        "volume_m3": None if document.volume_m3 is None else _amount(document.volume_m3,
                                                                      "volume_m3"),
        "accessorials": [codes.to_vendor(codes.ACCESSORIALS, a, "accessorials", channel="api")
                         for a in document.accessorials],
        "stops": [
            {
                "sequence": stop.sequence,
                "type": stop.kind.lower(),
                "party": {
                    "name": stop.party.name,
                    "address_lines": list(stop.party.address_lines),
                    "city": stop.party.city,
                    "region": stop.party.region,
                    "postal_code": stop.party.postal_code,
                    "country": stop.party.country,
                },
                "window": {"start": _time(stop.window_start, f"stops[{i}].window_start"),
                           "end": _time(stop.window_end, f"stops[{i}].window_end")},
                "reference": stop.reference,
            }
            for i, stop in enumerate(document.stops)
        ],
        "offer": {"amount": _amount(document.offered_amount, "offered_amount"),
                  "currency": document.currency},
        "respond_by": _time(document.respond_by, "respond_by"),
        "callback_url": callback_url,
    }


def build_offer_request(document: TenderDocument, *, callback_url: str | None) -> HttpRequest:
    body = json.dumps(offer_body(document, callback_url=callback_url), ensure_ascii=False,
                      separators=(",", ":")).encode()
    headers = (("content-type", "application/json"), ("accept", "application/json"),
               # A retried offer is the same offer: the carrier dedupes on the tender id.
               ("idempotency-key", document.tender_id))
    return HttpRequest("POST", OFFER_PATH, headers, body)


def parse_offer_response(status: int, body: bytes) -> TenderResponse | None:
    """A 2xx answer now, or None for 202 (answer later). 5xx/429 → CarrierUnavailable; other
    statuses mean the carrier refused our request as such → ChannelError."""
    if status == 202:
        return None
    if status in (200, 201):
        return parse_callback(body)
    if status == 429 or status >= 500:
        raise CarrierUnavailable(f"carrier answered HTTP {status}")
    if 300 <= status < 400:
        raise ChannelError(f"carrier redirected the offer (HTTP {status}); redirects are not "
                           "followed", "status")
    raise ChannelError(f"carrier refused the offer with HTTP {status}",
                       body[:200].decode("utf-8", "replace") or None)


def parse_callback(body: bytes) -> TenderResponse:
    """A carrier's answer. Strict: unknown or missing fields, wrong types, unknown codes,
    duplicate keys, NaN, bodies over 64 KiB → ChannelError naming the field."""
    if len(body) > MAX_BODY:
        raise ChannelError(f"answer larger than {MAX_BODY} bytes", "body")
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise ChannelError(f"not JSON: {error}", "body") from None
    if not isinstance(data, dict):
        raise ChannelError("answer must be a JSON object", "body")
    for key in data:
        if key not in _ANSWER_FIELDS:
            raise ChannelError(f"unknown field {key!r}", key)
    for key in _REQUIRED - data.keys():
        raise ChannelError(f"missing field {key!r}", key)
    for key, kinds in _ANSWER_FIELDS.items():
        if key in data and not isinstance(data[key], kinds):
            raise ChannelError(f"{key} has the wrong type ({type(data[key]).__name__})", key)
    for key in ("tender_id", "carrier_scac"):
        if not data[key].strip():
            raise ChannelError(f"{key} is empty", key)
    decision = codes.from_vendor(codes.ACTIONS, data["decision"], "decision", channel="api")
    reason_code = data.get("reason_code")
    if reason_code is not None:
        reason_code = codes.from_vendor(codes.DECLINE_REASONS, reason_code, "reason_code",
                                        channel="api")
    return TenderResponse(
        tender_id=data["tender_id"], carrier_scac=data["carrier_scac"],
        accepted=decision == "ACCEPTED", reason_code=reason_code, reason=data.get("reason"),
        responded_at=_parse_time(data.get("responded_at"), "responded_at"))


def answer_body(response: TenderResponse) -> bytes:
    """The JSON a carrier sends for `response` (the test carrier's use; parse_callback reads it)."""
    decision = "ACCEPTED" if response.accepted else "DECLINED"
    return json.dumps({
        "tender_id": response.tender_id,
        "carrier_scac": response.carrier_scac,
        "decision": codes.to_vendor(codes.ACTIONS, decision, "accepted", channel="api"),
        "reason_code": None if response.reason_code is None else codes.to_vendor(
            codes.DECLINE_REASONS, response.reason_code, "reason_code", channel="api"),
        "reason": response.reason,
        "responded_at": _time(response.responded_at, "responded_at"),
    }, separators=(",", ":")).encode()


def _parse_time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ChannelError(f"{field} is not an RFC 3339 time", field) from None
    if parsed.tzinfo is None:
        raise ChannelError(f"{field} has no time zone", field)
    return parsed.astimezone(UTC)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ChannelError(f"duplicate field {key!r}", key)
        result[key] = value
    return result


def _no_constant(name: str) -> None:
    raise ChannelError(f"{name} is not a JSON number", "body")
