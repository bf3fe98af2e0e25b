"""A shipment as the pricing engine sees it (`rates.Load`), and its ship day."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

from cartage.carrier.v1 import shipment_pb2
from services.carrier.domain.money import from_float
from services.carrier.domain.rates import Load, Place, normalize_postal

ROAD_FACTOR = 1.2
EARTH_KM = 6371.0088


def great_circle_km(a_lat: float, a_lng: float, b_lat: float, b_lng: float) -> float:
    p1, p2 = math.radians(a_lat), math.radians(b_lat)
    dp, dl = p2 - p1, math.radians(b_lng - a_lng)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def distance_km(shipment: shipment_pb2.Shipment) -> Decimal:
    """The given road distance, else great-circle x 1.2 rounded to whole km."""
    if shipment.distance_km:
        return from_float(shipment.distance_km)
    a, b = shipment.pickup.location, shipment.delivery.location
    return Decimal(round(great_circle_km(a.latitude, a.longitude, b.latitude, b.longitude)
                         * ROAD_FACTOR))


def load_of(shipment: shipment_pb2.Shipment) -> Load:
    def place(stop: object) -> Place:
        address = stop.address  # type: ignore[attr-defined]
        return Place(address.region_code.upper(), normalize_postal(address.postal_code))

    return Load(
        origin=place(shipment.pickup), destination=place(shipment.delivery),
        weight_kg=from_float(shipment.weight_kg), pallets=shipment.pallets,
        distance_km=distance_km(shipment), equipment=shipment.equipment, mode=shipment.mode,
        service_level=shipment.service_level,
        accessorials=tuple((a.code, a.minutes) for a in shipment.accessorials))


def ship_day(shipment: shipment_pb2.Shipment, today: dt.date) -> dt.date:
    """The day of the pickup's first time window, else today."""
    windows = shipment.pickup.time_windows
    if windows and windows[0].HasField("start_time"):
        return dt.datetime.fromtimestamp(windows[0].start_time.seconds, dt.UTC).date()
    return today
