"""The limits the contracts declare on fields (`(cartage.type.v1.constraints)`), for the
validators. The gateway's OpenAPI document reads the same options, so what a partner is told and
what the service refuses come from one place (proto/cartage/type/v1/constraints.proto)."""

from __future__ import annotations

import re
from functools import cache

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from cartage.type.v1 import constraints_pb2

FieldConstraints = constraints_pb2.FieldConstraints


@cache
def of(message: Descriptor, field: str) -> FieldConstraints:
    """The declared limits of `message.field` (`field` may be `address.region_code`: a nested
    entry of `address`'s `fields`); empty when none are declared."""
    head, _, rest = field.partition(".")
    options = message.fields_by_name[head].GetOptions()
    found = (options.Extensions[constraints_pb2.constraints]
             if options.HasExtension(constraints_pb2.constraints) else FieldConstraints())
    while rest:
        head, _, rest = rest.partition(".")
        found = found.fields[head] if head in found.fields else FieldConstraints()
    return found


def max_length(message: Descriptor, field: str) -> int:
    limit = of(message, field).max_length
    if not limit:
        raise LookupError(f"{message.full_name}.{field} declares no max_length")
    return limit


def max_items(message: Descriptor, field: str) -> int:
    limit = of(message, field).max_items
    if not limit:
        raise LookupError(f"{message.full_name}.{field} declares no max_items")
    return limit


def pattern(message: Descriptor, field: str) -> re.Pattern[str]:
    declared = of(message, field).pattern
    if not declared:
        raise LookupError(f"{message.full_name}.{field} declares no pattern")
    return re.compile(declared)


def bounds(message: Descriptor, field: str) -> tuple[float | None, float | None, bool]:
    """(minimum, maximum, minimum excluded)."""
    found = of(message, field)
    return (found.minimum if found.HasField("minimum") else None,
            found.maximum if found.HasField("maximum") else None, found.exclusive_minimum)


_NOT_UPDATABLE = frozenset({field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IDENTIFIER,
                            field_behavior_pb2.IMMUTABLE})


def behaviors(field: FieldDescriptor) -> frozenset[int]:
    """The field's `google.api.field_behavior` values."""
    return frozenset(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def updatable(message: Descriptor) -> frozenset[str]:
    """The fields an update mask may name (AIP-134): all but the output-only, identifier and
    immutable ones and the etag, which is a precondition, not content."""
    return frozenset(f.name for f in message.fields if f.name != "etag"
                     and not behaviors(f) & _NOT_UPDATABLE)
