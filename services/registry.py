"""Every Cartage service, once: the one place that says which services exist.

`make run` (services.stack), the gateway (Envoy routes and clusters, OpenAPI, the Operations
routing, the policy's Operations scopes) and the end-to-end fixtures read this tuple, so adding
a service (carrier next) is one `ServiceEntry` here plus its own package, contracts and policy
lines (gateway/policy.py) — nothing else names it.

Plain strings only: importing this module imports no service, no generated code and no gRPC,
so anything may read it cheaply. The kit (services/kit) never imports it: the kit knows no
service.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperationScopes:
    """The scopes `google.longrunning.Operations` calls need when this service owns the
    operation: `read` for Get/List/Wait, `write` for Cancel/Delete."""

    read: str
    write: str


@dataclass(frozen=True)
class ServiceEntry:
    name: str  # `order`: the domain, the `operations/{name}/…` segment, Envoy's `svc_{name}`
    package: str  # `services.order`: started as `python -m {package}`
    default_port: int  # the gRPC port `make run` prefers
    env_prefix: str  # `ORDER`: {prefix}_GRPC_PORT (make run) and {prefix}_GRPC_ADDRESS (service)
    proto_package: str  # `cartage.order.v1`
    grpc_services: tuple[str, ...]  # its own gRPC services (full names)
    # Serves google.longrunning.Operations for its own operations (`operations/{name}/{id}`);
    # then `operation_scopes` says which scopes those calls need.
    serves_operations: bool = False
    operation_scopes: OperationScopes | None = None
    # Its workers can each listen on their own unix socket ({prefix}_WORKER_SOCKET_DIR), which
    # Envoy then balances per request (services.order.settings.worker_sockets).
    worker_sockets: bool = False
    # Env vars it reads from a deployment's Secrets, NAME -> the chart's `secrets` reference
    # (deploy/k8s/values.yaml): secrets shared by every replica, never in values.
    secret_env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.serves_operations and self.operation_scopes is None:
            raise ValueError(f"{self.name} serves operations but declares no operation_scopes")

    @property
    def port_env(self) -> str:
        return f"{self.env_prefix}_GRPC_PORT"

    @property
    def address_env(self) -> str:
        return f"{self.env_prefix}_GRPC_ADDRESS"

    @property
    def workers_env(self) -> str:
        return f"{self.env_prefix}_WORKERS"

    @property
    def socket_dir_env(self) -> str:
        return f"{self.env_prefix}_WORKER_SOCKET_DIR"

    @property
    def cluster(self) -> str:
        """The Envoy cluster of its upstream."""
        return f"svc_{self.name}"


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry(
        name="order", package="services.order", default_port=50051, env_prefix="ORDER",
        proto_package="cartage.order.v1", grpc_services=("cartage.order.v1.OrderService",),
        worker_sockets=True),
    ServiceEntry(
        name="routing", package="services.routing", default_port=50052, env_prefix="ROUTING",
        proto_package="cartage.routing.v1",
        grpc_services=("cartage.routing.v1.RoutingService",),
        serves_operations=True,
        operation_scopes=OperationScopes(read="routes.read", write="routes.write")),
    ServiceEntry(
        name="carrier", package="services.carrier", default_port=50053, env_prefix="CARRIER",
        proto_package="cartage.carrier.v1",
        grpc_services=("cartage.carrier.v1.CarrierService",)),
    ServiceEntry(
        name="tracking", package="services.tracking", default_port=50054, env_prefix="TRACKING",
        proto_package="cartage.tracking.v1",
        grpc_services=("cartage.tracking.v1.TrackingService",
                       "cartage.tracking.v1.WebhookService"),
        # ReplayWebhookEvents' operations, `operations/tracking/{id}`.
        serves_operations=True,
        operation_scopes=OperationScopes(read="webhooks.read", write="webhooks.write"),
        # Every replica signs and checks tracking links with the same key, and encrypts and
        # decrypts partner webhook secrets with the same key.
        secret_env=(("TRACKING_LINK_SECRET", "trackingLinkSecret"),
                    ("TRACKING_WEBHOOK_SECRET_KEY", "webhookSecretKey"))),
    ServiceEntry(
        name="document", package="services.document", default_port=50055,
        env_prefix="DOCUMENT", proto_package="cartage.document.v1",
        grpc_services=("cartage.document.v1.DocumentService",),
        serves_operations=True,
        operation_scopes=OperationScopes(read="documents.read", write="documents.write"),
        # The key of download links and chain heads: one for every replica.
        secret_env=(("DOCUMENT_SIGNING_KEY", "documentSigningKey"),)),
)

#: The owner of operations named the old way, `operations/{id}` (before operation names
#: carried their service), and of a ListOperations that names no service (REST's
#: `GET /v1/operations`, whose HTTP rule fixes the name to `operations`).
DEFAULT_OPERATIONS_OWNER = "routing"


def names() -> tuple[str, ...]:
    return tuple(entry.name for entry in SERVICES)


def get(name: str) -> ServiceEntry:
    for entry in SERVICES:
        if entry.name == name:
            return entry
    raise KeyError(f"no service named {name!r} in services.registry")


def find(name: str) -> ServiceEntry | None:
    for entry in SERVICES:
        if entry.name == name:
            return entry
    return None


def by_proto_package(proto_package: str) -> ServiceEntry | None:
    for entry in SERVICES:
        if entry.proto_package == proto_package:
            return entry
    return None


def operations_owners() -> tuple[ServiceEntry, ...]:
    """The services that serve google.longrunning.Operations, in registry order."""
    return tuple(entry for entry in SERVICES if entry.serves_operations)


def _check(entries: tuple[ServiceEntry, ...]) -> None:
    seen: set[str] = set()
    for entry in entries:
        for key in (entry.name, f"port:{entry.default_port}", f"env:{entry.env_prefix}"):
            if key in seen:
                raise ValueError(f"services.registry: {key} appears twice")
            seen.add(key)
    owner = find(DEFAULT_OPERATIONS_OWNER)
    if owner is None or not owner.serves_operations:
        raise ValueError("DEFAULT_OPERATIONS_OWNER must name a service that serves operations")


_check(SERVICES)
