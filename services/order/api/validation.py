"""Field-level checks of order requests. Every problem is reported, each with its field path.

Checks are tables (field, limits) walked with a cheap test per field; only a field that fails
goes through `Violations`, which builds its path and message. A valid order, the common case,
therefore builds no strings: ~26 µs instead of ~37 µs for the benchmark's order, which
matters in a 1,000-order batch. What is left is mostly protobuf field access.
"""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import timestamp_pb2
from google.type import money_pb2, postal_address_pb2

from cartage.order.v1 import order_pb2
from cartage.type.v1 import party_pb2, stop_pb2
from services.kit import constraints
from services.kit.validation import Violations

# The limits are declared in the contracts (`(cartage.type.v1.constraints)`), which the gateway's
# OpenAPI document also reads; cross-field rules (windows, pickup before delivery) are here only.
_ORDER = order_pb2.Order.DESCRIPTOR
_LINE = order_pb2.LineItem.DESCRIPTOR
_PARTY = party_pb2.Party.DESCRIPTOR
_STOP = stop_pb2.Stop.DESCRIPTOR
MAX_LINE_ITEMS = constraints.max_items(_ORDER, "line_items")
MAX_WINDOWS = constraints.max_items(_STOP, "time_windows")
MAX_SKILLS = constraints.max_items(_ORDER, "required_skills")
MAX_SERVICE_NS = int(constraints.bounds(_STOP, "service_duration")[1] or 0) * 1_000_000_000
SKILL = constraints.pattern(_ORDER, "required_skills")
CURRENCY = constraints.pattern(_LINE, "declared_value.currency_code")
REGION = constraints.pattern(_STOP, "address.region_code")


def _nanos(stamp: timestamp_pb2.Timestamp) -> int:
    # Timestamp.ToNanoseconds is pure Python; this runs for every window of every order.
    return stamp.seconds * 1_000_000_000 + stamp.nanos


def _text_rules(message: Any, *names: str) -> tuple[tuple[str, int, bool], ...]:
    """(field, max characters, required) from the contract."""
    return tuple((name, constraints.max_length(message, name),
                  REQUIRED in message.fields_by_name[name].GetOptions().Extensions[
                      field_behavior_pb2.field_behavior]) for name in names)


def _number_rules(message: Any, *names: str) -> tuple[tuple[str, float, float, bool], ...]:
    """(field, minimum, maximum, minimum excluded) from the contract."""
    rules = []
    for name in names:
        minimum, maximum, exclusive = constraints.bounds(message, name)
        assert minimum is not None and maximum is not None, name
        rules.append((name, minimum, maximum, exclusive))
    return tuple(rules)


REQUIRED = field_behavior_pb2.FieldBehavior.REQUIRED
_ORDER_TEXT = _text_rules(_ORDER, "external_reference")
_PARTY_TEXT = _text_rules(_PARTY, "name", "contact_name", "phone", "email")
_ADDRESS_TEXT = tuple((name, constraints.max_length(_STOP, f"address.{name}"), False)
                      for name in ("postal_code", "locality"))
_STOP_TEXT = _text_rules(_STOP, "contact_name", "contact_phone", "instructions")
_LINE_TEXT = _text_rules(_LINE, "sku", "description")
_LINE_NUMBERS = _number_rules(_LINE, "quantity", "weight_kg", "volume_m3")
_ENUMS = (("priority", order_pb2.Priority.DESCRIPTOR),
          ("service_level", order_pb2.ServiceLevel.DESCRIPTOR),
          ("mode", order_pb2.TransportMode.DESCRIPTOR))
_ENUM_NUMBERS = {name: frozenset(d.values_by_number) for name, d in _ENUMS}
MAX_NOTES = constraints.max_length(_ORDER, "notes")
MAX_ADDRESS_LINE = constraints.max_length(_STOP, "address.address_lines")
MAX_ADDRESS_LINES = constraints.max_items(_STOP, "address.address_lines")


