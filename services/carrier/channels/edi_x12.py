"""EDI X12 004010 tenders: build a 204 (load tender), read a 990 (response) and a 997 (ack).

Pure functions over the canonical model. Which X12 code stands for which canonical one is in
`codes.py`; the envelope (ISA/GS/ST … SE/GE/IEA) is `x12_envelope.py`.

What goes where in our 204 (the trading-partner guide in short):
  B2-02 carrier SCAC, B2-04 our shipment id, B2-06 PP (prepaid); B2A-01 00 original / 01 cancel;
  L11*<tender id>*TN — the carrier echoes it in the 990 as N9*TN, that is how an answer finds
  its tender; G62*64 respond-by (UTC); AT5 per accessorial; NTE*OTH the offer's currency (the
  004010 204 has no currency element); N7-11 equipment; per stop an S5 loop (S5, L11*CR
  reference, G62 window, AT8 weight/pallets/volume on the first stop, N1 SF/ST, N3, N4);
  L3 total weight and the offered amount (L3-05, two implied decimals).
A 990: B1 (SCAC, shipment id, date, A accept / D decline), N9*TN tender id (N9-04/05 the
response time), N9*ZZ decline reason code, K1 free-text reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from services.carrier.channels import codes
from services.carrier.channels import x12_envelope as x12
from services.carrier.channels.model import ChannelError, TenderDocument, TenderResponse

_seg = x12.segment
_REASON_CHUNK = 30  # K1-01 is AN 1-30


def _decimal(value: Decimal, field: str, *, places: int | None = None) -> str:
    if not value.is_finite() or value < 0:
        raise ChannelError(f"{field} must be a finite, non-negative number", field)
    if places is not None and value != value.quantize(Decimal(1).scaleb(-places)):
        raise ChannelError(f"{field} has more than {places} decimal places", field)
    text = format(value.normalize(), "f")
    if len(text) > 10:  # R 1/10 in the elements we use
        raise ChannelError(f"{field} is too large for X12", field)
    return text


def _cents(amount: Decimal, field: str) -> str:
    _decimal(amount, field, places=2)
    return str(int(amount * 100))  # N2: two implied decimal places


def _stop_loop(document: TenderDocument, index: int) -> list[str]:
    stop = document.stops[index]
    where = f"stops[{index}]"
    if stop.kind not in codes.STOP_REASON:
        raise ChannelError(f"unknown stop kind {stop.kind!r}", f"{where}.kind")
    if not 1 <= stop.sequence <= 999:  # S5-01 is N0 1/3
        raise ChannelError("stop sequence must be 1–999", f"{where}.sequence")
    out = [_seg("S5", str(stop.sequence), codes.STOP_REASON[stop.kind])]
    if stop.reference:
        out.append(_seg("L11", x12.text(stop.reference, f"{where}.reference", max_len=30),
                        codes.STOP_REF))
    for moment, (date_q, time_q) in ((stop.window_start, codes.WINDOW_START[stop.kind]),
                                     (stop.window_end, codes.WINDOW_END[stop.kind])):
        if moment is not None:
            out.append(_seg("G62", date_q, x12.date8(moment, where), time_q,
                            x12.time4(moment, where), "UT"))
    if index == 0:
        volume = ("", "")
        if document.volume_m3 is not None:
            volume = ("X", _decimal(document.volume_m3, "volume_m3"))  # X: cubic meters
        if document.pallets < 0:
            raise ChannelError("pallets must not be negative", "pallets")
        out.append(_seg("AT8", "G", "K", _decimal(document.weight_kg, "weight_kg"),
                        str(document.pallets), "", *volume))
    party = stop.party
    out.append(_seg("N1", codes.STOP_PARTY[stop.kind],
                    x12.text(party.name, f"{where}.party.name", max_len=60)))
    lines = [x12.text(line, f"{where}.party.address_lines", max_len=55)
             for line in party.address_lines]
    for pair in range(0, len(lines), 2):
        out.append(_seg("N3", *lines[pair:pair + 2]))
    out.append(_seg("N4", x12.text(party.city, f"{where}.party.city", max_len=30),
                    x12.text(party.region, f"{where}.party.region", max_len=2, min_len=0),
                    x12.text(party.postal_code, f"{where}.party.postal_code", max_len=15),
                    x12.text(party.country, f"{where}.party.country", max_len=3, min_len=2)))
    return out


def build_204(document: TenderDocument, *, control_number: int, sender_id: str,
              receiver_id: str, now: datetime, test: bool = False) -> str:
    """The 204 interchange for `document`; ChannelError names the field X12 cannot carry."""
    if not document.stops:
        raise ChannelError("a tender needs at least one stop", "stops")
    body = [
        _seg("B2", "", x12.text(document.carrier_scac, "carrier_scac", max_len=4, min_len=2), "",
             x12.text(document.shipment_id, "shipment_id", max_len=30), "", "PP"),
        _seg("B2A", codes.PURPOSE[document.purpose], "LT"),
        _seg("L11", x12.text(document.tender_id, "tender_id", max_len=30), codes.TENDER_REF),
        _seg("G62", codes.RESPOND_BY[0], x12.date8(document.respond_by, "respond_by"),
             codes.RESPOND_BY[1], x12.time4(document.respond_by, "respond_by"), "UT"),
    ]
    for accessorial in document.accessorials:
        element, code = codes.to_vendor(codes.ACCESSORIALS, accessorial, "accessorials",
                                        channel="x12").split(":")
        body.append(_seg("AT5", code) if element == "01" else _seg("AT5", "", code))
    body.append(_seg("NTE", "OTH", "OFFER CURRENCY " + x12.text(
        document.currency, "currency", max_len=3, min_len=3)))
    equipment = codes.to_vendor(codes.EQUIPMENT, document.equipment, "equipment", channel="x12")
    body.append(_seg("N7", "", "NONE", *[""] * 8, equipment))
    for index in range(len(document.stops)):
        body.extend(_stop_loop(document, index))
    body.append(_seg("L3", _decimal(document.weight_kg, "weight_kg"), "G", "", "",
                     _cents(document.offered_amount, "offered_amount"), *[""] * 6, "K"))
    return x12.render("SM", [("204", body)], control_number=control_number,
                      sender_id=sender_id, receiver_id=receiver_id, now=now, test=test)


@dataclass(frozen=True, slots=True)
class TenderRef:
    """What a carrier needs from a 204 to answer it (the test carrier uses this)."""

    tender_id: str
    shipment_id: str
    carrier_scac: str
    purpose: str
    interchange_sender: str


def parse_204(raw: str) -> TenderRef:
    interchange = x12.parse_interchange(raw)
    transaction = _only(_transactions(interchange, "204"), "204")
    b2 = _first(transaction.segments, "B2", None)
    b2a = _first(transaction.segments, "B2A", None)
    ref = _reference(transaction.segments, "L11", codes.TENDER_REF, value_at=1, qualifier_at=2)
    purpose = {v: k for k, v in codes.PURPOSE.items()}.get(b2a.get(1))
    if purpose is None:
        raise ChannelError(f"unknown B2A01 purpose {b2a.get(1)!r}", b2a.where(1))
    return TenderRef(ref, b2.get(4), b2.get(2), purpose, interchange.sender_id)


def build_990(response: TenderResponse, *, shipment_id: str, control_number: int,
              sender_id: str, receiver_id: str, now: datetime) -> str:
    """A carrier's 990 for `response` (what the test carrier sends; parse_990 reads it back)."""
    action = codes.to_vendor(codes.ACTIONS, "ACCEPTED" if response.accepted else "DECLINED",
                             "accepted", channel="x12")
    when = response.responded_at or now
    body = [
        _seg("B1", x12.text(response.carrier_scac, "carrier_scac", max_len=4, min_len=2),
             x12.text(shipment_id, "shipment_id", max_len=30), x12.date8(when, "responded_at"),
             action),
        _seg("N9", codes.TENDER_REF, x12.text(response.tender_id, "tender_id", max_len=30), "",
             x12.date8(when, "responded_at"), x12.time4(when, "responded_at"), "UT"),
    ]
    if response.reason_code:
        body.append(_seg("N9", codes.REASON_REF, codes.to_vendor(
            codes.DECLINE_REASONS, response.reason_code, "reason_code", channel="x12")))
    if response.reason:
        reason = x12.text(response.reason, "reason", max_len=30 * 20)
        body.extend(_seg("K1", reason[i:i + _REASON_CHUNK])
                    for i in range(0, len(reason), _REASON_CHUNK))
    return x12.render("GF", [("990", body)], control_number=control_number,
                      sender_id=sender_id, receiver_id=receiver_id, now=now)


