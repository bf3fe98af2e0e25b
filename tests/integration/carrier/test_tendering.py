"""The tender waterfall on real Postgres and NATS: offers in rank order, expiry by the durable
deadline job (also after a restart), rejection, exhaustion, no double booking under retried
and racing accepts, carrier clients that see only their own tenders, and the order.released
consumer."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from cartage.carrier.v1 import carrier_pb2, shipment_pb2, tender_pb2
from cartage.carrier.v1 import carrier_service_pb2 as pb
from cartage.order.v1 import order_pb2, order_service_pb2
from tests.carrier_samples import eur, lane
from tests.conftest import carrier_settings
from tests.integration.carrier.conftest import CarrierClient
from tests.support import (
    OrderClient,
    RunningService,
    eventually,
    raises_rpc,
    reason,
    sample_order,
    stream_events,
)

pytestmark = pytest.mark.integration

OFFERED, ACCEPTED = tender_pb2.Tender.STATE_OFFERED, tender_pb2.Tender.STATE_ACCEPTED


async def two_carriers(shipper: CarrierClient, client_of) -> tuple:
    """A cheap and a dear carrier, each answering with its own client."""
    first, second = client_of(), client_of()
    cheap = await shipper.carrier("Nordfracht", "NORF", oauth_client_id=first.client_id)
    dear = await shipper.carrier("Elbe Logistik", "ELBE", oauth_client_id=second.client_id)
    await shipper.card(cheap.name, lane(pricing=carrier_pb2.Pricing(flat=eur("300"))))
    await shipper.card(dear.name, lane(pricing=carrier_pb2.Pricing(flat=eur("400"))))
    return cheap, first, dear, second


async def carrier_events(stack, shipment: str) -> list[str]:
    found = []
    for subject, event, _ in await stream_events(stack.nats_url, "CARRIER"):
        name = event.tender.shipment if subject.startswith("tender.") and \
            subject != "tender.exhausted" else event.shipment.name
        if name == shipment:
            found.append(subject)
    return found


async def test_an_expired_offer_moves_on_and_the_next_carrier_books_it(
        stack, shipper: CarrierClient, client_of) -> None:
    cheap, first, dear, second = await two_carriers(shipper, client_of)
    s = await shipper.shipment()
    tendered = await shipper.tender(s.name, seconds=1)
    assert tendered.state == shipment_pb2.Shipment.STATE_TENDERED
    [offer] = (await first.ListTenders(pb.ListTendersRequest())).tenders
    assert offer.carrier == cheap.name and offer.rank == 1 and offer.state == OFFERED
    assert offer.load.weight_kg == s.weight_kg and not offer.load.order
    # the second carrier's client sees nothing of the first's offer
    assert (await second.ListTenders(pb.ListTendersRequest())).tenders == []
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await second.GetTender(pb.GetTenderRequest(name=offer.name))
    with raises_rpc(grpc.StatusCode.NOT_FOUND):
        await second.AcceptTender(pb.AcceptTenderRequest(name=offer.name))

    async def second_offer():
        return (await second.ListTenders(pb.ListTendersRequest())).tenders

    [next_offer] = await eventually(second_offer, 10)
    assert next_offer.rank == 2 and next_offer.carrier == dear.name
    expired = await first.GetTender(pb.GetTenderRequest(name=offer.name))
    assert expired.state == tender_pb2.Tender.STATE_EXPIRED
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION) as late:
        await first.AcceptTender(pb.AcceptTenderRequest(name=offer.name))
    assert reason(late[0]) == "TENDER_NOT_OPEN"

    accepted = await second.AcceptTender(pb.AcceptTenderRequest(name=next_offer.name))
    assert accepted.state == ACCEPTED and accepted.price.total.units == 450  # 400 + 12.5 % fuel
    booked = await shipper.GetShipment(pb.GetShipmentRequest(name=s.name))
    assert booked.state == shipment_pb2.Shipment.STATE_BOOKED
    assert booked.carrier == dear.name and booked.agreed_price == next_offer.price

    async def events():
        return await carrier_events(stack, s.name)

    seen = await eventually(events, 10, until=lambda e: "shipment.booked" in e)
    assert Counter(seen) == Counter({"tender.offered": 2, "tender.expired": 1,
                                     "tender.accepted": 1, "shipment.booked": 1})
    cards = await shipper.ListLaneScorecards(pb.ListLaneScorecardsRequest())
    by_carrier = {c.carrier: c for c in cards.lane_scorecards}
    assert by_carrier[dear.name].tenders_accepted == 1
    assert by_carrier[cheap.name].tenders_offered == 1
    assert by_carrier[cheap.name].tenders_accepted == 0
    assert by_carrier[cheap.name].score < by_carrier[dear.name].score


async def test_rejections_exhaust_the_waterfall(stack, shipper: CarrierClient,
                                                client_of) -> None:
    _, first, _, second = await two_carriers(shipper, client_of)
    s = await shipper.shipment()
    await shipper.tender(s.name, seconds=600)
    for carrier_client in (first, second):
        [offer] = (await carrier_client.ListTenders(
            pb.ListTendersRequest(filter="state = OFFERED"))).tenders
        with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):
            await carrier_client.RejectTender(pb.RejectTenderRequest(name=offer.name))
        rejected = await carrier_client.RejectTender(pb.RejectTenderRequest(
            name=offer.name, reason="no truck that day"))
        assert rejected.reject_reason == "no truck that day"
    done = await shipper.GetShipment(pb.GetShipmentRequest(name=s.name))
    assert done.state == shipment_pb2.Shipment.STATE_TENDER_EXHAUSTED
    seen = await eventually(lambda: carrier_events(stack, s.name), 10,
                            until=lambda e: "tender.exhausted" in e)
    assert Counter(seen)["tender.rejected"] == 2
    # an exhausted shipment can be tendered again, to a carrier the shipper names
    again = await shipper.tender(s.name, seconds=600, carriers=[
        (await shipper.ListCarriers(pb.ListCarriersRequest())).carriers[1].name])
    assert again.state == shipment_pb2.Shipment.STATE_TENDERED


async def test_retried_and_concurrent_accepts_book_once(stack, shipper: CarrierClient,
                                                        client_of) -> None:
    _, first, _, _ = await two_carriers(shipper, client_of)
    s = await shipper.shipment()
    await shipper.tender(s.name, seconds=600)
    [offer] = (await first.ListTenders(pb.ListTendersRequest())).tenders
    answers = await asyncio.gather(*[first.AcceptTender(pb.AcceptTenderRequest(name=offer.name))
                                     for _ in range(20)], return_exceptions=True)
    assert all(isinstance(a, tender_pb2.Tender) and a.state == ACCEPTED for a in answers), \
        answers
    seen = await eventually(lambda: carrier_events(stack, s.name), 10,
                            until=lambda e: "shipment.booked" in e)
    await asyncio.sleep(0.5)
    seen = await carrier_events(stack, s.name)
    assert Counter(seen)["tender.accepted"] == 1 and Counter(seen)["shipment.booked"] == 1


async def test_an_accept_racing_the_deadline_books_or_expires_never_both(
        stack, shipper: CarrierClient, client_of) -> None:
    _, first, _, second = await two_carriers(shipper, client_of)
    shipments = [await shipper.shipment() for _ in range(12)]
    for s in shipments:
        await shipper.tender(s.name, seconds=1, carriers=[
            (await shipper.ListCarriers(pb.ListCarriersRequest())).carriers[0].name])
    offers = (await first.ListTenders(pb.ListTendersRequest(filter="state = OFFERED"))).tenders
    assert len(offers) == 12
    await asyncio.sleep(0.9)

    async def accept(name: str) -> str:
        try:
            await first.AcceptTender(pb.AcceptTenderRequest(name=name))
            return "accepted"
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
            return "late"

    outcomes = await asyncio.gather(*[accept(o.name) for o in offers])
    print("race outcomes", Counter(outcomes))
    for offer, outcome in zip(offers, outcomes, strict=True):
        tender = await eventually(lambda o=offer: first.GetTender(
            pb.GetTenderRequest(name=o.name)), 5, until=lambda t: t.state != OFFERED)
        shipment = await shipper.GetShipment(pb.GetShipmentRequest(name=offer.shipment))
        if outcome == "accepted":
            assert tender.state == ACCEPTED
            assert shipment.state == shipment_pb2.Shipment.STATE_BOOKED
        else:
            assert tender.state == tender_pb2.Tender.STATE_EXPIRED
            assert shipment.state == shipment_pb2.Shipment.STATE_TENDER_EXHAUSTED
    del second


async def test_deadlines_fire_after_a_restart(stack, fresh_database, client_of) -> None:
    settings = carrier_settings(stack, database_url=fresh_database)
    from services.carrier.app import DEFINITION

    running = await RunningService(DEFINITION, settings).start()
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            shipper = CarrierClient(channel)
            carrier_client = CarrierClient(channel)
            c = await shipper.carrier(oauth_client_id=carrier_client.client_id)
            await shipper.card(c.name)
            s = await shipper.shipment()
            await shipper.tender(s.name, seconds=2)
    finally:
        await running.stop()
    await asyncio.sleep(2.5)  # the deadline passes while no service runs
    async with RunningService(DEFINITION, settings) as restarted, \
            grpc.aio.insecure_channel(restarted.address) as channel:
        shipper.stub = CarrierClient(channel).stub
        exhausted = await eventually(
            lambda: shipper.GetShipment(pb.GetShipmentRequest(name=s.name)), 10,
            until=lambda x: x.state == shipment_pb2.Shipment.STATE_TENDER_EXHAUSTED)
        assert exhausted.current_tender == ""


async def test_a_released_carrier_order_becomes_one_shipment_and_its_cancel_cancels_it(
        stack, channel, carrier_channel) -> None:
    orders = OrderClient(channel, f"client-{id(channel):x}-orders")
    order = await orders.create(sample_order(mode=order_pb2.TRANSPORT_MODE_CARRIER))
    await orders.ReleaseOrder(order_service_pb2.ReleaseOrderRequest(name=order.name))
    own_fleet = await orders.create(sample_order())
    await orders.ReleaseOrder(order_service_pb2.ReleaseOrderRequest(name=own_fleet.name))
    shipper = CarrierClient(carrier_channel, orders.client_id)

    async def listed():
        return (await shipper.ListShipments(pb.ListShipmentsRequest())).shipments

    [shipment] = await eventually(listed, 15)
    assert shipment.order == order.name
    assert shipment.weight_kg == pytest.approx(420.5)
    assert shipment.pickup.address.postal_code == order.pickup.address.postal_code
    filtered = await shipper.ListShipments(pb.ListShipmentsRequest(
        filter=f'order = "{order.name}"'))
    assert [x.name for x in filtered.shipments] == [shipment.name]
    await asyncio.sleep(1.0)
    assert len(await listed()) == 1  # the own-fleet order made none
    await orders.CancelOrder(order_service_pb2.CancelOrderRequest(
        name=order.name, reason="customer changed plans"))
    cancelled = await eventually(
        lambda: shipper.GetShipment(pb.GetShipmentRequest(name=shipment.name)), 15,
        until=lambda s: s.state == shipment_pb2.Shipment.STATE_CANCELLED)
    assert cancelled.cancel_reason == "order cancelled: customer changed plans"
