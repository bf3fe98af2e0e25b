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
# The scope of an RPC anyone may call without a token (its own argument is the credential,
# as a signed download link is): its REST path skips jwt_authn and its route has no RBAC.
OPERATIONS = "google.longrunning.Operations"


@dataclass(frozen=True)
class Rule:
    scope: str
    rate_class: str
    # A larger REST body than the gateway's MAX_REQUEST_BODY for this RPC alone (a proof of
    # delivery carries photos as base64); None: the gateway's limit.
    max_request_bytes: int | None = None


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
    # Carrier: the shipper's carriers and cards, rate shopping, tendering; carriers answer
    # their tenders with their own client and `tenders.respond` (the service shows a carrier's
    # client only the tenders offered to it).
    "cartage.carrier.v1.CarrierService/CreateCarrier": Rule("carriers.write", WRITE),
    "cartage.carrier.v1.CarrierService/GetCarrier": Rule("carriers.read", READ),
    "cartage.carrier.v1.CarrierService/ListCarriers": Rule("carriers.read", READ),
    "cartage.carrier.v1.CarrierService/UpdateCarrier": Rule("carriers.write", WRITE),
    "cartage.carrier.v1.CarrierService/CreateRateCard": Rule("carriers.write", WRITE),
    "cartage.carrier.v1.CarrierService/ImportRateCard": Rule("carriers.write", WRITE),
    "cartage.carrier.v1.CarrierService/GetRateCard": Rule("carriers.read", READ),
    "cartage.carrier.v1.CarrierService/ListRateCards": Rule("carriers.read", READ),
    "cartage.carrier.v1.CarrierService/DeleteRateCard": Rule("carriers.write", WRITE),
    "cartage.carrier.v1.CarrierService/CreateShipment": Rule("tenders.write", WRITE),
    "cartage.carrier.v1.CarrierService/GetShipment": Rule("rates.read", READ),
    "cartage.carrier.v1.CarrierService/ListShipments": Rule("rates.read", READ),
    "cartage.carrier.v1.CarrierService/CancelShipment": Rule("tenders.write", WRITE),
    "cartage.carrier.v1.CarrierService/QuoteRates": Rule("rates.read", READ),
    "cartage.carrier.v1.CarrierService/TenderShipment": Rule("tenders.write", WRITE),
    "cartage.carrier.v1.CarrierService/GetTender": Rule("tenders.respond", READ),
    "cartage.carrier.v1.CarrierService/ListTenders": Rule("tenders.respond", READ),
    "cartage.carrier.v1.CarrierService/AcceptTender": Rule("tenders.respond", WRITE),
    "cartage.carrier.v1.CarrierService/RejectTender": Rule("tenders.respond", WRITE),
    "cartage.carrier.v1.CarrierService/ListLaneScorecards": Rule("carriers.read", READ),
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
    # Documents: generated paper, proofs of delivery, signed links, the tamper-evident chain.
    "cartage.document.v1.DocumentService/GenerateDocument": Rule("documents.write", WRITE),
    "cartage.document.v1.DocumentService/BatchGenerateDocuments": Rule("documents.write", WRITE),
    # A signature and 10 photos of up to 10 MiB, base64 in JSON (4/3 of the bytes) and the rest.
    "cartage.document.v1.DocumentService/CaptureProofOfDelivery": Rule(
        "documents.write", WRITE, max_request_bytes=150 * 1024 * 1024),
    "cartage.document.v1.DocumentService/GetDocument": Rule("documents.read", READ),
    "cartage.document.v1.DocumentService/ListDocuments": Rule("documents.read", READ),
    "cartage.document.v1.DocumentService/GetDocumentContent": Rule("documents.read", READ),
    "cartage.document.v1.DocumentService/VoidDocument": Rule("documents.write", WRITE),
    "cartage.document.v1.DocumentService/CreateDownloadLink": Rule("documents.read", WRITE),
    "cartage.document.v1.DocumentService/VerifyDocumentChain": Rule("documents.read", READ),
    # The signed link is the credential: served without a token (PUBLIC below).
    "cartage.document.v1.DocumentService/DownloadDocument": Rule("documents.read", READ),
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
    # A browser fetching a document through its signed download link.
    "cartage.document.v1.DocumentService/DownloadDocument": Bucket(5, 1),
})


def all_scopes() -> list[str]:
    return sorted({rule.scope for rule in POLICY.values()})
