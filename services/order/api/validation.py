"""Field-level checks of order requests. Every problem is reported, each with its field path."""

from __future__ import annotations

import re

from google.protobuf import timestamp_pb2
from google.type import money_pb2, postal_address_pb2

from cartage.order.v1 import order_pb2
from cartage.type.v1 import party_pb2, stop_pb2
from services.kit.validation import Violations

MAX_LINE_ITEMS = 500
MAX_WINDOWS = 10
MAX_SKILLS = 20
MAX_WEIGHT_KG = 100_000.0
MAX_VOLUME_M3 = 1_000.0
MAX_QUANTITY = 1_000_000
MAX_SERVICE_NS = 24 * 3600 * 1_000_000_000
SKILL = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
REGION = re.compile(r"^[A-Z]{2}$")


def _nanos(stamp: timestamp_pb2.Timestamp) -> int:
    # Timestamp.ToNanoseconds is pure Python; this runs for every window of every order.
    return stamp.seconds * 1_000_000_000 + stamp.nanos


def check_order(order: order_pb2.Order, v: Violations, path: str = "order") -> None:
    v.text(order.external_reference, f"{path}.external_reference", required=True, max_len=100)
    _party(order, "shipper", v, path)
    _party(order, "consignee", v, path)
    _stop(order, "pickup", v, path)
    _stop(order, "delivery", v, path)
    if order.HasField("pickup") and order.HasField("delivery"):
        _pickup_before_delivery(order, v, path)
    if not order.line_items:
        v.add(f"{path}.line_items", "at least one line item is required", "REQUIRED")
    elif len(order.line_items) > MAX_LINE_ITEMS:
        v.add(f"{path}.line_items", f"at most {MAX_LINE_ITEMS} line items", "TOO_MANY")
    else:
        for i, line in enumerate(order.line_items):
            _line(line, v, f"{path}.line_items[{i}]")
    v.enum(order.priority, order_pb2.Priority.DESCRIPTOR, f"{path}.priority")
    v.enum(order.service_level, order_pb2.ServiceLevel.DESCRIPTOR, f"{path}.service_level")
    v.enum(order.mode, order_pb2.TransportMode.DESCRIPTOR, f"{path}.mode")
    if len(order.required_skills) > MAX_SKILLS:
        v.add(f"{path}.required_skills", f"at most {MAX_SKILLS} skills", "TOO_MANY")
    for i, skill in enumerate(order.required_skills):
        if not SKILL.match(skill):
            v.add(f"{path}.required_skills[{i}]",
                  "must be lower-case letters, digits and underscores (e.g. tail_lift)")
    v.text(order.notes, f"{path}.notes", max_len=10_000)


def _party(order: order_pb2.Order, name: str, v: Violations, path: str) -> None:
    field = f"{path}.{name}"
    if not order.HasField(name):
        v.add(field, "is required", "REQUIRED")
        return
    party: party_pb2.Party = getattr(order, name)
    v.text(party.name, f"{field}.name", required=True, max_len=200)
    v.text(party.contact_name, f"{field}.contact_name", max_len=200)
    v.text(party.phone, f"{field}.phone", max_len=50)
    v.text(party.email, f"{field}.email", max_len=320)
    if party.HasField("address"):
        _address(party.address, v, f"{field}.address", required=False)


def _address(address: postal_address_pb2.PostalAddress, v: Violations, field: str,
             *, required: bool) -> None:
    if required or address.region_code:
        if not REGION.match(address.region_code):
            v.add(f"{field}.region_code", "must be a two-letter CLDR region code such as DE")
    if required and not any(line.strip() for line in address.address_lines):
        v.add(f"{field}.address_lines", "at least one address line is required", "REQUIRED")
    if len(address.address_lines) > 5:
        v.add(f"{field}.address_lines", "at most 5 lines", "TOO_MANY")
    for i, line in enumerate(address.address_lines):
        v.text(line, f"{field}.address_lines[{i}]", max_len=200)
    v.text(address.postal_code, f"{field}.postal_code", max_len=20)
    v.text(address.locality, f"{field}.locality", max_len=100)


