"""Builders of carriers, rate cards and shipments the carrier tests share."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from google.protobuf import timestamp_pb2
from google.type import date_pb2, latlng_pb2, money_pb2, postal_address_pb2

from cartage.carrier.v1 import carrier_pb2, shipment_pb2
from cartage.type.v1 import stop_pb2, time_window_pb2

FAR_FUTURE = date_pb2.Date(year=2099, month=12, day=31)


def eur(amount: str, currency: str = "EUR") -> money_pb2.Money:
    value = Decimal(amount)
    units = int(value)
    return money_pb2.Money(currency_code=currency, units=units,
                           nanos=int((value - units) * 1_000_000_000))


def date(day: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def carrier(name: str = "Nordfracht", scac: str = "NORF", **fields: Any) -> carrier_pb2.Carrier:
    message = carrier_pb2.Carrier(
        display_name=name, scac=scac, modes=[carrier_pb2.MODE_FTL, carrier_pb2.MODE_LTL],
        equipment=[carrier_pb2.EQUIPMENT_DRY_VAN],
        insurance_expiry=FAR_FUTURE, authority_expiry=FAR_FUTURE,
        tender_channel=carrier_pb2.TENDER_CHANNEL_CARTAGE_API)
    for key, value in fields.items():
        if isinstance(value, list):
            message.ClearField(key)
            getattr(message, key).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(message, key).CopyFrom(value)
        else:
            setattr(message, key, value)
    return message


def place(country: str = "DE", prefix: str | None = None,
          start: str | None = None, end: str | None = None, zone: str | None = None
          ) -> carrier_pb2.LocationMatch:
    match = carrier_pb2.LocationMatch(country=country)
    if prefix is not None:
        match.postal_prefix = prefix
    if start is not None:
        match.postal_range.start, match.postal_range.end = start, end or start
    if zone is not None:
        match.zone = zone
    return match


def lane(lane_id: str = "HH-B", origin: carrier_pb2.LocationMatch | None = None,
         destination: carrier_pb2.LocationMatch | None = None, **fields: Any
         ) -> carrier_pb2.Lane:
    message = carrier_pb2.Lane(
        lane_id=lane_id, origin=origin or place("DE", "20"),
        destination=destination or place("DE", "10"),
        mode=carrier_pb2.MODE_FTL, transit_days=1,
        pricing=carrier_pb2.Pricing(per_kg=carrier_pb2.PerKg(breaks=[
            carrier_pb2.WeightBreak(min_kg=0, max_kg=1000, rate_per_kg=eur("0.12")),
            carrier_pb2.WeightBreak(min_kg=1000, max_kg=0, rate_per_kg=eur("0.09"))])),
        minimum_charge=eur("95"))
    for key, value in fields.items():
        if hasattr(value, "CopyFrom"):
            getattr(message, key).CopyFrom(value)
        else:
            setattr(message, key, value)
    return message


def rate_card(*lanes: carrier_pb2.Lane, currency: str = "EUR", **fields: Any
              ) -> carrier_pb2.RateCard:
    card = carrier_pb2.RateCard(
        display_name="2026 contract", currency_code=currency,
        valid_from=date_pb2.Date(year=2020, month=1, day=1), valid_to=FAR_FUTURE,
        lanes=list(lanes) or [lane()],
        fuel_surcharge=[
            carrier_pb2.FuelSurchargeBand(index_from="0", index_to="1.50", percent="8"),
            carrier_pb2.FuelSurchargeBand(index_from="1.50", index_to="", percent="12.5")],
        accessorials=[
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_LIFTGATE,
                                    amount=eur("45", currency)),
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_DETENTION,
                                    amount=eur("60", currency), free_minutes=120),
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_TONU,
                                    amount=eur("150", currency))])
    for key, value in fields.items():
        setattr(card, key, value)
    return card


DAY = 1_893_456_000  # 2030-01-01T00:00:00Z


def _stop(country: str, postal: str, lat: float, lng: float, start: int) -> stop_pb2.Stop:
    return stop_pb2.Stop(
        address=postal_address_pb2.PostalAddress(region_code=country, postal_code=postal,
                                                 locality="x", address_lines=["y 1"]),
        location=latlng_pb2.LatLng(latitude=lat, longitude=lng),
        time_windows=[time_window_pb2.TimeWindow(
            start_time=timestamp_pb2.Timestamp(seconds=start),
            end_time=timestamp_pb2.Timestamp(seconds=start + 3 * 3600))])


def shipment(weight: float = 1250.0, **fields: Any) -> shipment_pb2.Shipment:
    message = shipment_pb2.Shipment(
        pickup=_stop("DE", "20457", 53.54, 9.99, DAY + 8 * 3600),
        delivery=_stop("DE", "10117", 52.52, 13.39, DAY + 14 * 3600),
        weight_kg=weight, pallets=4, equipment=carrier_pb2.EQUIPMENT_DRY_VAN,
        mode=carrier_pb2.MODE_FTL, distance_km=290)
    for key, value in fields.items():
        if isinstance(value, list):
            message.ClearField(key)
            getattr(message, key).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(message, key).CopyFrom(value)
        else:
            setattr(message, key, value)
    return message
