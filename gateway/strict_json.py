"""Strict JSON bodies: unknown fields are refused with 400, not silently dropped.

Envoy's transcoder ignores JSON fields the message does not have, so a partner who misspells
`externalReference` would get an order without one and no error (Envoy 1.40's transcoder has
no option to refuse them: its `request_validation_options` cover methods, query parameters and
body/path collisions only).

The check runs inside Envoy, in a Lua filter before the transcoder (`lua_source`, the scanner
is gateway.envoy_lua.LUA_STRICT_JSON): this module turns the descriptor set into the tables it
needs — per message, the names the transcoder accepts (JSON name and proto name) and what each
field holds; per HTTP binding, the message its body fills; the transcoder's path-matching trie
and custom verbs. It answers 400 with a `google.rpc.Status` + `BadRequest` JSON body naming
the unknown fields, or lets the request through.

(It used to be an `ext_authz` hop to the authorization server's Python event loop, ~0.8 ms of
CPU per request; the same rule in Python is kept in tests/e2e/strict_json_reference.py as the
reference the Lua check is tested against.)
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import descriptor, descriptor_pool

from gateway import contracts

# Messages whose JSON object has free keys: their values are checked for JSON syntax only.
# (Any's keys depend on its `@type`; no request message uses Any today.) Every other message is
# checked by its fields, the well-known ones too: Timestamp, Duration, FieldMask and the wrappers
# are strings or numbers in JSON, but the transcoder also takes them as objects of their fields
# (`{"seconds": 5, "typo": 1}` for a Duration: checked on Envoy 1.40, the typo is dropped).
# google.type.* (Money, LatLng, ...) are ordinary messages.
OPAQUE_JSON = frozenset({
    "google.protobuf.Any", "google.protobuf.Struct", "google.protobuf.Value",
    "google.protobuf.ListValue",
})
# A request (or body field) of this type takes the raw body, not JSON.
RAW_BODY = "google.api.HttpBody"


def _lua_str(text: str) -> str:
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in "\\\"" or not 32 <= byte < 127:
            out.append(f"\\{byte:03d}")  # three digits: a digit may follow
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _segments(template: str) -> tuple[list[str], str]:
    """The path matcher's view of a template: segments (`*`, `**` or a literal) and the custom
    verb. `/v1/{name=orders/*}:cancel` -> (["v1", "orders", "*"], "cancel")."""
    verb = ""
    # The verb is a `:LITERAL` after the last segment (a `:` inside a variable is not one).
    depth, split = 0, -1
    for i, char in enumerate(template):
        depth += char == "{"
        depth -= char == "}"
        if char == ":" and depth == 0:
            split = i
    if split >= 0:
        template, verb = template[:split], template[split + 1:]
    expanded = re.sub(r"\{([^}=]*)(?:=([^}]*))?\}",
                      lambda m: m.group(2) if m.group(2) is not None else "*", template)
    return expanded.lstrip("/").split("/"), verb


class _Tables:
    """The Lua tables of the strict-JSON filter for a set of RPCs."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self.pool = pool
        self.index: dict[str, int] = {}
        self.messages: list[dict[str, int]] = []

    def code(self, field: descriptor.FieldDescriptor) -> int:
        """0: syntax only; n: message n; -n: map with values of message n."""
        target = field.message_type
        if target is None:
            return 0
        if target.GetOptions().map_entry:
            value = target.fields_by_name["value"].message_type
            return -self.message(value) if value and value.full_name not in OPAQUE_JSON else 0
        return 0 if target.full_name in OPAQUE_JSON else self.message(target)

    def message(self, message: descriptor.Descriptor) -> int:
        if message.full_name in self.index:
            return self.index[message.full_name]
        self.messages.append({})
        number = len(self.messages)
        self.index[message.full_name] = number
        fields: dict[str, int] = {}
        for field in message.fields:
            fields[field.json_name] = fields[field.name] = self.code(field)
        self.messages[number - 1] = fields
        return number

    def lua(self) -> str:
        rows = []
        for n, fields in enumerate(self.messages, 1):
            names = ", ".join(f"[{_lua_str(k)}] = {v}" for k, v in sorted(fields.items()))
            rows.append(f"  {{{names}}}, -- {n}")
        return "local M = {\n" + "\n".join(rows) + "\n}"


