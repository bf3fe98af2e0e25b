"""The JSON carrier API: the offer body against a golden file, answers parsed, callbacks strict."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.carrier.channels import codes, http_api
from services.carrier.channels.model import CarrierUnavailable, ChannelError, TenderResponse
from tests.unit.carrier_channels.samples import DOCUMENT

GOLDEN = Path(__file__).parent / "golden"
CALLBACK = "http://127.0.0.1:9/callbacks/tenders"
ANSWER = {"tender_id": "TND0001", "carrier_scac": "ABCD", "decision": "rejected",
          "reason_code": "no_capacity", "reason": "full", "responded_at": "2026-03-02T10:00:00Z"}


def test_the_offer_matches_the_golden_body() -> None:
    request = http_api.build_offer_request(DOCUMENT, callback_url=CALLBACK)
    assert (request.method, request.path) == ("POST", "/tenders")
    assert json.loads(request.body) == json.loads((GOLDEN / "offer.json").read_text())


def test_the_offer_is_idempotent_on_the_tender_and_json() -> None:
    headers = dict(http_api.build_offer_request(DOCUMENT, callback_url=None).headers)
    assert headers["idempotency-key"] == "TND0001"
    assert headers["content-type"] == "application/json"


def test_money_and_weight_travel_as_decimal_strings() -> None:
    body = json.loads(http_api.build_offer_request(DOCUMENT, callback_url=None).body,
                      parse_float=lambda s: pytest.fail(f"a float in the offer: {s}"))
    assert body["offer"] == {"amount": "1250.00", "currency": "EUR"}
    assert body["callback_url"] is None


def test_an_answer_round_trips() -> None:
    response = TenderResponse("TND0001", "ABCD", False, "SCHEDULE_CONFLICT", "no driver",
                              datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    assert http_api.parse_callback(http_api.answer_body(response)) == response


def test_a_synchronous_answer_and_a_later_one() -> None:
    answer = http_api.parse_offer_response(200, json.dumps(ANSWER).encode())
    assert answer is not None and not answer.accepted and answer.reason_code == "NO_CAPACITY"
    assert http_api.parse_offer_response(202, b"") is None


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_a_failing_carrier_is_unavailable_not_an_answer(status: int) -> None:
    with pytest.raises(CarrierUnavailable):
        http_api.parse_offer_response(status, b"oops")


def test_a_carrier_refusing_the_request_is_a_channel_error() -> None:
    with pytest.raises(ChannelError, match="HTTP 400"):
        http_api.parse_offer_response(400, b'{"error": "bad scac"}')


@pytest.mark.parametrize(("body", "where"), [
    ({**ANSWER, "price": "900"}, "price"),
    ({k: v for k, v in ANSWER.items() if k != "decision"}, "decision"),
    ({**ANSWER, "decision": "maybe"}, "decision"),
    ({**ANSWER, "decision": True}, "decision"),
    ({**ANSWER, "reason_code": "aliens"}, "reason_code"),
    ({**ANSWER, "tender_id": 17}, "tender_id"),
    ({**ANSWER, "tender_id": " "}, "tender_id"),
    ({**ANSWER, "responded_at": "yesterday"}, "responded_at"),
    ({**ANSWER, "responded_at": "2026-03-02T10:00:00"}, "responded_at"),
])
def test_a_bad_callback_is_refused_naming_the_field(body: dict, where: str) -> None:
    with pytest.raises(ChannelError) as caught:
        http_api.parse_callback(json.dumps(body).encode())
    assert caught.value.where == where


@pytest.mark.parametrize("raw", [
    b'{"tender_id": "A", "tender_id": "B", "carrier_scac": "ABCD", "decision": "accepted"}',
    b'{"tender_id": NaN}',
    b"[1, 2]",
    b"\xff\xfe",
    b"{" + b" " * (http_api.MAX_BODY + 1) + b"}",
])
def test_callbacks_that_are_not_clean_json_objects_are_refused(raw: bytes) -> None:
    with pytest.raises(ChannelError):
        http_api.parse_callback(raw)


def test_a_naive_time_is_refused_when_building() -> None:
    with pytest.raises(ChannelError) as caught:
        http_api.build_offer_request(
            dataclasses.replace(DOCUMENT, respond_by=datetime(2026, 3, 2, 12, 0)),
            callback_url=None)
    assert caught.value.where == "respond_by"


@pytest.mark.parametrize("table", [codes.EQUIPMENT, codes.ACCESSORIALS, codes.ACTIONS,
                                   codes.DECLINE_REASONS])
@pytest.mark.parametrize("channel", ["x12", "api"])
def test_every_code_maps_both_ways(table, channel: str) -> None:
    for row in table:
        vendor = codes.to_vendor(table, row.canonical, "f", channel=channel)
        assert codes.from_vendor(table, vendor, "w", channel=channel) == row.canonical
