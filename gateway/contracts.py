"""What the contracts say about the REST surface: every RPC with a `google.api.http` rule.

Read from the descriptor set `proto/generate.py` writes (build/cartage.binpb), so the Envoy
config and the OpenAPI document can never drift from the protos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTOR_SET = ROOT / "build" / "cartage.binpb"
HTTP_VERBS = ("get", "put", "post", "delete", "patch")


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
    bindings: tuple[HttpBinding, ...]
    comment: str

    @property
    def service_name(self) -> str:
        return f"{self.package}.{self.service}"

    @property
    def path(self) -> str:
        """The gRPC path; also the policy key without the leading slash."""
        return f"/{self.service_name}/{self.method}"

    @property
    def domain(self) -> str:
        """`order` for `cartage.order.v1`: the upstream service that serves it."""
        return self.package.split(".")[1]


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


def rest_rpcs(descriptors: descriptor_pb2.FileDescriptorSet) -> list[Rpc]:
    """Every RPC of a `cartage.*` service that has an HTTP rule."""
    rpcs: list[Rpc] = []
    for file in descriptors.file:
        if not file.package.startswith("cartage."):
            continue
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            for m_index, method in enumerate(service.method):
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                rpcs.append(Rpc(
                    file.package, service.name, method.name, method.input_type.lstrip("."),
                    method.output_type.lstrip("."), tuple(_bindings(rule)),
                    comments.get((6, s_index, 2, m_index), "")))
    return rpcs
