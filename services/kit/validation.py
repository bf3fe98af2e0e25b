"""Collecting field violations, so one bad request reports every problem at once."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from google.protobuf.descriptor import EnumDescriptor

from services.kit.errors import FieldViolation, InvalidArgument

#: Server-assigned resource ids (orders, plans, decisions, operations, ...): 32 hex characters.
RESOURCE_ID = re.compile(r"^[0-9a-f]{32}$")


class Violations:
    """Accumulates `FieldViolation`s; `raise_if_any()` turns them into one InvalidArgument."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str, reason: str = "INVALID") -> None:
        self._items.append(FieldViolation(field, description, reason))

    def extend(self, items: Iterable[FieldViolation]) -> None:
        self._items.extend(items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> tuple[FieldViolation, ...]:
        return tuple(self._items)

    def raise_if_any(self, message: str = "the request has invalid fields") -> None:
        if self._items:
            summary = "; ".join(f"{v.field}: {v.description}" for v in self._items[:5])
            more = f" (and {len(self._items) - 5} more)" if len(self._items) > 5 else ""
            raise InvalidArgument(f"{message}: {summary}{more}", violations=self._items)

    # Small checks used by every service's request validation.

    def require(self, condition: bool, field: str, description: str) -> bool:
        if not condition:
            self.add(field, description, "REQUIRED" if "required" in description else "INVALID")
        return condition

    def text(
        self, value: str, field: str, *, required: bool = False, max_len: int = 1000
    ) -> None:
        if required and not value.strip():
            self.add(field, "is required", "REQUIRED")
        elif len(value) > max_len:
            self.add(field, f"must be at most {max_len} characters (got {len(value)})", "TOO_LONG")

    def number(
        self,
        value: float,
        field: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            self.add(field, "must be a finite number", "OUT_OF_RANGE")
            return
        if minimum is not None:
            too_small = value <= minimum if exclusive_minimum else value < minimum
            if too_small:
                relation = "greater than" if exclusive_minimum else "at least"
                self.add(field, f"must be {relation} {minimum:g} (got {value:g})", "OUT_OF_RANGE")
                return
        if maximum is not None and value > maximum:
            self.add(field, f"must be at most {maximum:g} (got {value:g})", "OUT_OF_RANGE")

    def enum(
        self, value: int, descriptor: EnumDescriptor, field: str, *, allow_unspecified: bool = True
    ) -> None:
        """Proto3 enums are open: an unknown number parses fine, so it must be checked here."""
        if value not in descriptor.values_by_number:
            names = ", ".join(v.name for v in descriptor.values if v.number != 0)
            self.add(field, f"unknown value {value}; expected one of {names}", "UNKNOWN_ENUM")
        elif value == 0 and not allow_unspecified:
            self.add(field, "is required", "REQUIRED")

    def resource_id(self, name: str, collection: str, field: str = "name") -> str:
        """The server-assigned id inside `{collection}/{id}`, or a violation on `field`."""
        resource_id = name.removeprefix(f"{collection}/")
        if not name.startswith(f"{collection}/") or not RESOURCE_ID.match(resource_id):
            self.add(field, f"must look like {collection}/{{32 hex characters}}", "INVALID_NAME")
        return resource_id


def parse_name(name: str, collection: str, field: str = "name") -> str:
    """`Violations.resource_id` for a request whose only field to check is the name."""
    v = Violations()
    resource_id = v.resource_id(name, collection, field)
    v.raise_if_any()
    return resource_id
