"""The EDI outbox (204 files written atomically, never replaced) and inbox (990 files read)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from services.carrier.channels import edi_x12
from services.carrier.channels.model import ChannelError, TenderResponse
from services.carrier.channels.sender import EdiFileSender, EdiInbox
from tests.unit.carrier_channels.samples import DOCUMENT, NOW

GOLDEN = Path(__file__).parent / "golden"


def test_the_outbox_gets_the_whole_204_and_no_temporary_file(tmp_path: Path) -> None:
    outbox = EdiFileSender(tmp_path, sender_id="CARTAGE", receiver_id="ABCD")
    path = outbox.write(DOCUMENT, control_number=42, now=NOW)
    assert path.name == "204-000000042.x12"
    assert path.read_text() == edi_x12.build_204(DOCUMENT, control_number=42,
                                                 sender_id="CARTAGE", receiver_id="ABCD", now=NOW)
    assert os.listdir(tmp_path) == [path.name]


def test_a_control_number_is_never_written_twice(tmp_path: Path) -> None:
    outbox = EdiFileSender(tmp_path, sender_id="CARTAGE", receiver_id="ABCD")
    first = outbox.write(DOCUMENT, control_number=5, now=NOW).read_bytes()
    other = dataclasses.replace(DOCUMENT, tender_id="OTHER")
    with pytest.raises(ChannelError, match="already in the outbox"):
        outbox.write(other, control_number=5, now=NOW)
    assert (tmp_path / "204-000000005.x12").read_bytes() == first
    assert len(os.listdir(tmp_path)) == 1


def test_a_document_x12_cannot_carry_leaves_no_file(tmp_path: Path) -> None:
    outbox = EdiFileSender(tmp_path, sender_id="CARTAGE", receiver_id="ABCD")
    with pytest.raises(ChannelError):
        outbox.write(DOCUMENT, control_number=0, now=NOW)
    assert os.listdir(tmp_path) == []


async def test_send_writes_off_the_event_loop(tmp_path: Path) -> None:
    outbox = EdiFileSender(tmp_path, sender_id="CARTAGE", receiver_id="ABCD", test=True)
    path = await outbox.send(DOCUMENT, control_number=6, now=NOW)
    assert edi_x12.parse_204(path.read_text()).tender_id == "TND0001"
    assert path.read_text().split("~")[0].split("*")[15] == "T"  # ISA15: test data


def test_the_inbox_reads_complete_990_files_and_moves_them_aside(tmp_path: Path) -> None:
    (tmp_path / "a-accept.x12").write_text((GOLDEN / "990_accept.x12").read_text())
    (tmp_path / "b-decline.x12").write_text((GOLDEN / "990_decline.x12").read_text())
    (tmp_path / "c-upload.x12.part").write_text("ISA*00*")  # still arriving
    (tmp_path / ".d-hidden").write_text("ISA*00*")
    (tmp_path / "e-broken.x12").write_text((GOLDEN / "990_accept.x12").read_text()[:200])
    inbox = EdiInbox(tmp_path)
    items = inbox.read()
    assert [i.path.name for i in items] == ["a-accept.x12", "b-decline.x12", "e-broken.x12"]
    accept, decline, broken = items
    assert [r.accepted for r in accept.responses + decline.responses] == [True, False]
    assert isinstance(accept.responses[0], TenderResponse) and accept.error is None
    assert broken.responses == () and broken.error is not None
    assert broken.error.where is not None and broken.error.where.startswith("segment")
    assert inbox.done(accept) == tmp_path / "processed" / "a-accept.x12"
    assert inbox.reject(broken) == tmp_path / "rejected" / "e-broken.x12"
    assert [i.path.name for i in inbox.read()] == ["b-decline.x12"]


def test_the_inbox_refuses_oversized_and_non_ascii_files(tmp_path: Path) -> None:
    (tmp_path / "big.x12").write_bytes(b"ISA" + b" " * 2000)
    (tmp_path / "utf.x12").write_bytes("ISA*Ü".encode())
    big, utf = EdiInbox(tmp_path, max_bytes=1000).read()
    assert big.error is not None and "larger than" in str(big.error)
    assert utf.error is not None and "not ASCII" in str(utf.error)


def test_an_edi_tender_round_trip_through_outbox_and_inbox(tmp_path: Path) -> None:
    """The 204 we drop is what a carrier answers; its 990 in our inbox finds the tender."""
    outbox, inbox_dir = tmp_path / "out", tmp_path / "in"
    outbox.mkdir()
    inbox_dir.mkdir()
    path = EdiFileSender(outbox, sender_id="CARTAGE", receiver_id="ABCD").write(
        DOCUMENT, control_number=100, now=NOW)
    ref = edi_x12.parse_204(path.read_text())  # the carrier's side
    answer = TenderResponse(ref.tender_id, ref.carrier_scac, False, "NO_CAPACITY", None, NOW)
    (inbox_dir / "990-1.x12").write_text(edi_x12.build_990(
        answer, shipment_id=ref.shipment_id, control_number=1, sender_id=ref.carrier_scac,
        receiver_id=ref.interchange_sender, now=NOW))
    [item] = EdiInbox(inbox_dir).read()
    assert item.responses == (answer,)
