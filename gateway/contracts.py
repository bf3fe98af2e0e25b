"""What the contracts say about the edge's surface: the RPCs of every `cartage.*` service, plus
the few standard services a Cartage service also serves (EXTRA_SERVICES), with their
`google.api.http` rules.

Read from the descriptor set `proto/generate.py` writes (build/cartage.binpb), so the Envoy
config, the strict-JSON check and the OpenAPI document can never drift from the protos.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTOR_SET = ROOT / "build" / "cartage.binpb"
HTTP_VERBS = ("get", "put", "post", "delete", "patch")

# Services outside `cartage.*` that a Cartage service serves too, and which domain (upstream)
# serves them: the domain of a `cartage.<domain>.v1` service comes from its package, these have
# no such package. A service named here but absent from the descriptor set is simply not there
# (no route, no OpenAPI entry). One domain per service: the gRPC path of its methods is the
# same whoever serves it.
EXTRA_SERVICES: dict[str, str] = {
    # The routing service's long-running operations (PlanRoutes, ReplanRoutes).
    "google.longrunning.Operations": "routing",
}


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
    domain: str  # the upstream that serves it: `order` for `cartage.order.v1`

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


def _domain(package: str, service: str,
            extra: Mapping[str, str]) -> str | None:
    """The domain that serves a service: `order` for `cartage.order.v1.*`, the EXTRA_SERVICES
    entry for a standard service, None for anything else (not exposed)."""
    full = f"{package}.{service}"
    if full in extra:
        return extra[full]
    parts = package.split(".")
    if parts[0] == "cartage" and len(parts) > 2:
        return parts[1]
    return None


def rpcs(descriptors: descriptor_pb2.FileDescriptorSet,
         extra: Mapping[str, str] = EXTRA_SERVICES) -> list[Rpc]:
    """Every RPC the edge exposes: all methods of `cartage.*` services and of `extra` services,
    with their HTTP rules (none: reachable over native gRPC only)."""
    found: list[Rpc] = []
    for file in descriptors.file:
        comments: dict[tuple[int, ...], str] | None = None
        for s_index, service in enumerate(file.service):
            domain = _domain(file.package, service.name, extra)
            if domain is None:
                continue
            if comments is None:
                comments = _comments(file)
            for m_index, method in enumerate(service.method):
                rules: tuple[HttpBinding, ...] = ()
                if method.options.HasExtension(annotations_pb2.http):
                    rules = tuple(_bindings(method.options.Extensions[annotations_pb2.http]))
                found.append(Rpc(
                    file.package, service.name, method.name, method.input_type.lstrip("."),
                    method.output_type.lstrip("."), rules,
                    comments.get((6, s_index, 2, m_index), ""), domain))
    return found


def rest_rpcs(descriptors: descriptor_pb2.FileDescriptorSet,
              extra: Mapping[str, str] = EXTRA_SERVICES) -> list[Rpc]:
    """The RPCs with an HTTP rule (the REST surface)."""
    return [rpc for rpc in rpcs(descriptors, extra) if rpc.bindings]
