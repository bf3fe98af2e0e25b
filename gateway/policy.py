"""The one hand-written table of the edge: which scope each RPC needs and its rate-limit class.

Everything else in Envoy's config is generated from the contracts. An RPC without a line here
is still routed, but every call to it is refused with 403 (deny by default), so adding an RPC
to a proto exposes nothing until someone decides who may call it.
"""

from __future__ import annotations

from dataclasses import dataclass

READ, WRITE = "read", "write"


@dataclass(frozen=True)
class Rule:
    scope: str
    rate_class: str


POLICY: dict[str, Rule] = {
    "cartage.order.v1.OrderService/CreateOrder": Rule("orders.write", WRITE),
    "cartage.order.v1.OrderService/BatchCreateOrders": Rule("orders.write", WRITE),
    "cartage.order.v1.OrderService/GetOrder": Rule("orders.read", READ),
    "cartage.order.v1.OrderService/ListOrders": Rule("orders.read", READ),
    "cartage.order.v1.OrderService/UpdateOrder": Rule("orders.write", WRITE),
    "cartage.order.v1.OrderService/CancelOrder": Rule("orders.write", WRITE),
    "cartage.order.v1.OrderService/ReleaseOrder": Rule("orders.write", WRITE),
}


@dataclass(frozen=True)
class Bucket:
    """A token bucket per client: `tokens` requests, refilled every `seconds`."""

    tokens: int
    seconds: int


# Per rate-limit tier (a client's registry entry, carried in its token) and class.
TIERS: dict[str, dict[str, Bucket]] = {
    "standard": {READ: Bucket(100, 1), WRITE: Bucket(50, 1)},
    "premium": {READ: Bucket(1000, 1), WRITE: Bucket(500, 1)},
    "internal": {READ: Bucket(10_000, 1), WRITE: Bucket(5_000, 1)},
}


def all_scopes() -> list[str]:
    return sorted({rule.scope for rule in POLICY.values()})
