"""The tender channels wired into the carrier service, on real Postgres and NATS: HTTP carriers
(the test carrier on 127.0.0.1) that accept or reject at once, stay silent or fail; EDI 204
files out and 990 files in; and tracking's milestone.recorded feeding the lane scorecards."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from google.protobuf import timestamp_pb2

from cartage.carrier.v1 import carrier_pb2, shipment_pb2, tender_pb2
from cartage.carrier.v1 import carrier_service_pb2 as pb
from cartage.order.v1 import order_pb2, order_service_pb2
from cartage.tracking.v1 import events_pb2 as tracking_events
from cartage.tracking.v1 import tracking_pb2
from services.carrier.adapters.tender_documents import long_id
from services.carrier.channels import TenderResponse, build_990, parse_204
from services.kit.events import EVENT_TYPE_HEADER, catalog
from services.kit.relay import ensure_stream
from tests.carrier_samples import eur, lane, place
from tests.carrier_server import Behaviour, TestCarrier
from tests.conftest import carrier_settings
from tests.integration.carrier.conftest import CarrierClient
from tests.support import OrderClient, eventually, sample_order

pytestmark = pytest.mark.integration

S = shipment_pb2.Shipment
T = tender_pb2.Tender
API = carrier_pb2.TENDER_CHANNEL_API_CALLBACK
EDI = carrier_pb2.TENDER_CHANNEL_EDI


async def http_carrier(shipper: CarrierClient, test_carrier: TestCarrier, name: str,
                       price: str) -> object:
    c = await shipper.carrier(name, test_carrier.scac, tender_channel=API,
                              endpoint_uri=test_carrier.url)
    await shipper.card(c.name, lane(pricing=carrier_pb2.Pricing(flat=eur(price))))
    return c


async def tenders_of(shipper: CarrierClient, shipment: str) -> list[tender_pb2.Tender]:
    found = (await shipper.ListTenders(pb.ListTendersRequest())).tenders
    return sorted((t for t in found if t.shipment == shipment), key=lambda t: t.rank)


async def shipment_state(shipper: CarrierClient, name: str, state: int) -> S:
    return await eventually(lambda: shipper.GetShipment(pb.GetShipmentRequest(name=name)), 10,
                            until=lambda s: s.state == state)


# HTTP -------------------------------------------------------------------------------------------


async def test_an_http_carrier_that_accepts_at_once_books_the_load(
        stack, shipper: CarrierClient) -> None:
    async with TestCarrier(scac="HTTA") as test_carrier:
        c = await http_carrier(shipper, test_carrier, "Answers at once", "300")
        s = await shipper.shipment()
        await shipper.tender(s.name, seconds=600)
        booked = await shipment_state(shipper, s.name, S.STATE_BOOKED)
    assert booked.carrier == c.name
    [offer] = test_carrier.received
    [tender] = await tenders_of(shipper, s.name)
    assert tender.state == T.STATE_ACCEPTED
    body = offer.json()
    assert body["tender_id"] == tender.name.removeprefix("tenders/")  # no X12 length limit
    assert offer.headers["idempotency-key"] == body["tender_id"]
    assert body["carrier_scac"] == "HTTA" and body["callback_url"] is None
    assert body["offer"] == {"amount": "337.50", "currency": "EUR"}  # 300 + 12.5 % fuel


async def test_an_http_rejection_offers_the_load_to_the_next_carrier(
        stack, shipper: CarrierClient) -> None:
    async with TestCarrier(scac="HTTR", default=Behaviour.REJECT) as rejecting, \
            TestCarrier(scac="HTTB") as accepting:
        await http_carrier(shipper, rejecting, "Always full", "300")
        second = await http_carrier(shipper, accepting, "Has trucks", "400")
        s = await shipper.shipment()
        await shipper.tender(s.name, seconds=600)
        booked = await shipment_state(shipper, s.name, S.STATE_BOOKED)
    assert booked.carrier == second.name
    first, next_one = await tenders_of(shipper, s.name)
    assert first.state == T.STATE_REJECTED and first.reject_reason.startswith("NO_CAPACITY")
    assert next_one.state == T.STATE_ACCEPTED
    assert len(rejecting.received) == len(accepting.received) == 1


async def test_a_silent_http_carrier_expires_and_the_next_is_offered(
        stack, shipper: CarrierClient) -> None:
    async with TestCarrier(scac="HTTS", default=Behaviour.SILENT) as silent, \
            TestCarrier(scac="HTTN") as accepting:
        await http_carrier(shipper, silent, "Never answers", "300")
        second = await http_carrier(shipper, accepting, "Answers", "400")
        s = await shipper.shipment()
        await shipper.tender(s.name, seconds=1.5)
        [open_offer] = await tenders_of(shipper, s.name)
        assert open_offer.state == T.STATE_OFFERED  # a 202: it answers later, or never
        booked = await shipment_state(shipper, s.name, S.STATE_BOOKED)
    assert booked.carrier == second.name
    first, _ = await tenders_of(shipper, s.name)
    assert first.state == T.STATE_EXPIRED


async def test_a_failing_http_carrier_leaves_the_offer_open_until_its_deadline(
        stack, shipper: CarrierClient) -> None:
    async with TestCarrier(scac="HTTE", default=Behaviour.ERROR) as failing:
        await http_carrier(shipper, failing, "Broken API", "300")
        s = await shipper.shipment()
        await shipper.tender(s.name, seconds=2)
        [offer] = await tenders_of(shipper, s.name)
        assert offer.state == T.STATE_OFFERED and len(failing.received) == 1
        await asyncio.sleep(0.5)
        assert (await tenders_of(shipper, s.name))[0].state == T.STATE_OFFERED
        await shipment_state(shipper, s.name, S.STATE_TENDER_EXHAUSTED)
    [expired] = await tenders_of(shipper, s.name)
    assert expired.state == T.STATE_EXPIRED


# EDI --------------------------------------------------------------------------------------------


async def appears(path: Path) -> None:
    async def exists() -> bool:
        return await asyncio.to_thread(path.exists)

    await eventually(exists, 10)


def edi_dirs(stack) -> tuple[Path, Path]:
    settings = carrier_settings(stack)
    return Path(settings.edi_outbox_dir), Path(settings.edi_inbox_dir)


async def edi_tender(stack, shipper: CarrierClient, scac: str) -> tuple:
    c = await shipper.carrier("EDI Freight", scac, tender_channel=EDI)
    await shipper.card(c.name)
    s = await shipper.shipment()
    await shipper.tender(s.name, seconds=600)
    outbox, _ = edi_dirs(stack)
    folder = outbox / c.name.removeprefix("carriers/")

    async def files() -> list[Path]:
        return sorted(folder.glob("204-*.x12")) if folder.exists() else []

    [path] = await eventually(files, 10)
    return c, s, parse_204(path.read_text("ascii"))


def drop_990(stack, ref, scac: str, *, accepted: bool) -> Path:
    """A carrier's 990 uploaded into the inbox the way a file transfer does (temp, rename)."""
    text = build_990(TenderResponse(ref.tender_id, scac, accepted, None if accepted else
                                    "NO_CAPACITY", None, datetime.now(UTC).replace(second=0)),
                     shipment_id=ref.shipment_id, control_number=7, sender_id=scac,
                     receiver_id=ref.interchange_sender, now=datetime.now(UTC))
    _, inbox = edi_dirs(stack)
    name = f"990-{uuid.uuid4().hex}.x12"
    part = inbox / f"{name}.part"
    part.write_text(text, "ascii")
    part.rename(inbox / name)
    return inbox / name


