"""What the order service does, independent of gRPC: each method is one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError

from cartage.order.v1 import order_pb2
from services.kit.clock import utc_now
from services.kit.db import constraint_name
from services.kit.errors import AlreadyExists, CartageError, NotFound
from services.kit.idempotency import Codec, IdempotencyKey, idempotent
from services.kit.uow import OutgoingEvent, Transaction, UnitOfWork
from services.order.domain.model import (
    ActivePlan,
    Order,
    ShipmentMilestone,
    State,
    shipment_target,
)

log = logging.getLogger(__name__)

UNIQUE_REFERENCE = "uq_orders_client_reference"


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A page of one client's orders. `filters` are (field, operator, typed value) triples over
    the filterable fields, already validated by the API layer."""

    client_id: str
    filters: tuple[tuple[str, str, Any], ...]
    descending: bool
    after: tuple[datetime, str] | None
    limit: int


class Orders(Protocol):
    """Where orders are kept (adapters/repository.py)."""

    def insert(self, tx: Transaction, *new_orders: Order) -> None: ...
    def save(self, tx: Transaction, order: Order) -> None: ...
    async def get(self, tx: Transaction, client_id: str, order_id: str, *,
                  for_update: bool = False) -> Order | None: ...
    async def read(self, uow: UnitOfWork, client_id: str, order_id: str) -> Order | None: ...
    async def existing_references(self, tx: Transaction, client_id: str,
                                  references: list[str]) -> set[str]: ...
    async def list(self, tx: Transaction, query: ListQuery) -> list[Order]: ...


class Events(Protocol):
    """The events an order change publishes (adapters/events.py)."""

    def created(self, order: Order) -> OutgoingEvent: ...
    def updated(self, order: Order, paths: list[str]) -> OutgoingEvent: ...
    def released(self, order: Order) -> OutgoingEvent: ...
    def cancelled(self, order: Order, previous: State) -> OutgoingEvent: ...
    def in_transit(self, order: Order, milestone: ShipmentMilestone) -> OutgoingEvent: ...
    def completed(self, order: Order, milestone: ShipmentMilestone) -> OutgoingEvent: ...


@dataclass(frozen=True, slots=True)
class Codecs:
    """How results are stored for idempotent replays (conversion.py)."""

    order: Codec[Order]
    orders: Codec[list[Order]]


def _duplicate_reference(reference: str) -> AlreadyExists:
    return AlreadyExists(
        f"an order with external_reference {reference!r} already exists",
        reason="DUPLICATE_EXTERNAL_REFERENCE",
        metadata={"external_reference": reference},
    )


