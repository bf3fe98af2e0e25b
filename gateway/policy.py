"""The one hand-written table of the edge: which scope each RPC needs and its rate-limit class.

Everything else in Envoy's config is generated from the contracts. An RPC without a line here
is still routed, but every call to it is refused with 403 (deny by default), so adding an RPC
to a proto exposes nothing until someone decides who may call it; a test
(tests/integration/test_gateway_envoy_config.py) fails the build on such an RPC.

google.longrunning.Operations is served by every service that serves operations (the
registry's `serves_operations`), and a call needs the scope of the service that owns the
operation: its lines are keyed `google.longrunning.Operations/<Method>@<service>` and made
from the registry's `operation_scopes` with OPERATION_METHODS below, so a new service that
serves operations declares its scopes in its registry entry, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services import registry
from services.registry import ServiceEntry

if TYPE_CHECKING:
    from gateway.contracts import Rpc

READ, WRITE = "read", "write"
OPERATIONS = "google.longrunning.Operations"


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
    # Tracking: positions and milestones in, the tracking record and links out.
    "cartage.tracking.v1.TrackingService/RecordPositions": Rule("tracking.write", WRITE),
    "cartage.tracking.v1.TrackingService/BatchRecordPositions": Rule("tracking.write", WRITE),
    "cartage.tracking.v1.TrackingService/RecordMilestone": Rule("tracking.write", WRITE),
    "cartage.tracking.v1.TrackingService/ListMilestones": Rule("tracking.read", READ),
    "cartage.tracking.v1.TrackingService/GetTracking": Rule("tracking.read", READ),
    "cartage.tracking.v1.TrackingService/WatchTracking": Rule("tracking.read", READ),
    "cartage.tracking.v1.TrackingService/CreateGeofence": Rule("geofences.write", WRITE),
    "cartage.tracking.v1.TrackingService/GetGeofence": Rule("tracking.read", READ),
    "cartage.tracking.v1.TrackingService/ListGeofences": Rule("tracking.read", READ),
    "cartage.tracking.v1.TrackingService/DeleteGeofence": Rule("geofences.write", WRITE),
    "cartage.tracking.v1.TrackingService/CreateTrackingLink": Rule("tracking.write", WRITE),
    "cartage.tracking.v1.TrackingService/RevokeTrackingLink": Rule("tracking.write", WRITE),
    # The public link view: the signed token in the path is the authorization (PUBLIC below).
    "cartage.tracking.v1.TrackingService/GetSharedTracking": Rule("tracking.read", READ),
    # Partner webhooks: endpoints, their secrets and deliveries.
    "cartage.tracking.v1.WebhookService/CreateWebhookEndpoint": Rule("webhooks.write", WRITE),
    "cartage.tracking.v1.WebhookService/GetWebhookEndpoint": Rule("webhooks.read", READ),
    "cartage.tracking.v1.WebhookService/ListWebhookEndpoints": Rule("webhooks.read", READ),
    "cartage.tracking.v1.WebhookService/UpdateWebhookEndpoint": Rule("webhooks.write", WRITE),
    "cartage.tracking.v1.WebhookService/DeleteWebhookEndpoint": Rule("webhooks.write", WRITE),
    "cartage.tracking.v1.WebhookService/RotateWebhookSecret": Rule("webhooks.write", WRITE),
    "cartage.tracking.v1.WebhookService/ListWebhookDeliveries": Rule("webhooks.read", READ),
    "cartage.tracking.v1.WebhookService/RetryWebhookDelivery": Rule("webhooks.write", WRITE),
    "cartage.tracking.v1.WebhookService/SendTestWebhookEvent": Rule("webhooks.write", WRITE),
    "cartage.tracking.v1.WebhookService/ReplayWebhookEvents": Rule("webhooks.write", WRITE),
}


# RPCs served WITHOUT a bearer token: jwt_authn skips them, any caller passes the scope check,
# and they carry no client identity. Each has its own token bucket per caller address instead of
# the per-client one (their policy line's scope and class are then not used). Only RPCs whose
# request carries its own authorization belong here (a tracking link's signed token).
PUBLIC: dict[str, Bucket] = {}


# Which of an owner's two operation scopes each Operations method needs.
OPERATION_METHODS: dict[str, str] = {
    "GetOperation": READ,
    "ListOperations": READ,
    "WaitOperation": READ,
    "CancelOperation": WRITE,
    "DeleteOperation": WRITE,
}


def operation_key(method: str, owner: str) -> str:
    """The policy key of an Operations method on the operations `owner` serves."""
    return f"{OPERATIONS}/{method}@{owner}"


def operation_rules(services: tuple[ServiceEntry, ...] = registry.SERVICES) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for entry in services:
        if not entry.serves_operations or entry.operation_scopes is None:
            continue
        for method, rate_class in OPERATION_METHODS.items():
            scope = (entry.operation_scopes.read if rate_class == READ
                     else entry.operation_scopes.write)
            rules[operation_key(method, entry.name)] = Rule(scope, rate_class)
    return rules


POLICY.update(operation_rules())


def rules_of(rpc: Rpc, policy: Mapping[str, Rule] | None = None
             ) -> list[tuple[str, str, Rule | None]]:
    """(owner, policy key, its line or None) for each service that serves `rpc`: one for a
    service's own RPC, one per operations owner for an Operations method."""
    table = POLICY if policy is None else policy
    path = rpc.path.lstrip("/")
    if rpc.shared:
        return [(owner, operation_key(rpc.method, owner),
                 table.get(operation_key(rpc.method, owner))) for owner in rpc.owners]
    return [(rpc.domain, path, table.get(path))]


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


PUBLIC.update({
    # A consignee opening a tracking link: a few requests per second per address.
    "cartage.tracking.v1.TrackingService/GetSharedTracking": Bucket(5, 1),
})


def all_scopes() -> list[str]:
    return sorted({rule.scope for rule in POLICY.values()})
