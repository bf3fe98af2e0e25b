"""EDI X12: the 204 we build against a golden file segment by segment, golden 990s parsed, round
trips, and bad interchanges refused with the position of the fault."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.carrier.channels import edi_x12
from services.carrier.channels.model import ChannelError, TenderResponse
from services.carrier.channels.x12_envelope import split_segments
from tests.unit.carrier_channels.samples import DOCUMENT, NOW

GOLDEN = Path(__file__).parent / "golden"


def _build(document=DOCUMENT, **overrides) -> str:
    args = {"control_number": 42, "sender_id": "CARTAGE", "receiver_id": "ABCD", "now": NOW}
    return edi_x12.build_204(document, **(args | overrides))


def test_the_204_matches_the_golden_file_segment_by_segment() -> None:
    built = split_segments(_build())
    golden = split_segments((GOLDEN / "204_original.x12").read_text())
    for position, (ours, theirs) in enumerate(zip(built, golden, strict=False), start=1):
        assert ours == theirs, f"segment {position} differs"
    assert len(built) == len(golden)


def test_the_204_envelope_is_fixed_width_and_counts_itself() -> None:
    text = _build(control_number=7)
    isa = text.split("~")[0]
    assert len(isa) + 1 == 106 and isa[3] == "*" and isa.endswith(">")
    segments = split_segments(text)
    st, se = segments.index("ST*204*0001"), next(i for i, s in enumerate(segments)
                                                if s.startswith("SE*"))
    assert segments[se] == f"SE*{se - st + 1}*0001"
    assert segments[-2:] == ["GE*1*7", "IEA*1*000000007"]
    assert "GS*SM*CARTAGE*ABCD*20260302*0930*7*X*004010" in segments


def test_a_cancellation_says_so_in_b2a() -> None:
    cancel = dataclasses.replace(DOCUMENT, purpose="CANCEL")
    assert "B2A*01*LT" in split_segments(_build(cancel))
    assert edi_x12.parse_204(_build(cancel)).purpose == "CANCEL"


def test_the_204_carries_what_a_carrier_answers_with() -> None:
    ref = edi_x12.parse_204(_build())
    assert (ref.tender_id, ref.shipment_id, ref.carrier_scac) == ("TND0001", "SHP-4711", "ABCD")


def test_a_golden_990_accept_is_read() -> None:
    answer = edi_x12.parse_990((GOLDEN / "990_accept.x12").read_text())
    assert answer == TenderResponse("TND0001", "ABCD", True, None, None,
                                    datetime(2026, 3, 2, 10, 11, tzinfo=UTC))


def test_a_golden_990_decline_is_read_with_its_reason() -> None:
    answer = edi_x12.parse_990((GOLDEN / "990_decline.x12").read_text())
    assert not answer.accepted
    assert answer.reason_code == "EQUIPMENT_UNAVAILABLE"
    assert answer.reason == "NO REEFER FREE IN HAMBURG BEFORE 5 MARCH"
    assert answer.responded_at == datetime(2026, 3, 2, 10, 14, tzinfo=UTC)


@pytest.mark.parametrize("accepted", [True, False])
def test_990_round_trip(accepted: bool) -> None:
    response = TenderResponse("TND0001", "ABCD", accepted, None if accepted else "RATE_TOO_LOW",
                              None if accepted else "Rate is 20 % under our contract for the lane",
                              datetime(2026, 3, 2, 11, 5, tzinfo=UTC))
    text = edi_x12.build_990(response, shipment_id="SHP-4711", control_number=9,
                             sender_id="ABCD", receiver_id="CARTAGE", now=NOW)
    assert edi_x12.parse_990(text) == response


def test_several_990s_in_one_interchange() -> None:
    one = edi_x12.build_990(TenderResponse("T1", "ABCD", True, None, None, NOW),
                            shipment_id="S1", control_number=5, sender_id="ABCD",
                            receiver_id="CARTAGE", now=NOW)
    segments = split_segments(one)
    st = segments.index("ST*990*0001")
    body = segments[st + 1:st + 3]
    second = ["ST*990*0002", *(s.replace("T1", "T2") for s in body), "SE*4*0002"]
    batched = [*segments[:st + 4], *second, "GE*2*5", segments[-1]]
    answers = edi_x12.parse_990s("~".join(batched) + "~")
    assert [a.tender_id for a in answers] == ["T1", "T2"]
    with pytest.raises(ChannelError, match="expected one 990, found 2"):
        edi_x12.parse_990("~".join(batched) + "~")


def test_997_round_trip() -> None:
    text = edi_x12.build_997(42, "204", ["0001"], status="A", control_number=77,
                             sender_id="ABCD", receiver_id="CARTAGE", now=NOW)
    assert edi_x12.parse_997(text) == edi_x12.FunctionalAck(42, "A", True)
    rejected = edi_x12.build_997(42, "204", ["0001"], status="R", control_number=78,
                                 sender_id="ABCD", receiver_id="CARTAGE", now=NOW)
    assert not edi_x12.parse_997(rejected).accepted


# --- bad input ----------------------------------------------------------------------------------

ACCEPT = (GOLDEN / "990_accept.x12").read_text()


@pytest.mark.parametrize(("mutate", "message", "where"), [
    (lambda t: t.replace("SE*5*", "SE*6*"), "SE01 says 6 segments", "segment 7 (SE01)"),
    (lambda t: t.replace("SE*5*3110001", "SE*5*3110002"), "SE02", "segment 7 (SE02)"),
    (lambda t: t.replace("IEA*1*000000311", "IEA*1*000000312"), "IEA02", "segment 9 (IEA02)"),
    (lambda t: t.replace("GE*1*311", "GE*1*310"), "GE02", "segment 8 (GE02)"),
    (lambda t: t.replace("GE*1*", "GE*2*"), "GE01 says 2", "segment 8 (GE01)"),
    (lambda t: t.replace("IEA*1*", "IEA*3*"), "IEA01 says 3", "segment 9 (IEA01)"),
    (lambda t: t.replace("*A~", "*X~"), "unknown code 'X'", "segment 4 (B104)"),
    (lambda t: t.replace("*A~", "~"), "B104", "segment 4 (B104)"),
    (lambda t: t.replace("N9*TN*", "N9*XX*"), "qualifier TN", "transaction set"),
    (lambda t: t.replace("20260302*A", "20260231*A"), "bad date", "segment 4 (B103)"),
    (lambda t: t.replace("CARTAGE        *", "CARTAGE*", 1), "not fixed width", "segment 1"),
    (lambda t: t.replace("*ZZ*CARTAGE        *", "*ZZZ*CARTAGE       *", 1), "ISA07 must be 2",
     "segment 1 (ISA07)"),
    (lambda t: t[: t.index("N9*CN")], "truncated", "segment"),
    (lambda t: t[: t.index("\nGE*") + 1], "truncated: expected", "segment 8"),
    (lambda t: t.replace("IEA*1*000000311~", ""), "truncated: expected IEA", "segment 9"),
    (lambda t: t + "ST*990*1~", "segments after IEA", "segment 10 (ST)"),
    (lambda t: t[:50], "truncated ISA", "segment 1 (ISA)"),
    (lambda t: "GS" + t[3:], "starts with ISA", "segment 1"),
    (lambda t: t.replace("ST*990", "ST*204"), "expected transaction set 990", "ST 3110001"),
])
def test_a_bad_990_is_refused_with_its_position(mutate, message: str, where: str) -> None:
    with pytest.raises(ChannelError, match=message) as caught:
        edi_x12.parse_990(mutate(ACCEPT))
    assert caught.value.where is not None and caught.value.where.startswith(where)


@pytest.mark.parametrize(("change", "field"), [
    ({"shipment_id": "SHP*4711"}, "shipment_id"),
    ({"tender_id": "T" * 31}, "tender_id"),
    ({"equipment": "SPACESHIP"}, "equipment"),
    ({"accessorials": ("TELEPORT",)}, "accessorials"),
    ({"offered_amount": Decimal("10.005")}, "offered_amount"),
    ({"offered_amount": Decimal("NaN")}, "offered_amount"),
    ({"weight_kg": Decimal("-1")}, "weight_kg"),
    ({"respond_by": datetime(2026, 3, 2, 12, 0)}, "respond_by"),
    ({"stops": ()}, "stops"),
    ({"stops": (dataclasses.replace(DOCUMENT.stops[0], sequence=0),)}, "stops[0].sequence"),
    ({"currency": "EURO"}, "currency"),
])
def test_a_document_x12_cannot_carry_is_refused_naming_the_field(change, field: str) -> None:
    with pytest.raises(ChannelError) as caught:
        _build(dataclasses.replace(DOCUMENT, **change))
    assert caught.value.where == field


def test_names_are_folded_to_ascii_for_x12() -> None:
    assert "N3*Konigstrasse 12" in split_segments(_build())