def parse_990s(raw: str) -> list[TenderResponse]:
    """Every 990 in an interchange (a carrier may batch its answers)."""
    return [_response(t) for t in _transactions(x12.parse_interchange(raw), "990")]


def parse_990(raw: str) -> TenderResponse:
    """The one 990 in an interchange; ChannelError when it holds none or several."""
    return _response(_only(_transactions(x12.parse_interchange(raw), "990"), "990"))


def _response(transaction: x12.Transaction) -> TenderResponse:
    segments = transaction.segments
    b1 = _first(segments, "B1", 0)
    scac = b1.get(1)
    if not 2 <= len(scac) <= 4 or not scac.isalnum():
        raise ChannelError(f"B101 is not a SCAC: {scac!r}", b1.where(1))
    date = _parse_moment(b1.get(3), "", b1, 3)
    if not b1.get(4):
        raise ChannelError("B104 reservation action code is missing", b1.where(4))
    action = codes.from_vendor(codes.ACTIONS, b1.get(4), b1.where(4), channel="x12")
    tender_id = _reference(segments, "N9", codes.TENDER_REF, value_at=2, qualifier_at=1)
    n9 = next(s for s in segments if s.tag == "N9" and s.get(1) == codes.TENDER_REF)
    if n9.get(6) not in ("", "UT"):
        raise ChannelError(f"N906 time code {n9.get(6)!r}: we read UT only", n9.where(6))
    responded_at = _parse_moment(n9.get(4), n9.get(5), n9, 4) if n9.get(4) else date
    reason_code = None
    for seg in segments:
        if seg.tag == "N9" and seg.get(1) == codes.REASON_REF:
            reason_code = codes.from_vendor(codes.DECLINE_REASONS, seg.get(2), seg.where(2),
                                            channel="x12")
    reason = "".join(s.get(1) + s.get(2) for s in segments if s.tag == "K1") or None
    return TenderResponse(tender_id=tender_id, carrier_scac=scac, accepted=action == "ACCEPTED",
                          reason_code=reason_code, reason=reason, responded_at=responded_at)


