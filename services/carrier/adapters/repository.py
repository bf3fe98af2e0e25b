"""SQL for the carrier service, in SQLAlchemy Core. Implements the use cases' `Repository`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from cartage.carrier.v1 import carrier_pb2, carrier_service_pb2, shipment_pb2
from services.carrier.adapters.tables import (
    carriers,
    catalog_versions,
    edi_control_numbers,
    milestones,
    rate_cards,
    shipments,
    tenders,
)
from services.carrier.domain.model import (
    Carrier,
    RateCardRecord,
    Shipment,
    ShipmentState,
    Tender,
    TenderState,
)
from services.carrier.domain.scorecard import LaneStats
from services.carrier.use_cases.ports import Page, TenderQuery
from services.kit.uow import Transaction, UnitOfWork


def _carrier(row: Mapping[str, Any]) -> Carrier:
    return Carrier(row["id"], row["client_id"], carrier_pb2.Carrier.FromString(row["body"]),
                   row["create_time"], row["update_time"], row["version"])


def _card(row: Mapping[str, Any]) -> RateCardRecord:
    return RateCardRecord(row["id"], row["carrier_id"], row["client_id"],
                          carrier_pb2.RateCard.FromString(row["body"]), row["create_time"])


def _shipment_values(s: Shipment) -> dict[str, Any]:
    return {
        "id": s.id, "client_id": s.client_id, "order_name": s.content.order or None,
        "state": int(s.state), "create_time": s.create_time, "update_time": s.update_time,
        "version": s.version, "carrier_id": s.carrier_id,
        "current_tender_id": s.current_tender_id, "position": s.position,
        "timeout_s": s.timeout_s, "cancel_reason": s.cancel_reason,
        "waterfall": s.waterfall.SerializeToString() if s.waterfall is not None else None,
        "agreed_price": (s.agreed_price.SerializeToString()
                         if s.agreed_price is not None else None),
        "body": s.content.SerializeToString(),
    }


def _shipment(row: Mapping[str, Any]) -> Shipment:
    return Shipment(
        id=row["id"], client_id=row["client_id"],
        content=shipment_pb2.Shipment.FromString(row["body"]),
        state=ShipmentState(row["state"]), create_time=row["create_time"],
        update_time=row["update_time"], version=row["version"], carrier_id=row["carrier_id"],
        current_tender_id=row["current_tender_id"],
        agreed_price=(shipment_pb2.PriceBreakdown.FromString(row["agreed_price"])
                      if row["agreed_price"] is not None else None),
        waterfall=(carrier_service_pb2.QuoteRatesResponse.FromString(row["waterfall"])
                   if row["waterfall"] is not None else None),
        position=row["position"], timeout_s=row["timeout_s"],
        cancel_reason=row["cancel_reason"])


def _tender_values(t: Tender) -> dict[str, Any]:
    return {
        "id": t.id, "client_id": t.client_id, "shipment_id": t.shipment_id,
        "carrier_id": t.carrier_id, "carrier_client_id": t.carrier_client_id,
        "state": int(t.state), "rank": t.rank, "lane_id": t.quote.lane_id,
        "pickup_day": t.pickup_day, "offer_time": t.offer_time, "deadline": t.deadline,
        "respond_time": t.respond_time, "reject_reason": t.reject_reason,
        "version": t.version, "quote": t.quote.SerializeToString(),
        "load": t.load.SerializeToString(),
    }


def _tender(row: Mapping[str, Any]) -> Tender:
    return Tender(
        id=row["id"], client_id=row["client_id"], shipment_id=row["shipment_id"],
        carrier_id=row["carrier_id"], carrier_client_id=row["carrier_client_id"],
        state=TenderState(row["state"]), rank=row["rank"],
        quote=carrier_service_pb2.CarrierQuote.FromString(row["quote"]),
        load=shipment_pb2.Shipment.FromString(row["load"]), pickup_day=row["pickup_day"],
        offer_time=row["offer_time"], deadline=row["deadline"],
        respond_time=row["respond_time"], reject_reason=row["reject_reason"],
        version=row["version"])


def _page(statement: sa.Select[Any], table: sa.Table, time_column: str, page: Page
          ) -> sa.Select[Any]:
    key = sa.tuple_(table.c[time_column], table.c.id)
    if page.after is not None:
        statement = statement.where(key > sa.tuple_(sa.literal(page.after[0]),
                                                     sa.literal(page.after[1])))
    return statement.order_by(table.c[time_column], table.c.id).limit(page.limit)


# The quote path's one round trip: the catalog version and the day's booked loads per lane
# (`<32-hex carrier id><lane id>` -> count), straight on asyncpg.
_SNAPSHOT = sa.text(
    "SELECT coalesce((SELECT version FROM carrier.catalog_versions "
    "                 WHERE client_id = :client_id), 0) AS version, "
    "       (SELECT json_object_agg(k, n) FROM ("
    "          SELECT t.carrier_id || t.lane_id AS k, count(*) AS n"
    "          FROM carrier.tenders t JOIN carrier.shipments s ON s.id = t.shipment_id"
    "          WHERE t.client_id = :client_id AND t.pickup_day = :day AND t.state = 2"
    "            AND s.state <> 6 GROUP BY 1) b) AS booked"
).bindparams(sa.bindparam("client_id", type_=sa.Text), sa.bindparam("day", type_=sa.Date))
_VERSION = sa.select(catalog_versions.c.version).where(
    catalog_versions.c.client_id == sa.bindparam("client_id", type_=sa.Text))
_BY_CLIENT_CARRIERS = sa.select(carriers).where(
    carriers.c.client_id == sa.bindparam("client_id", type_=sa.Text)).order_by(carriers.c.id)
_BY_CLIENT_CARDS = sa.select(rate_cards).where(
    rate_cards.c.client_id == sa.bindparam("client_id", type_=sa.Text))


class CarrierRepository:
    # carriers and cards ---------------------------------------------------------------------

    def insert_carrier(self, tx: Transaction, carrier: Carrier) -> None:
        tx.insert(carriers, [self._carrier_values(carrier)])
        self.bump_catalog(tx, carrier.client_id)

    def save_carrier(self, tx: Transaction, carrier: Carrier) -> None:
        tx.defer(sa.update(carriers).where(carriers.c.id == carrier.id)
                 .values(self._carrier_values(carrier)))
        self.bump_catalog(tx, carrier.client_id)

    @staticmethod
    def _carrier_values(c: Carrier) -> dict[str, Any]:
        return {"id": c.id, "client_id": c.client_id,
                "oauth_client_id": c.content.oauth_client_id, "state": c.content.state,
                "create_time": c.create_time, "update_time": c.update_time,
                "version": c.version, "body": c.content.SerializeToString()}

    async def get_carrier(self, tx: Transaction, client_id: str, carrier_id: str, *,
                          for_update: bool = False) -> Carrier | None:
        query = sa.select(carriers).where(carriers.c.id == carrier_id,
                                          carriers.c.client_id == client_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _carrier(row._mapping)

    async def list_carriers(self, tx: Transaction, client_id: str, page: Page) -> list[Carrier]:
        statement = _page(sa.select(carriers).where(carriers.c.client_id == client_id),
                          carriers, "create_time", page)
        return [_carrier(r._mapping) for r in await tx.execute(statement)]

    async def catalog(self, tx: Transaction, client_id: str
                      ) -> tuple[list[Carrier], list[RateCardRecord]]:
        """Every carrier and card of the client (the quote path's cache fill: two queries)."""
        found = [_carrier(r._mapping) for r in
                 await tx.execute(_BY_CLIENT_CARRIERS, {"client_id": client_id})]
        cards = [_card(r._mapping) for r in
                 await tx.execute(_BY_CLIENT_CARDS, {"client_id": client_id})]
        return found, cards

    async def catalog_version(self, uow: UnitOfWork, client_id: str) -> int:
        row = await uow.read_one(_VERSION, {"client_id": client_id})
        return 0 if row is None else int(row["version"])

    async def quote_snapshot(self, uow: UnitOfWork, client_id: str, day: dt.date
                             ) -> tuple[int, dict[tuple[str, str], int]]:
        row = await uow.read_one(_SNAPSHOT, {"client_id": client_id, "day": day})
        assert row is not None
        booked = json.loads(row["booked"]) if row["booked"] else {}
        return int(row["version"]), {(k[:32], k[32:]): int(n) for k, n in booked.items()}

    def bump_catalog(self, tx: Transaction, client_id: str) -> None:
        statement = pg_insert(catalog_versions).values(client_id=client_id, version=1)
        tx.defer(statement.on_conflict_do_update(
            index_elements=[catalog_versions.c.client_id],
            set_={"version": catalog_versions.c.version + 1}))

    def insert_card(self, tx: Transaction, card: RateCardRecord) -> None:
        tx.insert(rate_cards, [{"id": card.id, "carrier_id": card.carrier_id,
                                "client_id": card.client_id, "create_time": card.create_time,
                                "body": card.content.SerializeToString()}])
        self.bump_catalog(tx, card.client_id)

    async def get_card(self, tx: Transaction, client_id: str, carrier_id: str, card_id: str
                       ) -> RateCardRecord | None:
        row = (await tx.execute(sa.select(rate_cards).where(
            rate_cards.c.id == card_id, rate_cards.c.carrier_id == carrier_id,
            rate_cards.c.client_id == client_id))).one_or_none()
        return None if row is None else _card(row._mapping)

    async def list_cards(self, tx: Transaction, client_id: str, carrier_id: str, page: Page
                         ) -> list[RateCardRecord]:
        statement = _page(sa.select(rate_cards).where(rate_cards.c.client_id == client_id,
                                                      rate_cards.c.carrier_id == carrier_id),
                          rate_cards, "create_time", page)
        return [_card(r._mapping) for r in await tx.execute(statement)]

    async def delete_card(self, tx: Transaction, client_id: str, carrier_id: str, card_id: str
                          ) -> bool:
        result = await tx.execute(sa.delete(rate_cards).where(
            rate_cards.c.id == card_id, rate_cards.c.carrier_id == carrier_id,
            rate_cards.c.client_id == client_id))
        if result.rowcount:
            self.bump_catalog(tx, client_id)
        return bool(result.rowcount)

    # shipments -----------------------------------------------------------------------------

    def insert_shipment(self, tx: Transaction, shipment: Shipment) -> None:
        tx.insert(shipments, [_shipment_values(shipment)])

    async def insert_shipment_once(self, tx: Transaction, shipment: Shipment) -> bool:
        """Insert unless the client already has a shipment for the same order."""
        result = await tx.execute(pg_insert(shipments).values(_shipment_values(shipment))
                                  .on_conflict_do_nothing(
                                      constraint="uq_shipments_client_order"))
        return bool(result.rowcount)

    def save_shipment(self, tx: Transaction, shipment: Shipment) -> None:
        tx.defer(sa.update(shipments).where(shipments.c.id == shipment.id)
                 .values(_shipment_values(shipment)))

    async def get_shipment(self, tx: Transaction, client_id: str, shipment_id: str, *,
                           for_update: bool = False) -> Shipment | None:
        query = sa.select(shipments).where(shipments.c.id == shipment_id,
                                           shipments.c.client_id == client_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _shipment(row._mapping)

    async def shipment_of_order(self, tx: Transaction, client_id: str, order: str
                                ) -> Shipment | None:
        row = (await tx.execute(sa.select(shipments).where(
            shipments.c.client_id == client_id, shipments.c.order_name == order)
        )).one_or_none()
        return None if row is None else _shipment(row._mapping)

    async def list_shipments(self, tx: Transaction, client_id: str,
                             filters: tuple[tuple[str, Any], ...], page: Page) -> list[Shipment]:
        statement = sa.select(shipments).where(shipments.c.client_id == client_id)
        for field, value in filters:
            column = shipments.c.order_name if field == "order" else shipments.c[field]
            statement = statement.where(column == value)
        rows = await tx.execute(_page(statement, shipments, "create_time", page))
        return [_shipment(r._mapping) for r in rows]

    # tenders -------------------------------------------------------------------------------

    async def next_control_number(self, tx: Transaction) -> int:
        """The next EDI interchange control number (a Postgres sequence: never handed out
        twice, also when the transaction that took it rolls back)."""
        return int((await tx.execute(sa.select(edi_control_numbers.next_value()))).scalar_one())

    def insert_tender(self, tx: Transaction, tender: Tender) -> None:
        tx.insert(tenders, [_tender_values(tender)])

    def save_tender(self, tx: Transaction, tender: Tender) -> None:
        tx.defer(sa.update(tenders).where(tenders.c.id == tender.id)
                 .values(_tender_values(tender)))

    async def get_tender(self, tx: Transaction, tender_id: str, *, for_update: bool = False
                         ) -> Tender | None:
        query = sa.select(tenders).where(tenders.c.id == tender_id)
        if for_update:
            query = query.with_for_update()
        row = (await tx.execute(query)).one_or_none()
        return None if row is None else _tender(row._mapping)

    async def list_tenders(self, tx: Transaction, query: TenderQuery) -> list[Tender]:
        viewer = query.viewer
        statement = sa.select(tenders).where(sa.or_(tenders.c.client_id == viewer,
                                                    tenders.c.carrier_client_id == viewer))
        for field, value in query.filters:
            statement = statement.where(tenders.c[field] == value)
        rows = await tx.execute(_page(statement, tenders, "offer_time", query.page))
        return [_tender(r._mapping) for r in rows]

    async def due_tenders(self, tx: Transaction, now: dt.datetime, limit: int) -> list[Tender]:
        """Open tenders whose deadline passed, locked; ones another process holds are skipped
        (it is expiring them, or a carrier is answering them right now)."""
        rows = await tx.execute(
            sa.select(tenders).where(tenders.c.state == int(TenderState.OFFERED),
                                     tenders.c.deadline <= now)
            .order_by(tenders.c.deadline).limit(limit).with_for_update(skip_locked=True))
        return [_tender(r._mapping) for r in rows]

    async def booked_counts(self, tx: Transaction, client_id: str, day: dt.date
                            ) -> dict[tuple[str, str], int]:
        """Accepted loads per (carrier, lane) picked up on `day` (cancelled ones not counted)."""
        rows = await tx.execute(
            sa.select(tenders.c.carrier_id, tenders.c.lane_id, sa.func.count())
            .select_from(tenders.join(shipments, shipments.c.id == tenders.c.shipment_id))
            .where(tenders.c.client_id == client_id, tenders.c.pickup_day == day,
                   tenders.c.state == int(TenderState.ACCEPTED),
                   shipments.c.state != int(ShipmentState.CANCELLED))
            .group_by(tenders.c.carrier_id, tenders.c.lane_id))
        return {(r[0], r[1]): int(r[2]) for r in rows}

    # scorecards ----------------------------------------------------------------------------

    async def insert_milestone(self, tx: Transaction, *, shipment: Shipment, kind: int,
                               lane_id: str, actual: dt.datetime, on_time: bool,
                               now: dt.datetime) -> bool:
        result = await tx.execute(pg_insert(milestones).values(
            shipment_id=shipment.id, kind=kind, client_id=shipment.client_id,
            carrier_id=shipment.carrier_id, lane_id=lane_id, actual_time=actual,
            on_time=on_time, record_time=now).on_conflict_do_nothing())
        return bool(result.rowcount)

    async def lane_stats(self, tx: Transaction, client_id: str, since: dt.datetime,
                         carrier_id: str = "") -> list[LaneStats]:
        answered = tenders.c.state.in_([int(TenderState.ACCEPTED), int(TenderState.REJECTED)])
        t_where = [tenders.c.client_id == client_id, tenders.c.offer_time >= since,
                   tenders.c.state != int(TenderState.WITHDRAWN)]
        m_where = [milestones.c.client_id == client_id, milestones.c.record_time >= since]
        if carrier_id:
            t_where.append(tenders.c.carrier_id == carrier_id)
            m_where.append(milestones.c.carrier_id == carrier_id)
        seconds = sa.func.extract("epoch", tenders.c.respond_time - tenders.c.offer_time)
        offered = await tx.execute(
            sa.select(tenders.c.carrier_id, tenders.c.lane_id, sa.func.count(),
                      sa.func.count().filter(tenders.c.state == int(TenderState.ACCEPTED)),
                      sa.func.count().filter(answered),
                      sa.func.coalesce(sa.func.sum(seconds).filter(answered), 0))
            .where(*t_where).group_by(tenders.c.carrier_id, tenders.c.lane_id))
        stats = {(r[0], r[1]): {"offered": r[2], "accepted": r[3], "answered": r[4],
                                "response_seconds": float(r[5])} for r in offered}
        recorded = await tx.execute(
            sa.select(milestones.c.carrier_id, milestones.c.lane_id, milestones.c.kind,
                      sa.func.count(), sa.func.count().filter(milestones.c.on_time))
            .where(*m_where)
            .group_by(milestones.c.carrier_id, milestones.c.lane_id, milestones.c.kind))
        for carrier, lane, kind, total, punctual in recorded:
            entry = stats.setdefault((carrier, lane), {})
            prefix = "pickups" if kind == 1 else "deliveries"
            entry[prefix], entry[f"{prefix}_on_time"] = int(total), int(punctual)
        return [LaneStats(carrier, lane, **values)
                for (carrier, lane), values in sorted(stats.items())]