def _texts(message: Any, rules: tuple[tuple[str, int, bool], ...], v: Violations,
           field: str) -> None:
    for name, max_len, required in rules:
        value = getattr(message, name)
        if len(value) > max_len or (required and not value.strip()):
            v.text(value, f"{field}.{name}", required=required, max_len=max_len)


def check_order(order: order_pb2.Order, v: Violations, path: str = "order") -> None:
    _texts(order, _ORDER_TEXT, v, path)
    _party(order, "shipper", v, path)
    _party(order, "consignee", v, path)
    pickup = _stop(order, "pickup", v, path)
    delivery = _stop(order, "delivery", v, path)
    if pickup[0] is not None and delivery[1] is not None and delivery[1] <= pickup[0]:
        v.add(f"{path}.delivery.time_windows",
              "every delivery window ends before the earliest pickup can start",
              "DELIVERY_BEFORE_PICKUP")
    lines = order.line_items
    if not lines:
        v.add(f"{path}.line_items", "at least one line item is required", "REQUIRED")
    elif len(lines) > MAX_LINE_ITEMS:
        v.add(f"{path}.line_items", f"at most {MAX_LINE_ITEMS} line items", "TOO_MANY")
    else:
        for i, line in enumerate(lines):
            _line(line, v, f"{path}.line_items[{i}]")
    for name, descriptor in _ENUMS:
        if getattr(order, name) not in _ENUM_NUMBERS[name]:
            v.enum(getattr(order, name), descriptor, f"{path}.{name}")
    skills = order.required_skills
    if len(skills) > MAX_SKILLS:
        v.add(f"{path}.required_skills", f"at most {MAX_SKILLS} skills", "TOO_MANY")
    for i, skill in enumerate(skills):
        if not SKILL.match(skill):
            v.add(f"{path}.required_skills[{i}]",
                  "must be lower-case letters, digits and underscores (e.g. tail_lift)")
    if len(order.notes) > MAX_NOTES:
        v.text(order.notes, f"{path}.notes", max_len=MAX_NOTES)


def _party(order: order_pb2.Order, name: str, v: Violations, path: str) -> None:
    if not order.HasField(name):
        v.add(f"{path}.{name}", "is required", "REQUIRED")
        return
    party: party_pb2.Party = getattr(order, name)
    _texts(party, _PARTY_TEXT, v, f"{path}.{name}")
    if party.HasField("address"):
        _address(party.address, v, f"{path}.{name}", required=False)


def _address(address: postal_address_pb2.PostalAddress, v: Violations, owner: str,
             *, required: bool) -> None:
    """`owner` is the path of the message holding the address."""
    region = address.region_code
    if (required or region) and not REGION.match(region):
        v.add(f"{owner}.address.region_code", "must be a two-letter CLDR region code such as DE")
    lines = address.address_lines
    if required and not "".join(lines).strip():
        v.add(f"{owner}.address.address_lines", "at least one address line is required",
              "REQUIRED")
    if len(lines) > MAX_ADDRESS_LINES:
        v.add(f"{owner}.address.address_lines", f"at most {MAX_ADDRESS_LINES} lines", "TOO_MANY")
    if lines and max(map(len, lines)) > MAX_ADDRESS_LINE:
        for i, line in enumerate(lines):
            v.text(line, f"{owner}.address.address_lines[{i}]", max_len=MAX_ADDRESS_LINE)
    _texts(address, _ADDRESS_TEXT, v, f"{owner}.address")


Bounds = tuple[int | None, int | None]  # a stop's earliest window start, latest window end


