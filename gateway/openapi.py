"""OpenAPI 3.1 for the REST surface, generated from the same descriptor set and policy table as
the Envoy config, and served by Envoy at `/openapi.json` (no token needed).

JSON follows the proto3 JSON mapping the transcoder uses: lowerCamel names, enums as strings,
64-bit integers as strings, Timestamp as RFC 3339, Duration as "1.5s". A resource-name path
variable such as `{name=orders/*}` becomes a literal segment plus one parameter
(`/v1/orders/{order_id}`), so generated clients never have to send an encoded slash.

What a request may hold comes from the contracts too (gateway/constraints.py): the
`google.api.field_behavior` annotations (REQUIRED → `required`, OUTPUT_ONLY and IDENTIFIER →
`readOnly`, the update mask's allowed paths) and the `(cartage.type.v1.constraints)` option
the services' validators read (lengths, patterns, bounds, item counts). Every field the HTTP
rule leaves to the query string (AIP-127: not in the path, not in the body) is a query
parameter; every operation declares the errors the gateway and the services answer with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2

from gateway import constraints, contracts
from gateway.policy import POLICY, PUBLIC, Rule, rules_of
from services.kit.validation import RESOURCE_ID

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
STATUS = {
    "type": "object",
    "description": "A google.rpc.Status: every error has this shape. `details` carries an "
                   "ErrorInfo (`reason`), a BadRequest (`fieldViolations`) on 400s, a RetryInfo "
                   "on 429s.",
    "properties": {
        "code": {"type": "integer", "description": "The google.rpc.Code."},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {
            "type": "object", "properties": {"@type": {"type": "string"}},
            "additionalProperties": True}},
    },
}
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}
#: The errors every operation can answer with (412 is not used: a stale etag is 409 ABORTED).
ERRORS: dict[str, dict[str, Any]] = {
    "400": {"description": "INVALID_ARGUMENT (with field violations), FAILED_PRECONDITION "
                           "(wrong for the resource's state), OUT_OF_RANGE",
            "content": _ERROR},
    "401": {"description": "No valid access token (UNAUTHENTICATED)", "content": _ERROR,
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "403": {"description": "The token lacks the scope, or the client may not call from here "
                           "(PERMISSION_DENIED)", "content": _ERROR},
    "404": {"description": "No such resource of the caller's (NOT_FOUND)", "content": _ERROR},
    "409": {"description": "ALREADY_EXISTS, or ABORTED (a stale etag, a request with the same "
                           "Idempotency-Key still in flight)", "content": _ERROR},
    "429": {"description": "The client's rate limit (RESOURCE_EXHAUSTED)", "content": _ERROR,
            "headers": {"Retry-After": {"description": "Seconds to wait before retrying.",
                                        "schema": {"type": "integer", "minimum": 0}}}},
    "default": {"description": "Another error (google.rpc.Status)", "content": _ERROR},
}


class _Schemas:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, list[tuple[str, int]]] = {}
        self.comments: dict[str, str] = {}
        #: resource type (`cartage.io/Order`) -> the pattern of its name
        self.name_patterns: dict[str, str] = {}
        for file in files.file:
            comments = {tuple(loc.path): loc.leading_comments.strip()
                        for loc in file.source_code_info.location if loc.leading_comments}
            for i, message in enumerate(file.message_type):
                self._add(f"{file.package}.{message.name}", message, comments, (4, i))
            for enum in file.enum_type:
                self.enums[f"{file.package}.{enum.name}"] = [(v.name, v.number)
                                                             for v in enum.value]
        self.components: dict[str, Any] = {}

    def _add(self, name: str, message: descriptor_pb2.DescriptorProto,
             comments: Mapping[tuple[int, ...], str], path: tuple[int, ...]) -> None:
        self.messages[name] = message
        self.comments[name] = comments.get(path, "")
        resource = constraints.resource_of(message)
        for j, field in enumerate(message.field):
            self.comments[f"{name}.{field.name}"] = comments.get((*path, 2, j), "")
            if resource and field.name == "name" and constraints.declared(field).pattern:
                self.name_patterns[resource] = constraints.declared(field).pattern
        for j, nested in enumerate(message.nested_type):
            self._add(f"{name}.{nested.name}", nested, comments, (*path, 3, j))
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = [(v.name, v.number) for v in enum.value]

    def ref(self, name: str, *, variant: str = "",
            outer: constraints.FieldConstraints | None = None, partial: bool = False,
            from_path: frozenset[str] = frozenset()) -> dict[str, Any]:
        """A reference to the component of message `name`; `variant` names a copy with the
        limits a holding field declares on its fields (`outer`), without `required`
        (`partial`, an update's body) or without the fields the path sets (`from_path`)."""
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        key = f"{name}.{variant}" if variant else name
        if key not in self.components:
            self.components[key] = {}  # placeholder against recursion
            self.components[key] = self._object(name, outer, partial=partial,
                                                from_path=from_path)
        return {"$ref": f"#/components/schemas/{key}"}

    def _object(self, name: str, outer: constraints.FieldConstraints | None = None, *,
                partial: bool = False, from_path: frozenset[str] = frozenset()
                ) -> dict[str, Any]:
        message = self.messages[name]
        properties: dict[str, Any] = {}
        needed: list[str] = []
        for f in message.field:
            if f.name in from_path:
                # The transcoder sets it from the path: not the body's to send.
                continue
            inner = outer.fields[f.name] if outer is not None and f.name in outer.fields else None
            properties[f.json_name] = self.field(name, f, inner)
            if (constraints.required(f) or (outer is not None and f.name in outer.required)):
                needed.append(f.json_name)
        schema: dict[str, Any] = {"type": "object", "properties": properties,
                                  # the gateway refuses unknown fields (gateway/strict_json.py)
                                  "additionalProperties": False}
        if needed and not partial:
            schema["required"] = needed
        if self.comments.get(name):
            schema["description"] = self.comments[name]
        return schema

    def field(self, owner: str, field: F,
              found: constraints.FieldConstraints | None = None) -> dict[str, Any]:
        """The schema of one field; `found`: its limits (else those it declares)."""
        found = found if found is not None else constraints.declared(field)
        type_name = field.type_name.lstrip(".")
        if field.type == F.TYPE_MESSAGE and self.messages.get(type_name, None) is not None \
                and self.messages[type_name].options.map_entry:
            entry = self.messages[type_name]
            schema: dict[str, Any] = {"type": "object",
                                      "additionalProperties": self.field(type_name,
                                                                         entry.field[1])}
        else:
            if field.type == F.TYPE_MESSAGE:
                nested = bool(found.fields or found.required)
                item = self.ref(type_name, variant=f"{owner.rsplit('.', 1)[-1]}_{field.json_name}"
                                if nested else "", outer=found if nested else None)
            elif field.type == F.TYPE_ENUM:
                values = self.enums.get(type_name, [])
                item = {"type": "string", "enum": [
                    n for n, number in values
                    if number != 0 or not constraints.required(field)]}
            else:
                item = {**_SCALARS[field.type], **constraints.int_range(field)}
            schema = ({"type": "array", "items": item} if field.label == F.LABEL_REPEATED
                      else item)
            constraints.keywords(field, found, schema, self.name_patterns)
        comment = self.comments.get(f"{owner}.{field.name}")
        if "$ref" in schema:
            # Keywords beside a $ref are allowed in OpenAPI 3.1, but generators read them badly.
            if constraints.read_only(field):
                schema = {"allOf": [schema], "readOnly": True}
            return schema
        if comment:
            schema["description"] = comment
        if constraints.read_only(field):
            schema["readOnly"] = True
        return schema

    def update_mask(self, message: str) -> dict[str, Any]:
        """The FieldMask of an update: comma-separated names of the fields it may change."""
        names = [f.json_name for f in constraints.updatable(self.messages[message])]
        one = "(?:" + "|".join(names) + ")"
        return {"type": "string", "pattern": f"^{one}(?:,{one})*$",
                "description": "Comma-separated fields to change: " + ", ".join(names)}


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


#: Well-known message types a query parameter can carry (as their JSON string).
_QUERY_MESSAGES = {"google.protobuf.FieldMask", "google.protobuf.Timestamp",
                   "google.protobuf.Duration"}


def _query(schemas: _Schemas, rpc: contracts.Rpc, request: descriptor_pb2.DescriptorProto,
           taken: set[str], binding: Any) -> list[dict[str, Any]]:
    """AIP-127: every field of the request the path and the body leave out is a query
    parameter (repeated ones as `?orders=a&orders=b`)."""
    found = []
    for f in request.field:
        if f.name in taken:
            continue
        if f.type == F.TYPE_MESSAGE and f.type_name.lstrip(".") not in _QUERY_MESSAGES:
            continue  # nested messages in a query string (`a.b=`): none in our contracts
        if f.type_name == ".google.protobuf.FieldMask" and binding.body not in ("", "*"):
            body = next(b for b in request.field if b.name == binding.body)
            schema = schemas.update_mask(body.type_name.lstrip("."))
        else:
            schema = schemas.field(rpc.input_type, f)
        parameter: dict[str, Any] = {"name": f.json_name, "in": "query", "schema": schema}
        if constraints.required(f):
            parameter["required"] = True
        if schema.get("description"):
            parameter["description"] = schema.pop("description")
        if f.label == F.LABEL_REPEATED:
            parameter.update(style="form", explode=True)
        found.append(parameter)
    return found


def _path_schema(schemas: _Schemas, rpc: contracts.Rpc, param: str, field: str
                 ) -> dict[str, Any]:
    """A path parameter's schema: the part of the bound name's pattern after its literal
    collection (`^orders/[0-9a-f]{32}$` → `^[0-9a-f]{32}$`); for Operations, the owning
    service and a server-assigned id."""
    if rpc.shared:
        if param == "service":
            return {"type": "string", "enum": list(rpc.owners)}
        return {"type": "string", "pattern": RESOURCE_ID.pattern}
    message = schemas.messages[rpc.input_type]
    *parents, last = field.split(".")
    for part in parents:
        holder = next(f for f in message.field if f.name == part)
        message = schemas.messages[holder.type_name.lstrip(".")]
    target = next(f for f in message.field if f.name == last)
    pattern = (constraints.declared(target).pattern
               or schemas.name_patterns.get(constraints.resource_type(target), ""))
    match = re.fullmatch(r"\^([A-Za-z]+)/(.*)", pattern)
    if not match:
        return {"type": "string"}
    return {"type": "string", "pattern": "^" + match.group(2)}


def _ok(schemas: _Schemas, rpc: contracts.Rpc) -> dict[str, Any]:
    if rpc.output_type == "google.api.HttpBody":
        # Its content type is the one the method's comment names (`application/geo+json`);
        # a method that names several (`application/pdf`, `image/png`) or none serves any.
        named = re.findall(r"`([a-z]+/[a-z0-9.+-]+)`", rpc.comment)
        if len(named) == 1:
            return {"description": "OK", "content": {named[0]: {"schema": {}}}}
        return {"description": "OK", "content": {"*/*": {"schema": {
            "type": "string", "format": "binary"}}}}
    schema = schemas.ref(rpc.output_type)
    if rpc.server_streaming:
        # The transcoder streams the messages as one JSON array.
        schema = {"type": "array", "items": schema}
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


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
        if rpc.path.lstrip("/") in PUBLIC:
            security = []  # served without a token (gateway.policy.PUBLIC)
        for binding, path, bound, bound_fields, suffix in _variants(rpc):
            operation: dict[str, Any] = {
                "operationId": (rpc.method if len(rpc.bindings) == 1
                                else f"{rpc.method}_{binding.verb.lower()}") + suffix,
                "tags": [rpc.service],
                "description": rpc.comment,
                "parameters": [{"name": p, "in": "path", "required": True,
                                "schema": _path_schema(schemas, rpc, p, field)}
                               for p, field in bound],
                "responses": {"200": _ok(schemas, rpc), **ERRORS},
                "security": security,
            }
            body_fields: set[str] = set()
            if binding.body == "*":
                body_fields = {f.name for f in request.field}
                # `POST /v1/{name=decisions/*}:approve` with body `*`: the body is the request
                # less the fields its path sets (a generated client would otherwise ask for
                # the name twice, once as a required body field).
                schema = (schemas.ref(rpc.input_type, variant="body",
                                      from_path=frozenset(bound_fields))
                          if bound_fields else schemas.ref(rpc.input_type))
                operation["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": schema}}}
            elif binding.body:
                body_fields = {binding.body}
                body_field = next(f for f in request.field if f.name == binding.body)
                if binding.verb == "PATCH" and body_field.type == F.TYPE_MESSAGE:
                    # An update sends the fields its mask names, not the whole resource.
                    schema = schemas.ref(body_field.type_name.lstrip("."), variant="update",
                                         partial=True)
                else:
                    schema = schemas.field(rpc.input_type, body_field)
                operation["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": schema}}}
            operation["parameters"] += _query(schemas, rpc, request,
                                              bound_fields | body_fields, binding)
            if binding.verb == "POST":
                operation["parameters"].append({
                    "name": "Idempotency-Key", "in": "header",
                    "schema": {"type": "string"},
                    "description": "Makes a retry return the first response."})
            paths.setdefault(path, {})[binding.verb.lower()] = operation
    scopes = {rule.scope: f"scope {rule.scope}" for rule in policy.values()}
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
