"""What the contracts say about the edge's surface: the RPCs of every service in the registry
(services.registry), plus google.longrunning.Operations, which every service that
`serves_operations` serves for its own operations, with their `google.api.http` rules.

Read from the descriptor set `proto/generate.py` writes (build/cartage.binpb), so the Envoy
config, the strict-JSON check and the OpenAPI document can never drift from the protos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, field_behavior_pb2, http_pb2, resource_pb2
from google.protobuf import descriptor_pb2

from cartage.type.v1 import constraints_pb2
from services import registry
from services.registry import ServiceEntry

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTOR_SET = ROOT / "build" / "cartage.binpb"
HTTP_VERBS = ("get", "put", "post", "delete", "patch")
# Imported so that their options are parsed as extensions when the descriptor set is loaded.
_OPTIONS = (field_behavior_pb2, resource_pb2, constraints_pb2)

#: The one standard service several Cartage services serve (each its own operations, named
#: `operations/{service}/{id}`); the gateway routes each call by the name in its request.
OPERATIONS = "google.longrunning.Operations"


@dataclass(frozen=True)
class HttpBinding:
    verb: str  # upper case
    template: str  # e.g. /v1/{name=orders/*}
    body: str


@dataclass(frozen=True)
class Rpc:
    package: str
    service: str
    method: str
    input_type: str
    output_type: str
    bindings: tuple[HttpBinding, ...]  # empty: native gRPC only
    comment: str
    # The services (registry names) that serve it: one, except for Operations (every service
    # that serves operations; the gateway picks one per call from the operation's name).
    owners: tuple[str, ...]
    server_streaming: bool = False
    client_streaming: bool = False
    name_field: int = 0  # the number of the request's `name` field (0: none)

    @property
    def domain(self) -> str:
        """The service that serves it (the first owner for Operations)."""
        return self.owners[0]

    @property
    def shared(self) -> bool:
        """Served by several services, routed per call (google.longrunning.Operations)."""
        return self.service_name == OPERATIONS

    @property
    def streaming(self) -> bool:
        return self.server_streaming or self.client_streaming

    @property
    def service_name(self) -> str:
        return f"{self.package}.{self.service}"

    @property
    def path(self) -> str:
        """The gRPC path; also the policy key without the leading slash."""
        return f"/{self.service_name}/{self.method}"


def load(path: Path = DESCRIPTOR_SET) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def _bindings(rule: http_pb2.HttpRule) -> list[HttpBinding]:
    found: list[HttpBinding] = []
    pattern = rule.WhichOneof("pattern")
    if pattern in HTTP_VERBS:
        found.append(HttpBinding(pattern.upper(), getattr(rule, pattern), rule.body))
    elif pattern == "custom":
        found.append(HttpBinding(rule.custom.kind.upper(), rule.custom.path, rule.body))
    for extra in rule.additional_bindings:
        found.extend(_bindings(extra))
    return found


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {tuple(loc.path): loc.leading_comments.strip()
            for loc in file.source_code_info.location if loc.leading_comments}


def _owners(full_name: str, services: tuple[ServiceEntry, ...]) -> tuple[str, ...]:
    """Who serves a gRPC service: the registry entry that lists it; every entry that serves
    operations, for google.longrunning.Operations; for a `cartage.<domain>.v1` service the
    registry does not list (a contract whose service is not built yet, a test's probe), the
    domain, which no upstream can be configured for (the gateway accepts registry names only),
    so it is described but never routed; nobody (not exposed) for anything else."""
    if full_name == OPERATIONS:
        return tuple(s.name for s in services if s.serves_operations)
    listed = tuple(s.name for s in services if full_name in s.grpc_services)
    if listed:
        return listed[:1]
    parts = full_name.split(".")
    if parts[0] == "cartage" and len(parts) > 3:
        return (parts[1],)
    return ()


def _name_fields(descriptors: descriptor_pb2.FileDescriptorSet) -> dict[str, int]:
    """Message full name -> the number of its `name` field."""
    found: dict[str, int] = {}
    for file in descriptors.file:
        for message in file.message_type:
            for f in message.field:
                if f.name == "name" and f.type == f.TYPE_STRING:
                    found[f"{file.package}.{message.name}"] = f.number
    return found


def rpcs(descriptors: descriptor_pb2.FileDescriptorSet,
         services: tuple[ServiceEntry, ...] = registry.SERVICES) -> list[Rpc]:
    """Every RPC the edge exposes: all methods of the registered services and Operations,
    with their HTTP rules (none: reachable over native gRPC only)."""
    found: list[Rpc] = []
    name_fields: dict[str, int] | None = None
    for file in descriptors.file:
        comments: dict[tuple[int, ...], str] | None = None
        for s_index, service in enumerate(file.service):
            owners = _owners(f"{file.package}.{service.name}", services)
            if not owners:
                continue
            if name_fields is None:
                name_fields = _name_fields(descriptors)
            if comments is None:
                comments = _comments(file)
            for m_index, method in enumerate(service.method):
                rules: tuple[HttpBinding, ...] = ()
                if method.options.HasExtension(annotations_pb2.http):
                    rules = tuple(_bindings(method.options.Extensions[annotations_pb2.http]))
                found.append(Rpc(
                    file.package, service.name, method.name, method.input_type.lstrip("."),
                    method.output_type.lstrip("."), rules,
                    comments.get((6, s_index, 2, m_index), ""), owners,
                    method.server_streaming, method.client_streaming,
                    name_fields.get(method.input_type.lstrip("."), 0)))
    return found


def rest_rpcs(descriptors: descriptor_pb2.FileDescriptorSet,
              services: tuple[ServiceEntry, ...] = registry.SERVICES) -> list[Rpc]:
    """The RPCs with an HTTP rule (the REST surface)."""
    return [rpc for rpc in rpcs(descriptors, services) if rpc.bindings]