async def test_an_edi_carrier_gets_a_204_and_its_990_books_the_load(
        stack, shipper: CarrierClient) -> None:
    c, s, ref = await edi_tender(stack, shipper, "EDIA")
    [tender] = await tenders_of(shipper, s.name)
    assert ref.carrier_scac == "EDIA" and ref.purpose == "ORIGINAL"
    assert len(ref.tender_id) <= 30 and long_id(ref.tender_id) == tender.name.split("/")[1]
    assert long_id(ref.shipment_id) == s.name.split("/")[1]
    dropped = drop_990(stack, ref, "EDIA", accepted=True)
    booked = await shipment_state(shipper, s.name, S.STATE_BOOKED)
    assert booked.carrier == c.name
    await appears(dropped.parent / "processed" / dropped.name)


async def test_a_990_from_another_scac_is_set_aside_and_changes_nothing(
        stack, shipper: CarrierClient) -> None:
    _, s, ref = await edi_tender(stack, shipper, "EDIB")
    dropped = drop_990(stack, ref, "EVIL", accepted=True)
    await appears(dropped.parent / "rejected" / dropped.name)
    [tender] = await tenders_of(shipper, s.name)
    assert tender.state == T.STATE_OFFERED
    still = await shipper.GetShipment(pb.GetShipmentRequest(name=s.name))
    assert still.state == S.STATE_TENDERED


