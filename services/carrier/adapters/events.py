"""Domain changes as contract events (`cartage.carrier.v1` *Event messages) for the outbox, the
order service's `order.released` read into a shipment for carrier-mode orders, and tracking's
`milestone.recorded` read into a pickup or delivery."""

from __future__ import annotations

import datetime as dt

from google.protobuf.message import Message

from cartage.carrier.v1 import events_pb2, shipment_pb2
from cartage.order.v1 import events_pb2 as order_events
from cartage.order.v1 import order_pb2
from cartage.tracking.v1 import events_pb2 as tracking_events
from cartage.tracking.v1 import tracking_pb2
from services.carrier.conversion import shipment_to_proto, tender_to_proto
from services.carrier.domain.model import Shipment, Tender
from services.carrier.use_cases.tendering import DELIVERY, PICKUP
from services.kit.clock import to_datetime
from services.kit.events import catalog
from services.kit.uow import OutgoingEvent

ORDER_RELEASED = "order.released"
ORDER_CANCELLED = "order.cancelled"
MILESTONE_RECORDED = "milestone.recorded"
# Tracking's milestone types that the scorecards count (arrivals, departures, attempts and
# exceptions do not say when the goods were collected or handed over).
_MILESTONE_KINDS = {tracking_pb2.MILESTONE_TYPE_PICKED_UP: PICKUP,
                    tracking_pb2.MILESTONE_TYPE_DELIVERED: DELIVERY}


class CarrierEvents:
    def _tender(self, event: Message, tender: Tender) -> OutgoingEvent:
        event.tender.CopyFrom(tender_to_proto(tender))  # type: ignore[attr-defined]
        when = tender.respond_time or tender.offer_time
        return catalog().outgoing(event, when, client_id=tender.client_id)

    def tender_offered(self, tender: Tender) -> OutgoingEvent:
        return self._tender(events_pb2.TenderOfferedEvent(), tender)

    def tender_accepted(self, tender: Tender, order: str) -> OutgoingEvent:
        return self._tender(events_pb2.TenderAcceptedEvent(order=order), tender)

    def tender_rejected(self, tender: Tender) -> OutgoingEvent:
        return self._tender(events_pb2.TenderRejectedEvent(), tender)

    def tender_expired(self, tender: Tender) -> OutgoingEvent:
        return self._tender(events_pb2.TenderExpiredEvent(), tender)

    def tender_exhausted(self, shipment: Shipment, tried: int) -> OutgoingEvent:
        event = events_pb2.TenderExhaustedEvent(shipment=shipment_to_proto(shipment),
                                                carriers_tried=tried)
        return catalog().outgoing(event, shipment.update_time, client_id=shipment.client_id)

    def shipment_booked(self, shipment: Shipment) -> OutgoingEvent:
        event = events_pb2.ShipmentBookedEvent(shipment=shipment_to_proto(shipment))
        return catalog().outgoing(event, shipment.update_time, client_id=shipment.client_id)

    def shipment_cancelled(self, shipment: Shipment, previous: int) -> OutgoingEvent:
        event = events_pb2.ShipmentCancelledEvent(
            shipment=shipment_to_proto(shipment),
            previous_state=shipment_pb2.Shipment.State.ValueType(previous))
        return catalog().outgoing(event, shipment.update_time, client_id=shipment.client_id)


def carrier_order(event: Message | None) -> tuple[str, shipment_pb2.Shipment] | None:
    """(client id, shipment content) for an `order.released` of a carrier-mode order; None for
    anything else."""
    if not isinstance(event, order_events.OrderReleasedEvent):
        return None
    order = event.order
    if order.mode != order_pb2.TRANSPORT_MODE_CARRIER or not order.client_id:
        return None
    shipment = shipment_pb2.Shipment(
        order=order.name, weight_kg=sum(line.weight_kg for line in order.line_items),
        volume_m3=sum(line.volume_m3 for line in order.line_items))
    shipment.pickup.CopyFrom(order.pickup)
    shipment.delivery.CopyFrom(order.delivery)
    return order.client_id, shipment


def cancelled_order(event: Message | None) -> tuple[str, str, str] | None:
    """(client id, order name, reason) for an `order.cancelled`; None for anything else."""
    if not isinstance(event, order_events.OrderCancelledEvent) or not event.order.client_id:
        return None
    return event.order.client_id, event.order.name, event.order.cancel_reason


def order_milestone(event: Message | None) -> tuple[str, str, int, dt.datetime] | None:
    """(client id, order name, kind, when it happened) for a `milestone.recorded` of a pickup
    or delivery; None for anything else."""
    if not isinstance(event, tracking_events.MilestoneRecordedEvent) or not event.client_id:
        return None
    kind = _MILESTONE_KINDS.get(event.milestone.type)
    if kind is None or not event.order or not event.milestone.HasField("event_time"):
        return None
    return event.client_id, event.order, kind, to_datetime(event.milestone.event_time)
