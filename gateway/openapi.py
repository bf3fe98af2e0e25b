"""OpenAPI 3.1 for the REST surface, generated from the same descriptor set and policy table as
the Envoy config, and served by Envoy at `/openapi.json` (no token needed).

JSON follows the proto3 JSON mapping the transcoder uses: lowerCamel names, enums as strings,
64-bit integers as strings, Timestamp as RFC 3339, Duration as "1.5s". A resource-name path
variable such as `{name=orders/*}` becomes a literal segment plus one parameter
(`/v1/orders/{order_id}`), so generated clients never have to send an encoded slash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2

from gateway import contracts
from gateway.policy import POLICY, PUBLIC, Rule, rules_of

F = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_SINT64: {"type": "string", "format": "int64"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated paths"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}},
                            "additionalProperties": True},
    "google.protobuf.Empty": {"type": "object"},
}
STATUS = {"type": "object", "description": "A google.rpc.Status: every error has this shape.",
          "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                         "details": {"type": "array", "items": {"type": "object"}}}}


class _Schemas:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, list[str]] = {}
        self.comments: dict[str, str] = {}
        for file in files.file:
            comments = {tuple(loc.path): loc.leading_comments.strip()
                        for loc in file.source_code_info.location if loc.leading_comments}
            for i, message in enumerate(file.message_type):
                self._add(f"{file.package}.{message.name}", message, comments, (4, i))
            for enum in file.enum_type:
                self.enums[f"{file.package}.{enum.name}"] = [v.name for v in enum.value]
        self.components: dict[str, Any] = {}

    def _add(self, name: str, message: descriptor_pb2.DescriptorProto,
             comments: Mapping[tuple[int, ...], str], path: tuple[int, ...]) -> None:
        self.messages[name] = message
        self.comments[name] = comments.get(path, "")
        for j, field in enumerate(message.field):
            self.comments[f"{name}.{field.name}"] = comments.get((*path, 2, j), "")
        for j, nested in enumerate(message.nested_type):
            self._add(f"{name}.{nested.name}", nested, comments, (*path, 3, j))
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = [v.name for v in enum.value]

    def ref(self, name: str) -> dict[str, Any]:
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self.components:
            self.components[name] = {}  # placeholder against recursion
            self.components[name] = self._object(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def _object(self, name: str) -> dict[str, Any]:
        message = self.messages[name]
        properties = {f.json_name: self.field(name, f) for f in message.field}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if self.comments.get(name):
            schema["description"] = self.comments[name]
        return schema

    def field(self, owner: str, field: F) -> dict[str, Any]:
        type_name = field.type_name.lstrip(".")
        if field.type == F.TYPE_MESSAGE and self.messages.get(type_name, None) is not None \
                and self.messages[type_name].options.map_entry:
            entry = self.messages[type_name]
            schema: dict[str, Any] = {"type": "object",
                                      "additionalProperties": self.field(type_name,
                                                                         entry.field[1])}
        else:
            if field.type == F.TYPE_MESSAGE:
                item = self.ref(type_name)
            elif field.type == F.TYPE_ENUM:
                item = {"type": "string", "enum": self.enums.get(type_name, [])}
            else:
                item = dict(_SCALARS[field.type])
            schema = ({"type": "array", "items": item} if field.label == F.LABEL_REPEATED
                      else item)
        comment = self.comments.get(f"{owner}.{field.name}")
        if comment and "$ref" not in schema:
            schema["description"] = comment
        return schema


def _path(template: str) -> tuple[str, list[tuple[str, str]], set[str]]:
    """(`/v1/orders/{order_id}`, [(param, bound field)], {top-level fields the path sets}) from
    `/v1/{name=orders/*}`. A variable without a wildcard (`{name=operations}`) is a literal
    segment that still sets its field."""
    params: list[tuple[str, str]] = []
    fields: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        field, _, pattern = match.group(1).partition("=")
        fields.add(field.split(".")[0])
        segments = (pattern or "*").split("/")
        out = []
        for i, segment in enumerate(segments):
            if segment in ("*", "**"):
                collection = segments[i - 1] if i > 0 else field
                param = f"{collection.rstrip('s')}_id" if i > 0 else field.replace(".", "_")
                params.append((param, field))
                out.append("{" + param + "}")
            else:
                out.append(segment)
        return "/".join(out)

    return re.sub(r"\{([^}]*)\}", replace, template), params, fields


def _variants(rpc: contracts.Rpc
              ) -> list[tuple[Any, str, list[tuple[str, str]], set[str], str]]:
    """(binding, path, params, bound fields, operationId suffix) per documented path. An
    Operations name has the owning service in it (`operations/{service}/{id}`): its `**`
    template gets a second path with both as parameters, since a generated client would
    percent-encode a slash inside one parameter, which the transcoder keeps encoded in a
    multi-segment variable (the name would not be the operation's). The one-parameter path
    stays for the old names (`operations/{id}`)."""
    found = []
    for binding in rpc.bindings:
        path, bound, fields = _path(binding.template)
        found.append((binding, path, bound, fields, ""))
        if rpc.shared and "{name=operations/**}" in binding.template:
            [(param, field)] = bound
            found.append((binding, path.replace("{" + param + "}", "{service}/{" + param + "}"),
                          [("service", field), (param, field)], fields, "_byService"))
    return found


def build(descriptors: descriptor_pb2.FileDescriptorSet | None = None, *,
          token_url: str = "/oauth/token", policy: Mapping[str, Rule] = POLICY
          ) -> dict[str, Any]:
    files = descriptors or contracts.load()
    schemas = _Schemas(files)
    paths: dict[str, dict[str, Any]] = {}
    for rpc in contracts.rest_rpcs(files):
        request = schemas.messages[rpc.input_type]
        # Operations: any one owner's scope (each owner's operations need its own).
        rules = [rule for _, _, rule in rules_of(rpc, policy)]
        security = ([{"oauth2": [rule.scope]} for rule in dict.fromkeys(rules) if rule]
                    if all(rules) else [{"oauth2": ["-"]}])
        if rules and all(rule is not None and rule.scope == PUBLIC for rule in rules):
            security = []  # no token: its own argument is the credential (a signed link)
        # google.api.HttpBody: the response is the body itself, with its own media type.
        ok_content = ({"*/*": {"schema": {"type": "string", "format": "binary"}}}
                      if rpc.output_type.lstrip(".") == "google.api.HttpBody"
                      else {"application/json": {"schema": schemas.ref(rpc.output_type)}})
        for binding, path, bound, bound_fields, suffix in _variants(rpc):
            operation: dict[str, Any] = {
                "operationId": (rpc.method if len(rpc.bindings) == 1
                                else f"{rpc.method}_{binding.verb.lower()}") + suffix,
                "tags": [rpc.service],
                "description": rpc.comment,
                "parameters": [{"name": p, "in": "path", "required": True,
                                "schema": {"type": "string"}} for p, _ in bound],
                "responses": {
                    "200": {"description": "OK", "content": ok_content},
                    "default": {"description": "An error (google.rpc.Status)", "content": {
                        "application/json": {"schema": {"$ref":
                                                        "#/components/schemas/Status"}}}},
                },
                "security": security,
            }
            if binding.body == "*":
                operation["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": schemas.ref(rpc.input_type)}}}
            elif binding.body:
                body_field = next(f for f in request.field if f.name == binding.body)
                operation["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": schemas.field(rpc.input_type,
                                                                 body_field)}}}
            else:
                for f in request.field:
                    if f.name in bound_fields or f.type == F.TYPE_MESSAGE:
                        continue
                    operation["parameters"].append({
                        "name": f.json_name, "in": "query",
                        "schema": schemas.field(rpc.input_type, f)})
            if binding.verb == "POST":
                operation["parameters"].append({
                    "name": "Idempotency-Key", "in": "header", "schema": {"type": "string"},
                    "description": "Makes a retry return the first response."})
            paths.setdefault(path, {})[binding.verb.lower()] = operation
    scopes = {rule.scope: f"scope {rule.scope}" for rule in policy.values()
              if rule.scope != PUBLIC}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cartage API", "version": "v1",
                 "description": "REST + JSON over the Cartage gRPC contracts."},
        "paths": paths,
        "components": {
            "schemas": {**schemas.components, "Status": STATUS},
            "securitySchemes": {"oauth2": {"type": "oauth2", "flows": {"clientCredentials": {
                "tokenUrl": token_url, "scopes": scopes}}}},
        },
    }
