"""A realistic demo order and a truck to carry it, for the README and `services.stack demo`."""

from __future__ import annotations

import time
import uuid

from google.protobuf import duration_pb2, timestamp_pb2
from google.type import latlng_pb2, money_pb2, postal_address_pb2

from cartage.order.v1 import order_pb2
from cartage.routing.v1 import vehicle_pb2
from cartage.type.v1 import party_pb2, stop_pb2, time_window_pb2


def _window(start: int, hours: int) -> time_window_pb2.TimeWindow:
    return time_window_pb2.TimeWindow(
        start_time=timestamp_pb2.Timestamp(seconds=start),
        end_time=timestamp_pb2.Timestamp(seconds=start + hours * 3600),
    )


def demo_order() -> order_pb2.Order:
    tomorrow = (int(time.time()) // 86400 + 1) * 86400
    return order_pb2.Order(
        external_reference=f"DEMO-{uuid.uuid4().hex[:8].upper()}",
        shipper=party_pb2.Party(name="Demo Shipper GmbH"),
        consignee=party_pb2.Party(name="Demo Retail AG"),
        pickup=stop_pb2.Stop(
            address=postal_address_pb2.PostalAddress(
                region_code="DE", postal_code="20457", locality="Hamburg",
                address_lines=["Am Sandtorkai 1"]),
            location=latlng_pb2.LatLng(latitude=53.5436, longitude=9.9899),
            time_windows=[_window(tomorrow + 7 * 3600, 3)],
            service_duration=duration_pb2.Duration(seconds=1200),
        ),
        delivery=stop_pb2.Stop(
            address=postal_address_pb2.PostalAddress(
                region_code="DE", postal_code="10117", locality="Berlin",
                address_lines=["Friedrichstr. 50"]),
            location=latlng_pb2.LatLng(latitude=52.5163, longitude=13.3889),
            time_windows=[_window(tomorrow + 13 * 3600, 4)],
            service_duration=duration_pb2.Duration(seconds=900),
        ),
        line_items=[order_pb2.LineItem(
            sku="PAL-EUR-01", description="Euro pallet, mixed groceries", quantity=6,
            weight_kg=2400.0, volume_m3=8.6,
            declared_value=money_pb2.Money(currency_code="EUR", units=18000))],
        priority=order_pb2.PRIORITY_HIGH,
        required_skills=["tail_lift"],
    )


def demo_vehicle() -> vehicle_pb2.Vehicle:
    """A 12 t truck with a tail lift at the Hamburg depot, on duty tomorrow 05:00-21:00 UTC: it
    can carry the demo order (pick up in Hamburg, deliver in Berlin)."""
    tomorrow = (int(time.time()) // 86400 + 1) * 86400
    depot = vehicle_pb2.Depot(location=latlng_pb2.LatLng(latitude=53.5511, longitude=9.9937),
                              label="Hamburg depot")
    return vehicle_pb2.Vehicle(
        display_name="HH-CT 1201",
        capacities=[vehicle_pb2.Quantity(dimension=vehicle_pb2.DIMENSION_WEIGHT_KG, amount=12000),
                    vehicle_pb2.Quantity(dimension=vehicle_pb2.DIMENSION_VOLUME_M3, amount=45),
                    vehicle_pb2.Quantity(dimension=vehicle_pb2.DIMENSION_UNITS, amount=33)],
        skills=["tail_lift"],
        start_depot=depot,
        end_depot=depot,
        shift=_window(tomorrow + 5 * 3600, 16),
        breaks=[vehicle_pb2.Break(window=_window(tomorrow + 11 * 3600, 2),
                                  duration=duration_pb2.Duration(seconds=45 * 60))],
        costs=vehicle_pb2.Costs(fixed=120, per_km=0.9, per_hour=35),
    )


def demo_shipment() -> object:
    """A 2.4 t load Hamburg -> Berlin tomorrow, for the carrier demo (QuoteRates, tender)."""
    from cartage.carrier.v1 import carrier_pb2, shipment_pb2

    order = demo_order()
    return shipment_pb2.Shipment(
        pickup=order.pickup, delivery=order.delivery, weight_kg=2400, pallets=6,
        equipment=carrier_pb2.EQUIPMENT_DRY_VAN, mode=carrier_pb2.MODE_FTL,
        accessorials=[shipment_pb2.RequestedAccessorial(
            code=carrier_pb2.ACCESSORIAL_CODE_LIFTGATE)])