def _not_found(order_id: str) -> NotFound:
    # Another client's order is indistinguishable from a missing one.
    return NotFound(f"order orders/{order_id} not found", reason="ORDER_NOT_FOUND")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One item of a batch, already validated by the API layer."""

    index: int
    content: order_pb2.Order


class OrderUseCases:
    def __init__(
        self,
        uow: UnitOfWork,
        repository: Orders,
        events: Events,
        codecs: Codecs,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow = uow
        self._codecs = codecs
        self._orders = repository
        self._events = events
        self._clock = clock

    async def create(
        self, client_id: str, content: order_pb2.Order, key: IdempotencyKey | None,
        request_id: str = "",
    ) -> Order:
        async def work(tx: Transaction) -> Order:
            order = Order.create(client_id, content, self._clock())
            self._orders.insert(tx, order)
            tx.publish(self._events.created(order))
            return order

        try:
            return await idempotent(self._uow, key, self._codecs.order, work, request_id=request_id,
                                    reads=False)
        except IntegrityError as error:
            if constraint_name(error) == UNIQUE_REFERENCE:
                raise _duplicate_reference(content.external_reference) from None
            raise

    async def create_batch(
        self, client_id: str, items: list[BatchItem], key: IdempotencyKey | None,
        request_id: str = "",
    ) -> dict[int, Order | CartageError]:
        """Creates every item it can; an item whose reference is taken gets ALREADY_EXISTS."""

        async def work(tx: Transaction) -> list[Order]:
            taken = await self._orders.existing_references(
                tx, client_id, [item.content.external_reference for item in items]
            )
            now = self._clock()
            created: list[Order] = []
            for item in items:
                reference = item.content.external_reference
                if reference in taken:
                    continue
                taken.add(reference)
                created.append(Order.create(client_id, item.content, now))
            if created:
                self._orders.insert(tx, *created)
                for order in created:
                    tx.publish(self._events.created(order))
            return created

        # A concurrent writer may take a reference between our check and our insert; the unique
        # constraint then fails the whole statement, and a second pass sees the reference.
        for attempt in (1, 2):
            try:
                created = await idempotent(self._uow, key, self._codecs.orders, work,
                                           request_id=request_id)
                break
            except IntegrityError as error:
                if attempt == 2 or constraint_name(error) != UNIQUE_REFERENCE:
                    raise
        by_reference = {order.external_reference: order for order in created}
        results: dict[int, Order | CartageError] = {}
        for item in items:
            reference = item.content.external_reference
            order = by_reference.pop(reference, None)
            results[item.index] = order if order is not None else _duplicate_reference(reference)
        return results

    async def get(self, client_id: str, order_id: str) -> Order:
        order = await self._orders.read(self._uow, client_id, order_id)
        if order is None:
            raise _not_found(order_id)
        return order

    async def list(self, query: ListQuery) -> list[Order]:
        async with self._uow.transaction() as tx:
            return await self._orders.list(tx, query)

    async def update(
        self, client_id: str, order_id: str, etag: str,
        apply: Callable[[order_pb2.Order], list[str]], request_id: str = "",
    ) -> Order:
        """`apply` changes a copy of the content in place and returns the changed paths."""
        async with self._uow.transaction(request_id) as tx:
            order = await self._require(tx, client_id, order_id, for_update=True)
            order.check_etag(etag)
            content = order_pb2.Order()
            content.CopyFrom(order.content)
            paths = apply(content)
            updated = order.update_content(content, self._clock())
            self._orders.save(tx, updated)
            tx.publish(self._events.updated(updated, paths))
            return updated

    async def cancel(
        self, client_id: str, order_id: str, reason: str, etag: str, key: IdempotencyKey | None,
        request_id: str = "",
    ) -> Order:
        async def work(tx: Transaction) -> Order:
            order = await self._require(tx, client_id, order_id, for_update=True)
            order.check_etag(etag)
            cancelled = order.cancel(reason, self._clock())
            self._orders.save(tx, cancelled)
            tx.publish(self._events.cancelled(cancelled, order.state))
            return cancelled

        return await idempotent(self._uow, key, self._codecs.order, work, request_id=request_id)

    async def release(
        self, client_id: str, order_id: str, etag: str, key: IdempotencyKey | None,
        request_id: str = "",
    ) -> Order:
        async def work(tx: Transaction) -> Order:
            order = await self._require(tx, client_id, order_id, for_update=True)
            order.check_etag(etag)
            released = order.release(self._clock())
            self._orders.save(tx, released)
            tx.publish(self._events.released(released))
            return released

        return await idempotent(self._uow, key, self._codecs.order, work, request_id=request_id)

    async def follow_plan(self, tx: Transaction, plan: ActivePlan) -> None:
        """A new active plan (route.planned / route.updated from the routing service, in the
        consumer's transaction): its orders become PLANNED, the ones it leaves out RELEASED
        again. No order event is published: the change is routing's own news, and an
        order.updated here would make routing replan its own plan."""
        now = self._clock()
        for order_id, planned in sorted(
                [(i, True) for i in plan.planned] + [(i, False) for i in plan.unassigned]):
            order = await self._orders.get(tx, plan.client_id, order_id, for_update=True)
            moved = order.follow_plan(planned, now) if order is not None else None
            if moved is not None:
                self._orders.save(tx, moved)

    async def follow_shipment(self, tx: Transaction, milestone: ShipmentMilestone
                              ) -> Order | None:
        """A milestone the tracking service recorded (in the consumer's transaction): the
        order moves to IN_TRANSIT or DELIVERED and publishes `order.in_transit` or
        `order.completed`. Returns the moved order; None when the milestone changes nothing
        (see `Order.follow_shipment`), which is not an error: the inbox has recorded the event,
        so an unknown or cancelled order's milestone is not retried or dead-lettered."""
        target = shipment_target(milestone.stop_id, milestone.type)
        if target is None:
            return None
        order = await self._orders.get(tx, milestone.client_id, milestone.order_id,
                                       for_update=True)
        moved = order.follow_shipment(target, self._clock()) if order is not None else None
        if moved is None:
            log.info("milestone changes no order", extra={
                "milestone": milestone.milestone, "target": target.name,
                "state": order.state.name if order is not None else "UNKNOWN_ORDER"})
            return None
        self._orders.save(tx, moved)
        tx.publish(self._events.in_transit(moved, milestone) if target is State.IN_TRANSIT
                   else self._events.completed(moved, milestone))
        return moved

    async def _require(
        self, tx: Transaction, client_id: str, order_id: str, *, for_update: bool = False
    ) -> Order:
        order = await self._orders.get(tx, client_id, order_id, for_update=for_update)
        if order is None:
            raise _not_found(order_id)
        return order