@dataclass(frozen=True, slots=True)
class FunctionalAck:
    """A 997: did the carrier's translator take our group (GS06 = `group_control`)?"""

    group_control: int
    status: str  # AK9-01: A accepted, E accepted with errors, P partially, R rejected
    accepted: bool


def parse_997(raw: str) -> FunctionalAck:
    transaction = _only(_transactions(x12.parse_interchange(raw), "997"), "997")
    ak1 = _first(transaction.segments, "AK1", 0)
    ak9 = _first(transaction.segments, "AK9", None)
    if not ak1.get(2).isdigit():
        raise ChannelError("AK102 group control number must be a number", ak1.where(2))
    if ak9.get(1) not in ("A", "E", "P", "R"):
        raise ChannelError(f"unknown AK901 status {ak9.get(1)!r}", ak9.where(1))
    return FunctionalAck(int(ak1.get(2)), ak9.get(1), ak9.get(1) in ("A", "E"))


def build_997(group_control: int, set_id: str, set_controls: Sequence[str], *, status: str,
              control_number: int, sender_id: str, receiver_id: str, now: datetime) -> str:
    """A 997 acknowledging one of our groups (the test carrier's use)."""
    body = [_seg("AK1", "SM", str(group_control))]
    for control in set_controls:
        body += [_seg("AK2", set_id, control), _seg("AK5", status)]
    body.append(_seg("AK9", status, *[str(len(set_controls))] * 3))
    return x12.render("FA", [("997", body)], control_number=control_number,
                      sender_id=sender_id, receiver_id=receiver_id, now=now)


# --- helpers ------------------------------------------------------------------------------------


def _transactions(interchange: x12.Interchange, set_id: str) -> list[x12.Transaction]:
    found = [t for g in interchange.groups for t in g.transactions]
    for t in found:
        if t.set_id != set_id:
            raise ChannelError(f"expected transaction set {set_id}, found {t.set_id}",
                               f"ST {t.control}")
    return found


def _only(transactions: list[x12.Transaction], set_id: str) -> x12.Transaction:
    if len(transactions) != 1:
        raise ChannelError(f"expected one {set_id}, found {len(transactions)}", "interchange")
    return transactions[0]


def _first(segments: tuple[x12.Segment, ...], tag: str, at: int | None) -> x12.Segment:
    """The first `tag` segment; with `at`, it must be the segment at that index of the set."""
    for index, seg in enumerate(segments):
        if seg.tag == tag and (at is None or index == at):
            return seg
    where = segments[at].where() if at is not None and at < len(segments) else "transaction set"
    raise ChannelError(f"missing {tag} segment", where)


def _reference(segments: tuple[x12.Segment, ...], tag: str, qualifier: str, *,
               value_at: int, qualifier_at: int) -> str:
    for seg in segments:
        if seg.tag == tag and seg.get(qualifier_at) == qualifier:
            if not seg.get(value_at):
                raise ChannelError(f"{tag}*{qualifier} has no value", seg.where(value_at))
            return seg.get(value_at)
    raise ChannelError(f"missing {tag} segment with qualifier {qualifier} (the tender id)",
                       "transaction set")


def _parse_moment(date: str, time: str, seg: x12.Segment, index: int) -> datetime:
    try:
        parsed = datetime.strptime(date + (time or "0000"), "%Y%m%d%H%M")
    except ValueError:
        raise ChannelError(f"bad date/time {date!r} {time!r}", seg.where(index)) from None
    return parsed.replace(tzinfo=UTC)