def _stop(order: order_pb2.Order, name: str, v: Violations, path: str) -> Bounds:
    if not order.HasField(name):
        v.add(f"{path}.{name}", "is required", "REQUIRED")
        return None, None
    stop: stop_pb2.Stop = getattr(order, name)
    if stop.HasField("address"):
        _address(stop.address, v, f"{path}.{name}", required=True)
    else:
        v.add(f"{path}.{name}.address", "is required", "REQUIRED")
    if not stop.HasField("location"):
        v.add(f"{path}.{name}.location", "is required", "REQUIRED")
    else:
        location = stop.location
        if not -90 <= location.latitude <= 90:
            v.number(location.latitude, f"{path}.{name}.location.latitude",
                     minimum=-90, maximum=90)
        if not -180 <= location.longitude <= 180:
            v.number(location.longitude, f"{path}.{name}.location.longitude",
                     minimum=-180, maximum=180)
    bounds = _windows(stop, v, path, name)
    if stop.HasField("service_duration"):
        duration = stop.service_duration
        if duration.seconds < 0 or duration.nanos < 0:
            v.add(f"{path}.{name}.service_duration", "must not be negative", "OUT_OF_RANGE")
        elif duration.seconds * 1_000_000_000 + duration.nanos > MAX_SERVICE_NS:
            v.add(f"{path}.{name}.service_duration", "must be at most 24 hours", "OUT_OF_RANGE")
    _texts(stop, _STOP_TEXT, v, f"{path}.{name}")
    return bounds


def _windows(stop: stop_pb2.Stop, v: Violations, path: str, name: str) -> Bounds:
    windows = stop.time_windows
    if not windows:
        v.add(f"{path}.{name}.time_windows", "at least one time window is required", "REQUIRED")
        return None, None
    if len(windows) > MAX_WINDOWS:
        v.add(f"{path}.{name}.time_windows", f"at most {MAX_WINDOWS} time windows", "TOO_MANY")
        return (min((_nanos(w.start_time) for w in windows if w.HasField("start_time")),
                    default=None),
                max((_nanos(w.end_time) for w in windows if w.HasField("end_time")),
                    default=None))
    starts, ends, spans = [], [], []
    for i, window in enumerate(windows):
        start = _nanos(window.start_time) if window.HasField("start_time") else None
        end = _nanos(window.end_time) if window.HasField("end_time") else None
        if start is None or end is None:
            if start is None:
                v.add(f"{path}.{name}.time_windows[{i}].start_time", "is required", "REQUIRED")
            else:
                starts.append(start)
            if end is None:
                v.add(f"{path}.{name}.time_windows[{i}].end_time", "is required", "REQUIRED")
            else:
                ends.append(end)
            continue
        starts.append(start)
        ends.append(end)
        if end <= start:
            v.add(f"{path}.{name}.time_windows[{i}].end_time", "must be after start_time",
                  "WINDOW_ENDS_BEFORE_START")
        else:
            spans.append((start, end, i))
    if len(spans) > 1:
        spans.sort()
        for (_, end_a, _), (start_b, _, j) in zip(spans, spans[1:], strict=False):
            if start_b < end_a:
                v.add(f"{path}.{name}.time_windows[{j}]", "overlaps another time window",
                      "OVERLAPPING_WINDOWS")
    return min(starts, default=None), max(ends, default=None)


def _line(line: order_pb2.LineItem, v: Violations, field: str) -> None:
    _texts(line, _LINE_TEXT, v, field)
    for name, minimum, maximum, exclusive in _LINE_NUMBERS:
        value = getattr(line, name)
        if not (minimum < value <= maximum if exclusive else minimum <= value <= maximum):
            v.number(value, f"{field}.{name}", minimum=minimum, maximum=maximum,
                     exclusive_minimum=exclusive)
    if line.HasField("declared_value"):
        _money(line.declared_value, v, f"{field}.declared_value")


def _money(money: money_pb2.Money, v: Violations, field: str) -> None:
    if not CURRENCY.match(money.currency_code):
        v.add(f"{field}.currency_code", "must be a three-letter ISO 4217 code such as EUR")
    if money.units < 0 or money.nanos < 0:
        v.add(field, "must not be negative", "OUT_OF_RANGE")
    if not -999_999_999 <= money.nanos <= 999_999_999:
        v.add(f"{field}.nanos", "must be between -999,999,999 and 999,999,999", "OUT_OF_RANGE")