def _stop(order: order_pb2.Order, name: str, v: Violations, path: str) -> None:
    field = f"{path}.{name}"
    if not order.HasField(name):
        v.add(field, "is required", "REQUIRED")
        return
    stop: stop_pb2.Stop = getattr(order, name)
    if stop.HasField("address"):
        _address(stop.address, v, f"{field}.address", required=True)
    else:
        v.add(f"{field}.address", "is required", "REQUIRED")
    if not stop.HasField("location"):
        v.add(f"{field}.location", "is required", "REQUIRED")
    else:
        v.number(stop.location.latitude, f"{field}.location.latitude", minimum=-90, maximum=90)
        v.number(stop.location.longitude, f"{field}.location.longitude",
                 minimum=-180, maximum=180)
    _windows(stop, v, f"{field}.time_windows")
    if stop.HasField("service_duration"):
        duration = stop.service_duration
        if duration.seconds < 0 or duration.nanos < 0:
            v.add(f"{field}.service_duration", "must not be negative", "OUT_OF_RANGE")
        elif duration.seconds * 1_000_000_000 + duration.nanos > MAX_SERVICE_NS:
            v.add(f"{field}.service_duration", "must be at most 24 hours", "OUT_OF_RANGE")
    v.text(stop.contact_name, f"{field}.contact_name", max_len=200)
    v.text(stop.contact_phone, f"{field}.contact_phone", max_len=50)
    v.text(stop.instructions, f"{field}.instructions", max_len=2_000)


def _windows(stop: stop_pb2.Stop, v: Violations, field: str) -> None:
    if not stop.time_windows:
        v.add(field, "at least one time window is required", "REQUIRED")
        return
    if len(stop.time_windows) > MAX_WINDOWS:
        v.add(field, f"at most {MAX_WINDOWS} time windows", "TOO_MANY")
        return
    spans = []
    for i, window in enumerate(stop.time_windows):
        item = f"{field}[{i}]"
        if not window.HasField("start_time"):
            v.add(f"{item}.start_time", "is required", "REQUIRED")
        if not window.HasField("end_time"):
            v.add(f"{item}.end_time", "is required", "REQUIRED")
        if not (window.HasField("start_time") and window.HasField("end_time")):
            continue
        start, end = _nanos(window.start_time), _nanos(window.end_time)
        if end <= start:
            v.add(f"{item}.end_time", "must be after start_time", "WINDOW_ENDS_BEFORE_START")
        else:
            spans.append((start, end, i))
    spans.sort()
    for (_, end_a, _), (start_b, _, j) in zip(spans, spans[1:], strict=False):
        if start_b < end_a:
            v.add(f"{field}[{j}]", "overlaps another time window", "OVERLAPPING_WINDOWS")


def _pickup_before_delivery(order: order_pb2.Order, v: Violations, path: str) -> None:
    pickup = [_nanos(w.start_time) for w in order.pickup.time_windows
              if w.HasField("start_time")]
    delivery = [_nanos(w.end_time) for w in order.delivery.time_windows
                if w.HasField("end_time")]
    if pickup and delivery and max(delivery) <= min(pickup):
        v.add(f"{path}.delivery.time_windows",
              "every delivery window ends before the earliest pickup can start",
              "DELIVERY_BEFORE_PICKUP")


def _line(line: order_pb2.LineItem, v: Violations, field: str) -> None:
    v.text(line.sku, f"{field}.sku", required=True, max_len=100)
    v.text(line.description, f"{field}.description", max_len=500)
    v.number(line.quantity, f"{field}.quantity", minimum=1, maximum=MAX_QUANTITY)
    v.number(line.weight_kg, f"{field}.weight_kg", minimum=0, maximum=MAX_WEIGHT_KG,
             exclusive_minimum=True)
    v.number(line.volume_m3, f"{field}.volume_m3", minimum=0, maximum=MAX_VOLUME_M3)
    if line.HasField("declared_value"):
        _money(line.declared_value, v, f"{field}.declared_value")


def _money(money: money_pb2.Money, v: Violations, field: str) -> None:
    if not CURRENCY.match(money.currency_code):
        v.add(f"{field}.currency_code", "must be a three-letter ISO 4217 code such as EUR")
    if money.units < 0 or money.nanos < 0:
        v.add(field, "must not be negative", "OUT_OF_RANGE")
    if not -999_999_999 <= money.nanos <= 999_999_999:
        v.add(f"{field}.nanos", "must be between -999,999,999 and 999,999,999", "OUT_OF_RANGE")