def lua_tables(descriptors: Any, services: set[str] | None = None) -> str:
    """The generated part of the Lua filter: message tables (M), bindings (BINDINGS), the path
    matcher trie (TRIE) and the custom verbs (VERBS) of the RPCs the transcoder serves (all of
    `services`, or every exposed RPC)."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptors.file:
        pool.Add(file)
    tables = _Tables(pool)
    bindings: list[str] = []  # only those with a body to check
    number = 0
    trie: dict[str, Any] = {}
    verbs: set[str] = set()
    for rpc in contracts.rest_rpcs(descriptors):
        if services is not None and rpc.service_name not in services:
            continue
        request = pool.FindMessageTypeByName(rpc.input_type)
        for b in rpc.bindings:
            number += 1
            # No `body` in the rule: the transcoder still parses a body, if one is sent, into
            # the whole request message (checked on Envoy 1.40: a GET body sets fields).
            if b.body in ("*", "") and request.full_name != RAW_BODY:
                bindings.append(f"[{number}] = {{{tables.message(request)}, \"\"}}")
            elif b.body and b.body != "*":
                field = request.fields_by_name[b.body]
                raw = field.message_type is not None and field.message_type.full_name == RAW_BODY
                code = 0 if raw else tables.code(field)
                if code:  # else a scalar or a raw body: no field names to check
                    bindings.append(f"[{number}] = {{{code}, {_lua_str(b.body)}}}")
            segments, verb = _segments(b.template)
            if verb:
                verbs.add(verb)
            node = trie
            for segment in segments:
                node = node.setdefault("c", {}).setdefault(segment, {})
            results = node.setdefault("r", {})
            key = b.verb + verb
            results[key] = False if key in results else number

    def node_lua(node: dict[str, Any], wildcard: bool) -> str:
        parts = []
        if wildcard:
            parts.append("w = true")
        if "r" in node:
            parts.append("r = {" + ", ".join(
                f"[{_lua_str(k)}] = {str(v).lower()}" for k, v in sorted(node["r"].items()))
                + "}")
        if "c" in node:
            parts.append("c = {" + ", ".join(
                f"[{_lua_str(k)}] = {node_lua(v, k == '**')}"
                for k, v in sorted(node["c"].items())) + "}")
        return "{" + ", ".join(parts) + "}"

    listed = ",\n".join(f"  {b}" for b in bindings)
    return "\n".join([
        "-- generated by gateway.strict_json from the descriptor set",
        tables.lua(),
        f"local BINDINGS = {{\n{listed}\n}}",
        f"local TRIE = {node_lua(trie, False)}",
        "local VERBS = {" + ", ".join(f"[{_lua_str(v)}] = true" for v in sorted(verbs)) + "}",
    ])


def lua_source(descriptors: Any, services: set[str] | None = None) -> str:
    """The strict-JSON Lua filter's code for these contracts."""
    from gateway.envoy_lua import LUA_STRICT_JSON

    return LUA_STRICT_JSON.replace("__TABLES__", lua_tables(descriptors, services))


def bodiless_methods(descriptors: Any, services: set[str] | None = None) -> list[str]:
    """HTTP methods whose bindings all lack a `body` (GET, DELETE): a body sent with them is
    unusual, and a request that announces none (no Content-Length, no Transfer-Encoding) need
    not enter the filter at all."""
    with_body = {b.verb for rpc in contracts.rest_rpcs(descriptors)
                 if services is None or rpc.service_name in services
                 for b in rpc.bindings if b.body}
    return [m for m in bound_methods(descriptors, services) if m not in with_body]


def bound_methods(descriptors: Any, services: set[str] | None = None) -> list[str]:
    """HTTP methods with a binding: only their requests can carry a body the transcoder parses
    (with or without a `body` in the rule), so only they are checked."""
    return sorted({b.verb for rpc in contracts.rest_rpcs(descriptors)
                   if services is None or rpc.service_name in services
                   for b in rpc.bindings})
