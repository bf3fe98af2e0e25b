"""The CarrierService gRPC servicer: convert, call the use case, convert back. No rules here."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from cartage.carrier.v1 import (
    carrier_pb2,
    carrier_service_pb2,
    carrier_service_pb2_grpc,
    shipment_pb2,
    tender_pb2,
)
from services.carrier.api.validation import (
    check_carrier,
    check_cost_weight,
    check_shipment,
    check_timeout,
)
from services.carrier.conversion import (
    card_content,
    card_to_proto,
    carrier_content,
    carrier_to_proto,
    scorecard_to_proto,
    shipment_content,
    shipment_to_proto,
    tender_to_proto,
)
from services.carrier.domain.csv_import import parse_lanes
from services.carrier.domain.messages import exclusion_message, quote_message
from services.carrier.domain.model import ShipmentState, TenderState
from services.carrier.domain.money import known_currency, parse_decimal
from services.carrier.domain.ratecard import as_date, check_rate_card
from services.carrier.use_cases import (
    CatalogUseCases,
    Page,
    QuoteUseCases,
    TenderQuery,
    TenderUseCases,
)
from services.carrier.use_cases.quoting import QuoteResult
from services.kit.auth import Caller, current_caller
from services.kit.errors import InvalidArgument
from services.kit.fieldmask import apply_update_mask, check_update_mask
from services.kit.filtering import parse_filter
from services.kit.idempotency import IdempotencyKey, request_key
from services.kit.log import request_id_var
from services.kit.pagination import Keyset, newest_key, time_and_id
from services.kit.validation import RESOURCE_ID, Violations, parse_name

CARRIER_UPDATABLE = frozenset({
    "display_name", "scac", "modes", "service_levels", "equipment", "tender_channel",
    "endpoint_uri", "insurance_expiry", "authority_expiry", "state", "oauth_client_id",
    "max_weight_kg"})
SHIPMENT_FILTERS = {"state": frozenset({"="}), "order": frozenset({"="})}
TENDER_FILTERS = {"state": frozenset({"="}), "shipment": frozenset({"="})}


def _key(caller: Caller, method: str, request: Any) -> IdempotencyKey | None:
    return request_key(caller.client_id, caller.idempotency_key, method, request)


def _card_name(name: str, v: Violations, field: str = "name") -> tuple[str, str]:
    parts = name.split("/")
    if (len(parts) != 4 or parts[0] != "carriers" or parts[2] != "rateCards"
            or not RESOURCE_ID.match(parts[1]) or not RESOURCE_ID.match(parts[3])):
        v.add(field, "must look like carriers/{32 hex}/rateCards/{32 hex}", "INVALID_NAME")
        return "", ""
    return parts[1], parts[3]


def _page(request: Any, caller: Caller, *query: str) -> Keyset:
    return Keyset.of(request, caller.client_id, *query, parse=time_and_id)


def _state_filter(raw: str, enum: Any, what: str) -> int:
    name = raw.upper().removeprefix("STATE_")
    if name not in enum.__members__:
        raise InvalidArgument.single("filter", f"unknown {what} state {raw!r}; use one of "
                                               f"{', '.join(enum.__members__)}")
    return int(enum[name])


class CarrierServicer(carrier_service_pb2_grpc.CarrierServiceServicer):
    def __init__(self, catalog: CatalogUseCases, quotes: QuoteUseCases,
                 tenders: TenderUseCases, *, max_csv_bytes: int) -> None:
        self._catalog = catalog
        self._quotes = quotes
        self._tenders = tenders
        self._max_csv_bytes = max_csv_bytes

    # carriers ------------------------------------------------------------------------------

    async def CreateCarrier(self, request: carrier_service_pb2.CreateCarrierRequest,
                            context: grpc.aio.ServicerContext) -> carrier_pb2.Carrier:
        caller = current_caller()
        v = Violations()
        check_carrier(request.carrier, v)
        v.raise_if_any()
        carrier = await self._catalog.create_carrier(
            caller.client_id, carrier_content(request.carrier),
            _key(caller, "CreateCarrier", request), request_id_var.get())
        return carrier_to_proto(carrier)

    async def GetCarrier(self, request: carrier_service_pb2.GetCarrierRequest,
                         context: grpc.aio.ServicerContext) -> carrier_pb2.Carrier:
        caller = current_caller()
        carrier_id = parse_name(request.name, "carriers")
        return carrier_to_proto(await self._catalog.get_carrier(caller.client_id, carrier_id))

    async def ListCarriers(self, request: carrier_service_pb2.ListCarriersRequest,
                           context: grpc.aio.ServicerContext
                           ) -> carrier_service_pb2.ListCarriersResponse:
        caller = current_caller()
        page = _page(request, caller, "carriers")
        rows = await self._catalog.list_carriers(caller.client_id, Page(page.after, page.fetch))
        return carrier_service_pb2.ListCarriersResponse(
            carriers=[carrier_to_proto(c) for c in rows[:page.limit]],
            next_page_token=page.next_token(rows, newest_key))

    async def UpdateCarrier(self, request: carrier_service_pb2.UpdateCarrierRequest,
                            context: grpc.aio.ServicerContext) -> carrier_pb2.Carrier:
        caller = current_caller()
        carrier_id = parse_name(request.carrier.name, "carriers", "carrier.name")
        check_update_mask(request.update_mask, carrier_pb2.Carrier.DESCRIPTOR,
                          updatable=CARRIER_UPDATABLE)

        def apply(content: carrier_pb2.Carrier) -> None:
            apply_update_mask(content, request.carrier, request.update_mask,
                              updatable=CARRIER_UPDATABLE)
            after = Violations()
            check_carrier(content, after)
            after.raise_if_any()

        carrier = await self._catalog.update_carrier(
            caller.client_id, carrier_id, request.carrier.etag, apply, request_id_var.get())
        return carrier_to_proto(carrier)

    # rate cards ----------------------------------------------------------------------------

    async def CreateRateCard(self, request: carrier_service_pb2.CreateRateCardRequest,
                             context: grpc.aio.ServicerContext) -> carrier_pb2.RateCard:
        caller = current_caller()
        v = Violations()
        carrier_id = v.resource_id(request.parent, "carriers", "parent")
        check_rate_card(request.rate_card, v)
        v.raise_if_any()
        card = await self._catalog.create_card(
            caller.client_id, carrier_id, card_content(request.rate_card),
            _key(caller, "CreateRateCard", request), request_id_var.get())
        return card_to_proto(card)

    async def ImportRateCard(self, request: carrier_service_pb2.ImportRateCardRequest,
                             context: grpc.aio.ServicerContext) -> carrier_pb2.RateCard:
        caller = current_caller()
        v = Violations()
        carrier_id = v.resource_id(request.parent, "carriers", "parent")
        size = len(request.csv_content.encode())
        if size > self._max_csv_bytes:  # refused by size, before a single row is read
            v.add("csv_content", f"is {size:,} bytes; at most {self._max_csv_bytes:,}",
                  "TOO_LARGE")
        elif not request.csv_content.strip():
            v.add("csv_content", "is required", "REQUIRED")
        if request.rate_card.lanes:
            v.add("rate_card.lanes", "must be empty: the lanes come from csv_content")
        v.raise_if_any()
        card, problems = parse_lanes(request.csv_content, card_content(request.rate_card))
        if card is None:
            v.extend(problems)
            v.raise_if_any("the CSV file has errors; nothing was imported")
        record = await self._catalog.create_card(
            caller.client_id, carrier_id, card, _key(caller, "ImportRateCard", request),
            request_id_var.get())
        return card_to_proto(record)

    async def GetRateCard(self, request: carrier_service_pb2.GetRateCardRequest,
                          context: grpc.aio.ServicerContext) -> carrier_pb2.RateCard:
        caller = current_caller()
        v = Violations()
        carrier_id, card_id = _card_name(request.name, v)
        v.raise_if_any()
        return card_to_proto(await self._catalog.get_card(caller.client_id, carrier_id,
                                                          card_id))

    async def ListRateCards(self, request: carrier_service_pb2.ListRateCardsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> carrier_service_pb2.ListRateCardsResponse:
        caller = current_caller()
        carrier_id = parse_name(request.parent, "carriers", "parent")
        page = _page(request, caller, "rateCards", carrier_id)
        rows = await self._catalog.list_cards(caller.client_id, carrier_id,
                                              Page(page.after, page.fetch))
        return carrier_service_pb2.ListRateCardsResponse(
            rate_cards=[card_to_proto(c) for c in rows[:page.limit]],
            next_page_token=page.next_token(rows, newest_key))

    async def DeleteRateCard(self, request: carrier_service_pb2.DeleteRateCardRequest,
                             context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        caller = current_caller()
        v = Violations()
        carrier_id, card_id = _card_name(request.name, v)
        v.raise_if_any()
        await self._catalog.delete_card(caller.client_id, carrier_id, card_id)
        return empty_pb2.Empty()

    # shipments -----------------------------------------------------------------------------

    async def CreateShipment(self, request: carrier_service_pb2.CreateShipmentRequest,
                             context: grpc.aio.ServicerContext) -> shipment_pb2.Shipment:
        caller = current_caller()
        v = Violations()
        check_shipment(request.shipment, v)
        v.raise_if_any()
        shipment = await self._tenders.create_shipment(
            caller.client_id, shipment_content(request.shipment),
            _key(caller, "CreateShipment", request), request_id_var.get())
        return shipment_to_proto(shipment)

    async def GetShipment(self, request: carrier_service_pb2.GetShipmentRequest,
                          context: grpc.aio.ServicerContext) -> shipment_pb2.Shipment:
        caller = current_caller()
        shipment_id = parse_name(request.name, "shipments")
        return shipment_to_proto(await self._tenders.get_shipment(caller.client_id,
                                                                  shipment_id))

    async def ListShipments(self, request: carrier_service_pb2.ListShipmentsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> carrier_service_pb2.ListShipmentsResponse:
        caller = current_caller()
        filters = tuple(
            (c.field, _state_filter(c.value, ShipmentState, "shipment")
             if c.field == "state" else c.value)
            for c in parse_filter(request.filter, SHIPMENT_FILTERS))
        page = _page(request, caller, "shipments", request.filter)
        rows = await self._tenders.list_shipments(caller.client_id, filters,
                                                  Page(page.after, page.fetch))
        return carrier_service_pb2.ListShipmentsResponse(
            shipments=[shipment_to_proto(s) for s in rows[:page.limit]],
            next_page_token=page.next_token(rows, newest_key))

    async def CancelShipment(self, request: carrier_service_pb2.CancelShipmentRequest,
                             context: grpc.aio.ServicerContext) -> shipment_pb2.Shipment:
        caller = current_caller()
        v = Violations()
        shipment_id = v.resource_id(request.name, "shipments")
        v.text(request.reason, "reason", required=True, max_len=500)
        v.raise_if_any()
        shipment = await self._tenders.cancel_shipment(
            caller.client_id, shipment_id, request.reason,
            _key(caller, "CancelShipment", request), request_id_var.get())
        return shipment_to_proto(shipment)

    # quoting and tendering -----------------------------------------------------------------

    async def QuoteRates(self, request: carrier_service_pb2.QuoteRatesRequest,
                         context: grpc.aio.ServicerContext
                         ) -> carrier_service_pb2.QuoteRatesResponse:
        caller = current_caller()
        v = Violations()
        kind = request.WhichOneof("subject")
        shipment_id = ""
        if kind == "shipment_name":
            shipment_id = v.resource_id(request.shipment_name, "shipments", "shipment_name")
        elif kind == "shipment":
            check_shipment(request.shipment, v)
        else:
            v.add("shipment", "give shipment_name or shipment", "REQUIRED")
        weight = check_cost_weight(request.HasField("cost_weight"), request.cost_weight, v)
        fuel = None
        if request.fuel_price_index:
            fuel = parse_decimal(request.fuel_price_index)
            if fuel is None or fuel < 0:
                v.add("fuel_price_index", "must be a finite decimal >= 0 such as 1.62")
        if request.currency_code and not known_currency(request.currency_code):
            v.add("currency_code", "must be an ISO 4217 code such as EUR", "UNKNOWN_CURRENCY")
        day = None
        if request.HasField("ship_date"):
            day = as_date(request.ship_date)
            if day is None:
                v.add("ship_date", "is not a calendar date")
        v.raise_if_any()
        options: dict[str, Any] = {
            "cost_weight": 0.7 if weight is None else weight,
            "currency": request.currency_code, "fuel_index": fuel, "day": day}
        if shipment_id:
            _, result = await self._tenders.quote_stored(caller.client_id, shipment_id,
                                                         **options)
        else:
            result = await self._quotes.quote(caller.client_id, request.shipment, **options)
        return _quote_response(result)  # type: ignore[arg-type]

    async def TenderShipment(self, request: carrier_service_pb2.TenderShipmentRequest,
                             context: grpc.aio.ServicerContext) -> shipment_pb2.Shipment:
        caller = current_caller()
        v = Violations()
        shipment_id = v.resource_id(request.name, "shipments")
        for i, name in enumerate(request.carriers):
            v.resource_id(name, "carriers", f"carriers[{i}]")
        if len(set(request.carriers)) != len(request.carriers):
            v.add("carriers", "names a carrier twice", "DUPLICATE")
        timeout = check_timeout(request.HasField("response_timeout"), request.response_timeout,
                                v)
        weight = check_cost_weight(request.HasField("cost_weight"), request.cost_weight, v)
        v.raise_if_any()
        shipment = await self._tenders.tender(
            caller.client_id, shipment_id, list(request.carriers), timeout, weight,
            _key(caller, "TenderShipment", request), request_id_var.get())
        return shipment_to_proto(shipment)

    async def GetTender(self, request: carrier_service_pb2.GetTenderRequest,
                        context: grpc.aio.ServicerContext) -> tender_pb2.Tender:
        caller = current_caller()
        tender_id = parse_name(request.name, "tenders")
        return tender_to_proto(await self._tenders.get_tender(caller.client_id, tender_id))

    async def ListTenders(self, request: carrier_service_pb2.ListTendersRequest,
                          context: grpc.aio.ServicerContext
                          ) -> carrier_service_pb2.ListTendersResponse:
        caller = current_caller()
        filters = []
        for c in parse_filter(request.filter, TENDER_FILTERS):
            if c.field == "state":
                filters.append(("state", _state_filter(c.value, TenderState, "tender")))
            else:
                filters.append(("shipment_id", parse_name(c.value, "shipments", "filter")))
        page = _page(request, caller, "tenders", request.filter)
        rows = await self._tenders.list_tenders(
            TenderQuery(caller.client_id, tuple(filters), Page(page.after, page.fetch)))
        return carrier_service_pb2.ListTendersResponse(
            tenders=[tender_to_proto(t) for t in rows[:page.limit]],
            next_page_token=page.next_token(rows, lambda t: (t.offer_time.isoformat(), t.id)))

    async def AcceptTender(self, request: carrier_service_pb2.AcceptTenderRequest,
                           context: grpc.aio.ServicerContext) -> tender_pb2.Tender:
        caller = current_caller()
        tender_id = parse_name(request.name, "tenders")
        tender = await self._tenders.accept(caller.client_id, tender_id,
                                            _key(caller, "AcceptTender", request),
                                            request_id_var.get())
        return tender_to_proto(tender)

    async def RejectTender(self, request: carrier_service_pb2.RejectTenderRequest,
                           context: grpc.aio.ServicerContext) -> tender_pb2.Tender:
        caller = current_caller()
        v = Violations()
        tender_id = v.resource_id(request.name, "tenders")
        v.text(request.reason, "reason", required=True, max_len=500)
        v.raise_if_any()
        tender = await self._tenders.reject(caller.client_id, tender_id, request.reason,
                                            _key(caller, "RejectTender", request),
                                            request_id_var.get())
        return tender_to_proto(tender)

    async def ListLaneScorecards(self, request: carrier_service_pb2.ListLaneScorecardsRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> carrier_service_pb2.ListLaneScorecardsResponse:
        caller = current_caller()
        v = Violations()
        carrier_id = v.resource_id(request.carrier, "carriers", "carrier") \
            if request.carrier else ""
        days = 90.0
        if request.HasField("window"):
            days = (request.window.seconds + request.window.nanos / 1e9) / 86400
            if not 0 < days <= 366:
                v.add("window", "must be more than 0 and at most 366 days", "OUT_OF_RANGE")
        v.raise_if_any()
        stats, since, now = await self._tenders.scorecards(caller.client_id, carrier_id, days)
        return carrier_service_pb2.ListLaneScorecardsResponse(
            lane_scorecards=[scorecard_to_proto(s, since, now) for s in stats])


def _quote_response(result: QuoteResult) -> carrier_service_pb2.QuoteRatesResponse:
    return carrier_service_pb2.QuoteRatesResponse(
        quotes=[quote_message(q) for q in result.quotes],
        exclusions=[exclusion_message(e) for e in result.exclusions],
        currency_code=result.currency)