async def test_a_broken_990_file_is_set_aside_and_the_inbox_keeps_working(
        stack, shipper: CarrierClient) -> None:
    _, inbox = edi_dirs(stack)
    await appears(inbox)
    junk = inbox / f"990-{uuid.uuid4().hex}.x12"
    junk.write_bytes(b"ISA*this is not an interchange~\xff")
    await appears(inbox / "rejected" / junk.name)
    _, s, ref = await edi_tender(stack, shipper, "EDIC")
    drop_990(stack, ref, "EDIC", accepted=False)
    await shipment_state(shipper, s.name, S.STATE_TENDER_EXHAUSTED)


# tracking's milestones ----------------------------------------------------------------------------


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def publish_milestone(nats_url: str, client_id: str, order: str, kind: int,
                            when: datetime, event_id: str | None = None) -> None:
    """`milestone.recorded` as the tracking service's relay publishes it."""
    event = tracking_events.MilestoneRecordedEvent(
        event_id=event_id or uuid.uuid4().hex, client_id=client_id, order=order,
        milestone=tracking_pb2.Milestone(
            name=f"{order}/milestones/{uuid.uuid4().hex}", stop_id="pickup", type=kind,
            event_time=_ts(when), source=tracking_pb2.MILESTONE_SOURCE_DRIVER_APP))
    event.event_time.GetCurrentTime()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, "TRACKING", catalog().streams()["TRACKING"], update=False)
        await js.publish("milestone.recorded", event.SerializeToString(), headers={
            "Nats-Msg-Id": event.event_id, EVENT_TYPE_HEADER: catalog().of(event).name})
    finally:
        await nc.close()


async def test_milestones_from_tracking_change_the_on_time_figures_once(
        stack, channel, carrier_channel, client_of) -> None:
    orders = OrderClient(channel, f"client-{uuid.uuid4().hex[:8]}-milestones")
    order = await orders.create(sample_order(mode=order_pb2.TRANSPORT_MODE_CARRIER))
    await orders.ReleaseOrder(order_service_pb2.ReleaseOrderRequest(name=order.name))
    shipper = CarrierClient(carrier_channel, orders.client_id)
    answering = client_of()
    c = await shipper.carrier(oauth_client_id=answering.client_id)
    await shipper.card(c.name, lane(origin=place("DE", "10"), destination=place("DE", "10")))

    async def listed():
        return (await shipper.ListShipments(pb.ListShipmentsRequest())).shipments

    [s] = await eventually(listed, 15)
    await shipper.tender(s.name, seconds=600)
    [offer] = (await answering.ListTenders(pb.ListTendersRequest())).tenders
    await answering.AcceptTender(pb.AcceptTenderRequest(name=offer.name))

    async def card():
        return (await shipper.ListLaneScorecards(pb.ListLaneScorecardsRequest(
            carrier=c.name))).lane_scorecards[0]

    before = await card()
    assert (before.pickups_recorded, before.deliveries_recorded) == (0, 0)
    window = order.pickup.time_windows[0]
    in_time = window.start_time.ToDatetime(tzinfo=UTC) + timedelta(minutes=30)
    pickup_id = uuid.uuid4().hex
    await publish_milestone(stack.nats_url, orders.client_id, order.name,
                            tracking_pb2.MILESTONE_TYPE_PICKED_UP, in_time, pickup_id)
    picked = await eventually(card, 10, until=lambda x: x.pickups_recorded == 1)
    assert picked.pickups_on_time == 1
    assert (await shipper.GetShipment(pb.GetShipmentRequest(name=s.name))).state == \
        S.STATE_IN_TRANSIT
    # the same event again, and a second report of the pickup (late): no second effect
    await publish_milestone(stack.nats_url, orders.client_id, order.name,
                            tracking_pb2.MILESTONE_TYPE_PICKED_UP, in_time, pickup_id)
    await publish_milestone(stack.nats_url, orders.client_id, order.name,
                            tracking_pb2.MILESTONE_TYPE_PICKED_UP, in_time + timedelta(days=3))
    late = order.delivery.time_windows[0].end_time.ToDatetime(tzinfo=UTC) + timedelta(hours=5)
    await publish_milestone(stack.nats_url, orders.client_id, order.name,
                            tracking_pb2.MILESTONE_TYPE_DELIVERED, late)
    after = await eventually(card, 10, until=lambda x: x.deliveries_recorded == 1)
    assert (after.pickups_recorded, after.pickups_on_time) == (1, 1)
    assert (after.deliveries_recorded, after.deliveries_on_time) == (1, 0)
    assert after.score != before.score
    delivered = await shipment_state(shipper, s.name, S.STATE_DELIVERED)
    assert delivered.carrier == c.name
