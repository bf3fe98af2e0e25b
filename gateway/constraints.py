"""JSON Schema keywords from the contracts' annotations, for the OpenAPI document.

The services' validators read the same annotations (services/kit/constraints.py), so the
document says what the services refuse:

- `google.api.field_behavior`: REQUIRED → the object's `required` (and a non-blank string, as
  the validators count a blank text as missing; a required enum without its zero value);
  OUTPUT_ONLY and IDENTIFIER → `readOnly` (set by the server or by the path); what an update
  mask may name: every field but those, IMMUTABLE ones and the etag.
- `(cartage.type.v1.constraints)`: `maxLength`, `pattern`, `minimum` / `maximum` /
  `exclusiveMinimum`, `minItems` / `maxItems`; `fields` and `required` for the fields of a
  message of another package (google.type.PostalAddress, LatLng, Money). On a Duration,
  `minimum` / `maximum` are seconds, written as a `pattern` on its JSON string.
- A string that references a resource (`google.api.resource_reference`) gets the pattern of
  that resource's name.
"""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2, resource_pb2
from google.protobuf import descriptor_pb2

from cartage.type.v1 import constraints_pb2

F = descriptor_pb2.FieldDescriptorProto
FieldConstraints = constraints_pb2.FieldConstraints
REQUIRED = field_behavior_pb2.REQUIRED
READ_ONLY = frozenset({field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IDENTIFIER})
NOT_UPDATABLE = READ_ONLY | {field_behavior_pb2.IMMUTABLE}
_INT64 = {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64}
_INT32 = {F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32}
_UINT32 = {F.TYPE_UINT32, F.TYPE_FIXED32}
_NUMBERS = {F.TYPE_DOUBLE, F.TYPE_FLOAT} | _INT32 | _UINT32


def behaviors(field: F) -> frozenset[int]:
    return frozenset(field.options.Extensions[field_behavior_pb2.field_behavior])


def required(field: F) -> bool:
    return REQUIRED in behaviors(field)


def read_only(field: F) -> bool:
    return bool(behaviors(field) & READ_ONLY)


def declared(field: F) -> FieldConstraints:
    options = field.options
    return (options.Extensions[constraints_pb2.constraints]
            if options.HasExtension(constraints_pb2.constraints) else FieldConstraints())


def updatable(message: descriptor_pb2.DescriptorProto) -> list[descriptor_pb2.FieldDescriptorProto]:
    """The fields an update mask may name (as services/kit/constraints.updatable says)."""
    return [f for f in message.field if f.name != "etag" and not behaviors(f) & NOT_UPDATABLE]


def resource_type(field: F) -> str:
    options = field.options
    if options.HasExtension(resource_pb2.resource_reference):
        return str(options.Extensions[resource_pb2.resource_reference].type)
    return ""


def resource_of(message: descriptor_pb2.DescriptorProto) -> str:
    options = message.options
    if options.HasExtension(resource_pb2.resource):
        return str(options.Extensions[resource_pb2.resource].type)
    return ""


def _upto(n: int, *, positive: bool = False) -> str:
    """A regex for the decimal integers 0 (1 if `positive`) to `n`, without leading zeros."""
    s = str(n)
    first = 1 if positive else 0
    if len(s) == 1:
        return f"[{first}-{n}]"
    alternatives = [f"[{first}-9]"]
    alternatives += [f"[1-9][0-9]{{{k - 1}}}" for k in range(2, len(s))]
    for i, digit in enumerate(s):
        low, high = (1 if i == 0 else 0), int(digit) - 1
        if high >= low:
            rest = len(s) - i - 1
            alternatives.append(s[:i] + f"[{low}-{high}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(s)
    return "(?:" + "|".join(alternatives) + ")"


def duration_pattern(found: FieldConstraints) -> str:
    """The JSON form of a Duration (`1.5s`) within the declared bounds, in seconds (whole
    bounds; a bound of 0 or none below means not negative)."""
    if not found.HasField("maximum"):
        return r"^-?[0-9]{1,11}(\.[0-9]{1,9})?s$"
    top = int(found.maximum)
    fraction = r"(?:\.[0-9]{1,9})?"
    if found.exclusive_minimum:
        below = rf"0\.[0-9]{{0,8}}[1-9]|{_upto(top - 1, positive=True)}{fraction}"
    else:
        below = f"{_upto(top - 1)}{fraction}"
    return rf"^(?:{below}|{top}(?:\.0{{1,9}})?)s$"


def keywords(field: F, found: FieldConstraints, schema: dict[str, Any],
             name_patterns: dict[str, str]) -> None:
    """Add the keywords of one field's constraints to its schema (an item's, for a repeated
    field, goes to `items`)."""
    if field.label == F.LABEL_REPEATED and schema.get("type") == "array":
        if found.min_items:
            schema["minItems"] = found.min_items
        if found.max_items:
            schema["maxItems"] = found.max_items
        target = schema["items"]
    else:
        target = schema
    if "$ref" in target:
        return
    if field.type == F.TYPE_STRING:
        if found.max_length:
            target["maxLength"] = found.max_length
        pattern = found.pattern or name_patterns.get(resource_type(field), "")
        if pattern:
            target["pattern"] = pattern
        if required(field) and field.label != F.LABEL_REPEATED:
            target["minLength"] = 1
            target.setdefault("pattern", r"\S")  # the validators count a blank text as missing
    elif field.type in _NUMBERS:
        if found.HasField("minimum"):
            if found.exclusive_minimum:
                target["exclusiveMinimum"] = _number(found.minimum)
                target.pop("minimum", None)
            else:
                target["minimum"] = _number(found.minimum)
        if found.HasField("maximum"):
            target["maximum"] = _number(found.maximum)
    elif field.type in _INT64:
        nonnegative = found.HasField("minimum") and found.minimum >= 0
        target["pattern"] = "^[0-9]{1,18}$" if nonnegative else "^-?[0-9]{1,18}$"
    elif field.type_name == ".google.protobuf.Duration" and (
            found.HasField("minimum") or found.HasField("maximum")):
        target["pattern"] = duration_pattern(found)


def _number(value: float) -> int | float:
    return int(value) if value == int(value) else value


def int_range(field: F) -> dict[str, int]:
    if field.type in _INT32:
        return {"minimum": -(2 ** 31), "maximum": 2 ** 31 - 1}
    if field.type in _UINT32:
        return {"minimum": 0, "maximum": 2 ** 32 - 1}
    return {}
