"""Carriers and their rate cards: each method is one transaction. Every change bumps the
client's catalog version, which tells the quote path's cache to reload."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cartage.carrier.v1 import carrier_pb2
from services.carrier.domain.model import Carrier, RateCardRecord, new_id
from services.carrier.use_cases.ports import Codecs, Page, Repository
from services.kit.clock import utc_now
from services.kit.errors import NotFound
from services.kit.idempotency import IdempotencyKey, idempotent
from services.kit.uow import Transaction, UnitOfWork


def carrier_not_found(carrier_id: str) -> NotFound:
    # Another client's carrier is indistinguishable from a missing one.
    return NotFound(f"carrier carriers/{carrier_id} not found", reason="CARRIER_NOT_FOUND")


def card_not_found(carrier_id: str, card_id: str) -> NotFound:
    return NotFound(f"rate card carriers/{carrier_id}/rateCards/{card_id} not found",
                    reason="RATE_CARD_NOT_FOUND")


class CatalogUseCases:
    def __init__(self, uow: UnitOfWork, repository: Repository, codecs: Codecs,
                 clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._uow = uow
        self._repo = repository
        self._codecs = codecs
        self._clock = clock

    async def create_carrier(self, client_id: str, content: carrier_pb2.Carrier,
                             key: IdempotencyKey | None, request_id: str = "") -> Carrier:
        async def work(tx: Transaction) -> Carrier:
            now = self._clock()
            carrier = Carrier(new_id(), client_id, content, now, now)
            self._repo.insert_carrier(tx, carrier)
            return carrier

        return await idempotent(self._uow, key, self._codecs.carrier, work,
                                request_id=request_id)

    async def get_carrier(self, client_id: str, carrier_id: str) -> Carrier:
        async with self._uow.transaction() as tx:
            return await self._require_carrier(tx, client_id, carrier_id)

    async def list_carriers(self, client_id: str, page: Page) -> list[Carrier]:
        async with self._uow.transaction() as tx:
            return await self._repo.list_carriers(tx, client_id, page)

    async def update_carrier(self, client_id: str, carrier_id: str, etag: str,
                             apply: Callable[[carrier_pb2.Carrier], None],
                             request_id: str = "") -> Carrier:
        """`apply` changes a copy of the content in place (and validates it)."""
        async with self._uow.transaction(request_id) as tx:
            carrier = await self._require_carrier(tx, client_id, carrier_id, for_update=True)
            carrier.check_etag(etag)
            content = carrier_pb2.Carrier()
            content.CopyFrom(carrier.content)
            apply(content)
            updated = carrier.changed(content, self._clock())
            self._repo.save_carrier(tx, updated)
            return updated

    async def create_card(self, client_id: str, carrier_id: str,
                          content: carrier_pb2.RateCard, key: IdempotencyKey | None,
                          request_id: str = "") -> RateCardRecord:
        async def work(tx: Transaction) -> RateCardRecord:
            await self._require_carrier(tx, client_id, carrier_id)
            card = RateCardRecord(new_id(), carrier_id, client_id, content, self._clock())
            self._repo.insert_card(tx, card)
            return card

        return await idempotent(self._uow, key, self._codecs.card, work, request_id=request_id)

    async def get_card(self, client_id: str, carrier_id: str, card_id: str) -> RateCardRecord:
        async with self._uow.transaction() as tx:
            card = await self._repo.get_card(tx, client_id, carrier_id, card_id)
        if card is None:
            raise card_not_found(carrier_id, card_id)
        return card

    async def list_cards(self, client_id: str, carrier_id: str, page: Page
                         ) -> list[RateCardRecord]:
        async with self._uow.transaction() as tx:
            await self._require_carrier(tx, client_id, carrier_id)
            return await self._repo.list_cards(tx, client_id, carrier_id, page)

    async def delete_card(self, client_id: str, carrier_id: str, card_id: str) -> None:
        async with self._uow.transaction() as tx:
            if not await self._repo.delete_card(tx, client_id, carrier_id, card_id):
                raise card_not_found(carrier_id, card_id)

    async def _require_carrier(self, tx: Transaction, client_id: str, carrier_id: str, *,
                               for_update: bool = False) -> Carrier:
        carrier = await self._repo.get_carrier(tx, client_id, carrier_id, for_update=for_update)
        if carrier is None:
            raise carrier_not_found(carrier_id)
        return carrier
