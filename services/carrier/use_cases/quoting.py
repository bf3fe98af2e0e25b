"""QuoteRates: the client's carriers and cards, compiled once per catalog version and kept in
memory, priced against a load. A quote costs one indexed read of the catalog version, one of
the day's booked loads per lane, and pure computation (lane scores are refreshed every
`score_ttl_s`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from cartage.carrier.v1 import shipment_pb2
from services.carrier.domain.loads import load_of, ship_day
from services.carrier.domain.model import Carrier
from services.carrier.domain.quoting import CarrierFacts, Exclusion, Quote, shop
from services.carrier.domain.rates import CompiledCard, compile_card
from services.carrier.domain.scorecard import lane_score
from services.carrier.use_cases.ports import Repository
from services.kit.clock import utc_now
from services.kit.uow import Transaction, UnitOfWork

MAX_CLIENTS_CACHED = 1000


@dataclass(frozen=True, slots=True)
class Catalog:
    version: int
    carriers: tuple[tuple[CarrierFacts, tuple[CompiledCard, ...]], ...]
    by_id: dict[str, Carrier]


@dataclass(frozen=True, slots=True)
class QuoteResult:
    quotes: list[Quote]
    exclusions: list[Exclusion]
    currency: str
    day: dt.date


class QuoteUseCases:
    def __init__(self, uow: UnitOfWork, repository: Repository, *, base_currency: str,
                 fuel_price_index: Decimal, score_ttl_s: float, score_window_days: int,
                 clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._uow = uow
        self._repo = repository
        self._base_currency = base_currency
        self._fuel_index = fuel_price_index
        self._score_ttl = score_ttl_s
        self._score_window = dt.timedelta(days=score_window_days)
        self._clock = clock
        self._catalogs: OrderedDict[str, Catalog] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        self._scores: dict[str, tuple[float, dict[tuple[str, str], float]]] = {}

    async def catalog(self, tx: Transaction | None, client_id: str,
                      version: int | None = None) -> Catalog:
        if version is None:
            version = await self._repo.catalog_version(self._uow, client_id)
        cached = self._catalogs.get(client_id)
        if cached is not None and cached.version == version:
            self._catalogs.move_to_end(client_id)
            return cached
        # One reload per client at a time: concurrent quotes after a change wait for it
        # instead of each compiling every card again.
        lock = self._loading.setdefault(client_id, asyncio.Lock())
        async with lock:
            cached = self._catalogs.get(client_id)
            if cached is not None and cached.version >= version:
                return cached
            return await self._load(tx, client_id, version)

    async def _load(self, tx: Transaction | None, client_id: str, version: int) -> Catalog:
        if tx is None:
            async with self._uow.transaction() as own:
                carriers, cards = await self._repo.catalog(own, client_id)
        else:
            carriers, cards = await self._repo.catalog(tx, client_id)
        by_carrier: dict[str, list[CompiledCard]] = {}
        for card in cards:
            by_carrier.setdefault(card.carrier_id, []).append(
                compile_card(card.name, card.carrier_id, card.content))
        built = Catalog(version, tuple((c.facts(), tuple(by_carrier.get(c.id, ())))
                                       for c in carriers), {c.id: c for c in carriers})
        self._catalogs[client_id] = built
        if len(self._catalogs) > MAX_CLIENTS_CACHED:
            gone, _ = self._catalogs.popitem(last=False)
            self._loading.pop(gone, None)
        return built

    async def lane_scores(self, tx: Transaction | None, client_id: str
                          ) -> dict[tuple[str, str], float]:
        cached = self._scores.get(client_id)
        if cached is not None and time.monotonic() - cached[0] < self._score_ttl:
            return cached[1]
        since = self._clock() - self._score_window
        if tx is None:
            async with self._uow.transaction() as own:
                stats = await self._repo.lane_stats(own, client_id, since)
        else:
            stats = await self._repo.lane_stats(tx, client_id, since)
        scores = {(s.carrier_id, s.lane_id): lane_score(s) for s in stats}
        self._scores[client_id] = (time.monotonic(), scores)
        return scores

    def forget_scores(self, client_id: str) -> None:
        self._scores.pop(client_id, None)

    async def quote(self, client_id: str, shipment: shipment_pb2.Shipment, *,
                    cost_weight: float, currency: str = "", fuel_index: Decimal | None = None,
                    day: dt.date | None = None, tx: Transaction | None = None) -> QuoteResult:
        day = day or ship_day(shipment, self._clock().date())
        # One autocommit read in the common case: the catalog version and the day's bookings;
        # cards and lane scores come from memory (reloaded when the version moves / the TTL
        # passes, in `tx` when the caller has one).
        version, booked = await self._repo.quote_snapshot(self._uow, client_id, day)
        catalog = await self.catalog(tx, client_id, version)
        scores = await self.lane_scores(tx, client_id)
        quotes, exclusions = shop(
            catalog.carriers, load_of(shipment), day, currency or self._base_currency,
            self._fuel_index if fuel_index is None else fuel_index, booked, scores,
            cost_weight)
        return QuoteResult(quotes, exclusions, currency or self._base_currency, day)
