"""Request checks of the carrier API: every problem of a request at once, as field violations."""

from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import urlsplit

from google.protobuf import duration_pb2

from cartage.carrier.v1 import carrier_pb2, shipment_pb2
from services.carrier.domain.ratecard import check_date, known_country
from services.kit.validation import Violations

SCAC = re.compile(r"^[A-Z]{2,4}$")
LEVEL = re.compile(r"^[A-Z0-9_]{1,32}$")
MAX_WEIGHT_KG = 100_000
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 1, 7 * 86400


def check_carrier(carrier: carrier_pb2.Carrier, v: Violations, path: str = "carrier") -> None:
    v.text(carrier.display_name, f"{path}.display_name", required=True, max_len=200)
    if not SCAC.match(carrier.scac):
        v.add(f"{path}.scac", f"must be 2-4 upper-case letters (got {carrier.scac!r})",
              "INVALID_SCAC")
    if not carrier.modes:
        v.add(f"{path}.modes", "at least one mode is required", "REQUIRED")
    for i, mode in enumerate(carrier.modes):
        v.enum(mode, carrier_pb2.Mode.DESCRIPTOR, f"{path}.modes[{i}]", allow_unspecified=False)
    for i, kind in enumerate(carrier.equipment):
        v.enum(kind, carrier_pb2.Equipment.DESCRIPTOR, f"{path}.equipment[{i}]",
               allow_unspecified=False)
    for i, level in enumerate(carrier.service_levels):
        if not LEVEL.match(level.code):
            v.add(f"{path}.service_levels[{i}].code", "must be 1-32 of A-Z, 0-9 and _")
        if not 0 <= level.transit_days <= 60:
            v.add(f"{path}.service_levels[{i}].transit_days", "must be 0-60", "OUT_OF_RANGE")
    v.enum(carrier.tender_channel, carrier_pb2.TenderChannel.DESCRIPTOR,
           f"{path}.tender_channel")
    v.enum(carrier.state, carrier_pb2.Carrier.State.DESCRIPTOR, f"{path}.state")
    v.text(carrier.endpoint_uri, f"{path}.endpoint_uri", max_len=2000)
    if carrier.tender_channel == carrier_pb2.TENDER_CHANNEL_API_CALLBACK and \
            not _callback_endpoint(carrier.endpoint_uri):
        v.add(f"{path}.endpoint_uri", "an API_CALLBACK carrier needs an https:// endpoint "
              "(http:// only to a loopback address: a simulator beside the service)")
    check_date(carrier.insurance_expiry, carrier.HasField("insurance_expiry"),
               f"{path}.insurance_expiry", v)
    check_date(carrier.authority_expiry, carrier.HasField("authority_expiry"),
               f"{path}.authority_expiry", v)
    v.text(carrier.oauth_client_id, f"{path}.oauth_client_id", max_len=200)
    v.number(carrier.max_weight_kg, f"{path}.max_weight_kg", minimum=0, maximum=MAX_WEIGHT_KG)


def _callback_endpoint(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
    except ValueError:
        return False
    if not host or parts.username is not None:
        return False
    if parts.scheme == "https":
        return True
    try:
        return parts.scheme == "http" and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_stop(stop: object, path: str, v: Violations) -> None:
    address = stop.address  # type: ignore[attr-defined]
    if not known_country(address.region_code):
        v.add(f"{path}.address.region_code", "must be an ISO 3166-1 alpha-2 code such as DE",
              "UNKNOWN_COUNTRY")
    if not address.postal_code.strip() or len(address.postal_code) > 12:
        v.add(f"{path}.address.postal_code", "is required (at most 12 characters)", "REQUIRED")
    location = stop.location  # type: ignore[attr-defined]
    v.number(location.latitude, f"{path}.location.latitude", minimum=-90, maximum=90)
    v.number(location.longitude, f"{path}.location.longitude", minimum=-180, maximum=180)
    for i, window in enumerate(stop.time_windows):  # type: ignore[attr-defined]
        if window.end_time.ToNanoseconds() <= window.start_time.ToNanoseconds():
            v.add(f"{path}.time_windows[{i}].end_time", "must be after start_time")


def check_shipment(shipment: shipment_pb2.Shipment, v: Violations, path: str = "shipment"
                   ) -> None:
    for side in ("pickup", "delivery"):
        if not shipment.HasField(side):
            v.add(f"{path}.{side}", "is required", "REQUIRED")
        else:
            _check_stop(getattr(shipment, side), f"{path}.{side}", v)
    v.number(shipment.weight_kg, f"{path}.weight_kg", minimum=0, maximum=MAX_WEIGHT_KG,
             exclusive_minimum=True)
    if not 0 <= shipment.pallets <= 1000:
        v.add(f"{path}.pallets", "must be 0-1,000", "OUT_OF_RANGE")
    v.number(shipment.volume_m3, f"{path}.volume_m3", minimum=0, maximum=1000)
    v.number(shipment.distance_km, f"{path}.distance_km", minimum=0, maximum=40_000)
    v.enum(shipment.equipment, carrier_pb2.Equipment.DESCRIPTOR, f"{path}.equipment")
    v.enum(shipment.mode, carrier_pb2.Mode.DESCRIPTOR, f"{path}.mode")
    if shipment.service_level and not LEVEL.match(shipment.service_level):
        v.add(f"{path}.service_level", "must be 1-32 of A-Z, 0-9 and _")
    if shipment.order and not shipment.order.startswith("orders/"):
        v.add(f"{path}.order", "must look like orders/{order}")
    for i, extra in enumerate(shipment.accessorials):
        v.enum(extra.code, carrier_pb2.AccessorialCode.DESCRIPTOR,
               f"{path}.accessorials[{i}].code", allow_unspecified=False)
        if not 0 <= extra.minutes <= 7 * 24 * 60:
            v.add(f"{path}.accessorials[{i}].minutes", "must be 0-10,080", "OUT_OF_RANGE")


def check_cost_weight(has: bool, value: float, v: Violations) -> float | None:
    if not has:
        return None
    if not math.isfinite(value) or not 0 <= value <= 1:
        v.add("cost_weight", "must be from 0 to 1", "OUT_OF_RANGE")
        return None
    return value


def check_timeout(has: bool, value: duration_pb2.Duration, v: Violations) -> float | None:
    if not has:
        return None
    seconds = value.seconds + value.nanos / 1e9
    if not MIN_TIMEOUT_S <= seconds <= MAX_TIMEOUT_S:
        v.add("response_timeout", "must be from 1 s to 7 days", "OUT_OF_RANGE")
        return None
    return seconds
