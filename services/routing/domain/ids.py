"""Solver stop ids of a shipment, the one convention every routing module shares.

A shipment (an order `orders/abc` or an inline shipment id) WITHOUT a pickup stop is one
StopKind.VISIT stop whose id is the shipment key; a shipment WITH a pickup is a PICKUP/DELIVERY
pair with ids `{key}#pickup` and `{key}#delivery`. Keys therefore never contain `#`.
"""

from __future__ import annotations

PICKUP_SUFFIX = "#pickup"
DELIVERY_SUFFIX = "#delivery"


def stop_ids(key: str, has_pickup: bool) -> tuple[str, ...]:
    """The solver stop ids of shipment `key`: (pickup, delivery) or (visit,)."""
    if has_pickup:
        return (key + PICKUP_SUFFIX, key + DELIVERY_SUFFIX)
    return (key,)


def shipment_of(stop_id: str) -> str:
    """The shipment key a solver stop id belongs to."""
    return stop_id.removesuffix(PICKUP_SUFFIX).removesuffix(DELIVERY_SUFFIX)
