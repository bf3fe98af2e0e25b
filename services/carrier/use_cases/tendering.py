"""Shipments and the tender waterfall.

TenderShipment ranks the eligible carriers (QuoteRates) and stores them with the shipment,
then offers the load to the first with a deadline. A rejection, or the deadline passing,
offers it to the next; the last one gone, the shipment is TENDER_EXHAUSTED. Deadlines are rows
(`tenders.deadline`), not timers: the deadline job (`expire_due`) claims due tenders with
FOR UPDATE SKIP LOCKED, so they fire after a restart and no two processes expire one tender.

No double booking: AcceptTender locks the tender row, and only an OFFERED tender before its
deadline becomes ACCEPTED; the deadline job locks the same row (skipping it while an accept
holds it), and a tender it expired is no longer OFFERED for the accept that waited. A repeated
accept of an accepted tender returns it unchanged. Locks are taken tender first, then
shipment, everywhere.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from cartage.carrier.v1 import carrier_service_pb2, shipment_pb2
from services.carrier.domain.loads import ship_day
from services.carrier.domain.messages import exclusion_message, quote_message
from services.carrier.domain.model import (
    Carrier,
    ChannelAnswer,
    Shipment,
    ShipmentState,
    Tender,
    TenderState,
    new_id,
)
from services.carrier.domain.quoting import DEFAULT_COST_WEIGHT
from services.carrier.domain.scorecard import LaneStats, on_time
from services.carrier.use_cases.ports import (
    Codecs,
    Events,
    Page,
    Repository,
    TenderChannels,
    TenderQuery,
)
from services.carrier.use_cases.quoting import QuoteUseCases
from services.kit.clock import to_datetime, utc_now
from services.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.kit.idempotency import IdempotencyKey, idempotent
from services.kit.uow import Transaction, UnitOfWork

log = logging.getLogger(__name__)

PICKUP, DELIVERY = 1, 2


def shipment_not_found(shipment_id: str) -> NotFound:
    return NotFound(f"shipment shipments/{shipment_id} not found", reason="SHIPMENT_NOT_FOUND")


def tender_not_found(tender_id: str) -> NotFound:
    # A tender offered to another carrier is indistinguishable from a missing one.
    return NotFound(f"tender tenders/{tender_id} not found", reason="TENDER_NOT_FOUND")


class AnswerOutcome(enum.Enum):
    """What became of an answer a channel brought (the EDI inbox files it by this)."""

    APPLIED = "applied"  # accepted or rejected (or a repeat of what was already done)
    REFUSED = "refused"  # the tender is no longer open: expired, answered, withdrawn
    UNKNOWN = "unknown"  # no such tender, or the answer is not from the tendered carrier


@dataclass(slots=True)
class _Offers:
    """Offers made in a transaction, handed to the channels after it commits."""

    made: list[tuple[Carrier, Tender]]


class TenderUseCases:
    def __init__(self, uow: UnitOfWork, repository: Repository, events: Events,
                 codecs: Codecs, quotes: QuoteUseCases, channels: TenderChannels, *,
                 default_timeout_s: float, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._uow = uow
        self._repo = repository
        self._events = events
        self._codecs = codecs
        self._quotes = quotes
        self._channels = channels
        self._timeout = default_timeout_s
        self._clock = clock

    # shipments -----------------------------------------------------------------------------

    async def create_shipment(self, client_id: str, content: shipment_pb2.Shipment,
                              key: IdempotencyKey | None, request_id: str = "") -> Shipment:
        async def work(tx: Transaction) -> Shipment:
            now = self._clock()
            shipment = Shipment(new_id(), client_id, content, ShipmentState.OPEN, now, now)
            self._repo.insert_shipment(tx, shipment)
            return shipment

        return await idempotent(self._uow, key, self._codecs.shipment, work,
                                request_id=request_id)

    async def shipment_from_order(self, tx: Transaction, client_id: str,
                                  content: shipment_pb2.Shipment) -> bool:
        """A released carrier-mode order becomes an OPEN shipment (once per order, also when
        its event comes twice: the consumer's inbox and the unique order column both hold)."""
        now = self._clock()
        shipment = Shipment(new_id(), client_id, content, ShipmentState.OPEN, now, now)
        return await self._repo.insert_shipment_once(tx, shipment)

    async def get_shipment(self, client_id: str, shipment_id: str) -> Shipment:
        async with self._uow.transaction() as tx:
            return await self._require_shipment(tx, client_id, shipment_id)

    async def list_shipments(self, client_id: str, filters: tuple[tuple[str, object], ...],
                             page: Page) -> list[Shipment]:
        async with self._uow.transaction() as tx:
            return await self._repo.list_shipments(tx, client_id, filters, page)

    async def cancel_shipment(self, client_id: str, shipment_id: str, reason: str,
                              key: IdempotencyKey | None, request_id: str = "") -> Shipment:
        async def work(tx: Transaction) -> Shipment:
            return await self._cancel(tx, client_id, shipment_id, reason)

        return await idempotent(self._uow, key, self._codecs.shipment, work,
                                request_id=request_id)

    async def _cancel(self, tx: Transaction, client_id: str, shipment_id: str, reason: str
                      ) -> Shipment:
        peek = await self._require_shipment(tx, client_id, shipment_id)
        tender = None
        if peek.current_tender_id:  # tender first, then shipment (the lock order)
            tender = await self._repo.get_tender(tx, peek.current_tender_id, for_update=True)
        shipment = await self._require_shipment(tx, client_id, shipment_id, for_update=True)
        now = self._clock()
        cancelled = shipment.cancel(reason, now)
        if tender is not None and tender.state == TenderState.OFFERED:
            self._repo.save_tender(tx, tender.withdraw(now))
        self._repo.save_shipment(tx, cancelled)
        tx.publish(self._events.shipment_cancelled(cancelled, int(shipment.state)))
        return cancelled

    async def order_cancelled(self, tx: Transaction, client_id: str, order: str,
                              reason: str) -> bool:
        """`order.cancelled`: the order's shipment is cancelled too (an open offer withdrawn),
        unless it is already picked up, delivered or cancelled."""
        shipment = await self._repo.shipment_of_order(tx, client_id, order)
        if shipment is None or shipment.state in (
                ShipmentState.IN_TRANSIT, ShipmentState.DELIVERED, ShipmentState.CANCELLED):
            return False
        await self._cancel(tx, client_id, shipment.id, f"order cancelled: {reason}"[:500])
        return True

    # quoting and the waterfall -------------------------------------------------------------

    async def quote_stored(self, client_id: str, shipment_id: str, **options: object
                           ) -> tuple[Shipment, object]:
        async with self._uow.transaction() as tx:
            shipment = await self._require_shipment(tx, client_id, shipment_id)
            result = await self._quotes.quote(client_id, shipment.content, tx=tx,
                                              **options)  # type: ignore[arg-type]
        return shipment, result

    async def tender(self, client_id: str, shipment_id: str, carriers: Sequence[str],
                     timeout_s: float | None, cost_weight: float | None,
                     key: IdempotencyKey | None, request_id: str = "") -> Shipment:
        offers = _Offers([])

        async def work(tx: Transaction) -> Shipment:
            offers.made.clear()
            shipment = await self._require_shipment(tx, client_id, shipment_id,
                                                    for_update=True)
            weight = DEFAULT_COST_WEIGHT if cost_weight is None else cost_weight
            result = await self._quotes.quote(client_id, shipment.content, cost_weight=weight,
                                              tx=tx)
            ranked = [quote_message(q) for q in result.quotes]
            if carriers:
                ranked = _in_given_order(ranked, list(carriers),
                                         {f"carriers/{e.carrier.id}": e
                                          for e in result.exclusions})
            if not ranked:
                raise FailedPrecondition(
                    f"no carrier can take shipment {shipment.name}: "
                    + "; ".join(f"{e.carrier.display_name}: {e.reason}"
                                for e in result.exclusions[:10]),
                    reason="NO_ELIGIBLE_CARRIER")
            waterfall = carrier_service_pb2.QuoteRatesResponse(
                quotes=ranked, currency_code=result.currency,
                exclusions=[exclusion_message(e) for e in result.exclusions])
            now = self._clock()
            started = shipment.start_waterfall(waterfall, timeout_s or self._timeout, now)
            advanced = await self._offer_next(tx, started, now, offers)
            self._repo.save_shipment(tx, advanced)
            return advanced

        shipment = await idempotent(self._uow, key, self._codecs.shipment, work,
                                    request_id=request_id)
        await self._send(offers)
        return shipment

    async def _offer_next(self, tx: Transaction, shipment: Shipment, now: dt.datetime,
                          offers: _Offers) -> Shipment:
        """Offer the load to the waterfall's next carrier (skipping any that is gone or
        suspended since the ranking), or mark the shipment exhausted."""
        while True:
            candidate = shipment.next_candidate()
            if candidate is None:
                exhausted = shipment.exhausted(now)
                tx.publish(self._events.tender_exhausted(exhausted, shipment.position))
                return exhausted
            carrier_id = candidate.carrier.removeprefix("carriers/")
            carrier = await self._repo.get_carrier(tx, shipment.client_id, carrier_id)
            if carrier is None or not carrier.active:
                shipment = replace(shipment, position=shipment.position + 1)
                continue
            tender = Tender(
                id=new_id(), client_id=shipment.client_id, shipment_id=shipment.id,
                carrier_id=carrier_id, carrier_client_id=carrier.content.oauth_client_id,
                state=TenderState.OFFERED, rank=shipment.position + 1, quote=candidate,
                load=_load_view(shipment), pickup_day=ship_day(shipment.content, now.date()),
                offer_time=now, deadline=now + dt.timedelta(seconds=shipment.timeout_s))
            self._repo.insert_tender(tx, tender)
            tx.publish(self._events.tender_offered(tender))
            offers.made.append((carrier, tender))
            return shipment.offered(tender.id, now)

    async def _send(self, offers: _Offers) -> None:
        """Hand the committed offers to their channels; an answer given at once (an HTTP
        carrier's 200) is applied like AcceptTender/RejectTender."""
        for carrier, tender in offers.made:
            try:
                answer = await self._channels.offer(carrier, tender)
            except Exception:  # the offer stays open until its deadline; the carrier can poll
                log.exception("tender channel failed", extra={"tender": tender.name})
                continue
            if answer is not None:
                await self.apply_answer(tender, answer)

    async def apply_answer(self, tender: Tender, answer: ChannelAnswer) -> AnswerOutcome:
        """A carrier's answer from its channel, through the same use cases (and guards) as
        the RPCs, as the shipper (who may answer for its carrier): a repeated accept is
        idempotent; an answer to a tender that is no longer open (past its deadline, already
        answered, withdrawn) is refused and logged."""
        try:
            if answer.accepted:
                await self.accept(tender.client_id, tender.id, None)
            else:
                await self.reject(tender.client_id, tender.id, answer.reject_reason(), None)
        except FailedPrecondition as error:
            log.warning("carrier answer refused", extra={
                "tender": tender.name, "reason": error.reason, "accepted": answer.accepted})
            return AnswerOutcome.REFUSED
        return AnswerOutcome.APPLIED

    async def answer_from_carrier(self, tender_id: str, scac: str, answer: ChannelAnswer
                                  ) -> AnswerOutcome:
        """An answer that names its tender and carrier (an EDI 990): applied only when the
        SCAC is the tendered carrier's."""
        async with self._uow.transaction() as tx:
            tender = await self._repo.get_tender(tx, tender_id)
            carrier = None if tender is None else await self._repo.get_carrier(
                tx, tender.client_id, tender.carrier_id)
        if tender is None or carrier is None or carrier.content.scac != scac:
            log.warning("carrier answer for an unknown tender or from another carrier",
                        extra={"tender": f"tenders/{tender_id}", "scac": scac})
            return AnswerOutcome.UNKNOWN
        return await self.apply_answer(tender, answer)

    # the carrier's answers -----------------------------------------------------------------

    async def get_tender(self, viewer: str, tender_id: str) -> Tender:
        async with self._uow.transaction() as tx:
            tender = await self._repo.get_tender(tx, tender_id)
        if tender is None or not tender.visible_to(viewer):
            raise tender_not_found(tender_id)
        return tender

    async def list_tenders(self, query: TenderQuery) -> list[Tender]:
        async with self._uow.transaction() as tx:
            return await self._repo.list_tenders(tx, query)

    async def accept(self, viewer: str, tender_id: str, key: IdempotencyKey | None,
                     request_id: str = "") -> Tender:
        async def work(tx: Transaction) -> Tender:
            tender = await self._answerable(tx, viewer, tender_id)
            if tender.state == TenderState.ACCEPTED:
                return tender  # a retried accept: booked once, answered the same
            now = self._clock()
            accepted = tender.accept(now)
            shipment = await self._require_shipment(tx, tender.client_id, tender.shipment_id,
                                                    for_update=True)
            booked = shipment.booked(tender.carrier_id, tender.id, tender.quote.price, now)
            self._repo.save_tender(tx, accepted)
            self._repo.save_shipment(tx, booked)
            tx.publish(self._events.tender_accepted(accepted, shipment.content.order))
            tx.publish(self._events.shipment_booked(booked))
            return accepted

        tender = await idempotent(self._uow, key, self._codecs.tender, work,
                                  request_id=request_id)
        self._quotes.forget_scores(tender.client_id)
        return tender

    async def reject(self, viewer: str, tender_id: str, reason: str,
                     key: IdempotencyKey | None, request_id: str = "") -> Tender:
        offers = _Offers([])

        async def work(tx: Transaction) -> Tender:
            offers.made.clear()
            tender = await self._answerable(tx, viewer, tender_id)
            now = self._clock()
            rejected = tender.reject(reason, now)
            self._repo.save_tender(tx, rejected)
            tx.publish(self._events.tender_rejected(rejected))
            await self._move_on(tx, tender, now, offers)
            return rejected

        tender = await idempotent(self._uow, key, self._codecs.tender, work,
                                  request_id=request_id)
        await self._send(offers)
        self._quotes.forget_scores(tender.client_id)
        return tender

    async def _answerable(self, tx: Transaction, viewer: str, tender_id: str) -> Tender:
        tender = await self._repo.get_tender(tx, tender_id, for_update=True)
        if tender is None or not tender.visible_to(viewer):
            raise tender_not_found(tender_id)
        return tender

    async def _move_on(self, tx: Transaction, tender: Tender, now: dt.datetime,
                       offers: _Offers) -> None:
        shipment = await self._require_shipment(tx, tender.client_id, tender.shipment_id,
                                                for_update=True)
        if shipment.state == ShipmentState.TENDERED and shipment.current_tender_id == tender.id:
            self._repo.save_shipment(tx, await self._offer_next(tx, shipment, now, offers))

    # the deadline job ----------------------------------------------------------------------

    async def expire_due(self, limit: int = 100) -> int:
        """Expire the tenders whose deadline passed (at most `limit`) and move their waterfalls
        on, in one transaction; returns how many expired."""
        offers = _Offers([])
        async with self._uow.transaction() as tx:
            now = self._clock()
            due = await self._repo.due_tenders(tx, now, limit)
            for tender in due:
                expired = tender.expire(now)
                self._repo.save_tender(tx, expired)
                tx.publish(self._events.tender_expired(expired))
                await self._move_on(tx, tender, now, offers)
        await self._send(offers)
        for client_id in {t.client_id for t in due}:
            self._quotes.forget_scores(client_id)
        return len(due)

    # tracking's milestones -----------------------------------------------------------------

    async def record_milestone(self, tx: Transaction, client_id: str, shipment_id: str,
                               kind: int, actual: dt.datetime) -> bool:
        """A pickup (1) or delivery (2) of a booked shipment, for the on-time part of its
        carrier's lane scorecard: on time when inside one of the stop's time windows. The
        first report of each kind counts, repeats are ignored. Moves the shipment to
        IN_TRANSIT / DELIVERED."""
        shipment = await self._repo.get_shipment(tx, client_id, shipment_id, for_update=True)
        if shipment is None or not shipment.carrier_id or shipment.current_tender_id == "":
            return False
        tender = await self._repo.get_tender(tx, shipment.current_tender_id)
        stop = shipment.content.pickup if kind == PICKUP else shipment.content.delivery
        windows = [(to_datetime(w.start_time), to_datetime(w.end_time))
                   for w in stop.time_windows]
        now = self._clock()
        fresh = await self._repo.insert_milestone(
            tx, shipment=shipment, kind=kind, lane_id=tender.quote.lane_id if tender else "",
            actual=actual, on_time=on_time(actual, windows), now=now)
        target = ShipmentState.IN_TRANSIT if kind == PICKUP else ShipmentState.DELIVERED
        if fresh and shipment.state in (ShipmentState.BOOKED, ShipmentState.IN_TRANSIT) \
                and shipment.state != target:
            self._repo.save_shipment(tx, replace(shipment, state=target, update_time=now,
                                                 version=shipment.version + 1))
        self._quotes.forget_scores(client_id)
        return fresh

    async def order_milestone(self, tx: Transaction, client_id: str, order: str, kind: int,
                              actual: dt.datetime) -> bool:
        """Tracking's `milestone.recorded` for an order: recorded for the order's shipment
        (one made from its `order.released`); an order without one is not ours."""
        shipment = await self._repo.shipment_of_order(tx, client_id, order)
        if shipment is None:
            return False
        return await self.record_milestone(tx, client_id, shipment.id, kind, actual)

    async def scorecards(self, client_id: str, carrier_id: str, days: float
                         ) -> tuple[list[LaneStats], dt.datetime, dt.datetime]:
        """Per carrier and lane over the last `days`: the stats and the window."""
        now = self._clock()
        since = now - dt.timedelta(days=days)
        async with self._uow.transaction() as tx:
            if carrier_id and await self._repo.get_carrier(tx, client_id, carrier_id) is None:
                raise NotFound(f"carrier carriers/{carrier_id} not found",
                               reason="CARRIER_NOT_FOUND")
            stats = await self._repo.lane_stats(tx, client_id, since, carrier_id)
        return stats, since, now

    async def _require_shipment(self, tx: Transaction, client_id: str, shipment_id: str, *,
                                for_update: bool = False) -> Shipment:
        shipment = await self._repo.get_shipment(tx, client_id, shipment_id,
                                                 for_update=for_update)
        if shipment is None:
            raise shipment_not_found(shipment_id)
        return shipment


def _load_view(shipment: Shipment) -> shipment_pb2.Shipment:
    """What a carrier sees of the load: the stops and the goods, not the shipper's records."""
    load = shipment_pb2.Shipment()
    load.CopyFrom(shipment.content)
    load.ClearField("order")
    load.name = shipment.name
    return load


def _in_given_order(ranked: list[carrier_service_pb2.CarrierQuote], carriers: list[str],
                    excluded: dict[str, object]) -> list[carrier_service_pb2.CarrierQuote]:
    by_name = {q.carrier: q for q in ranked}
    violations = []
    for i, name in enumerate(carriers):
        if name not in by_name:
            why = excluded.get(name)
            text = (f"is excluded: {why.reason} ({why.detail})"  # type: ignore[attr-defined]
                    if why is not None else "is not one of your carriers")
            violations.append(FieldViolation(f"carriers[{i}]", text, "NOT_ELIGIBLE"))
    if violations:
        raise InvalidArgument("some carriers cannot be tendered", violations=violations)
    return [by_name[n] for n in carriers]
