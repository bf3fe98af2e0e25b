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
    # Routing: the fleet, plans, and the decisions a dispatcher (or the autonomy policy) takes.
    "cartage.routing.v1.RoutingService/CreateVehicle": Rule("fleet.write", WRITE),
    "cartage.routing.v1.RoutingService/GetVehicle": Rule("fleet.read", READ),
    "cartage.routing.v1.RoutingService/ListVehicles": Rule("fleet.read", READ),
    "cartage.routing.v1.RoutingService/UpdateVehicle": Rule("fleet.write", WRITE),
    "cartage.routing.v1.RoutingService/DeleteVehicle": Rule("fleet.write", WRITE),
    "cartage.routing.v1.RoutingService/SetVehicleStatus": Rule("fleet.write", WRITE),
    "cartage.routing.v1.RoutingService/PlanRoutes": Rule("routes.write", WRITE),
    "cartage.routing.v1.RoutingService/ReplanRoutes": Rule("routes.write", WRITE),
    "cartage.routing.v1.RoutingService/GetRoutePlan": Rule("routes.read", READ),
    "cartage.routing.v1.RoutingService/ListRoutePlans": Rule("routes.read", READ),
    "cartage.routing.v1.RoutingService/WatchRoutePlan": Rule("routes.read", READ),
    "cartage.routing.v1.RoutingService/ExportRoutePlan": Rule("routes.read", READ),
    "cartage.routing.v1.RoutingService/ReportTrafficIncident": Rule("routes.write", WRITE),
    "cartage.routing.v1.RoutingService/ListTrafficIncidents": Rule("routes.read", READ),
    "cartage.routing.v1.RoutingService/GetDecision": Rule("routes.read", READ),
    "cartage.routing.v1.RoutingService/ListDecisions": Rule("routes.read", READ),
    "cartage.routing.v1.RoutingService/ApproveDecision": Rule("decisions.approve", WRITE),
    "cartage.routing.v1.RoutingService/RejectDecision": Rule("decisions.approve", WRITE),
    "cartage.routing.v1.RoutingService/GetAutonomyPolicy": Rule("routes.read", READ),
    "cartage.routing.v1.RoutingService/UpdateAutonomyPolicy": Rule("decisions.approve", WRITE),
    # Long-running operations (PlanRoutes, ReplanRoutes); the routing service serves them.
    "google.longrunning.Operations/GetOperation": Rule("routes.read", READ),
    "google.longrunning.Operations/ListOperations": Rule("routes.read", READ),
    "google.longrunning.Operations/WaitOperation": Rule("routes.read", READ),
    "google.longrunning.Operations/CancelOperation": Rule("routes.write", WRITE),
    "google.longrunning.Operations/DeleteOperation": Rule("routes.write", WRITE),
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
