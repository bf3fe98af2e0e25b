"""Strict JSON bodies: unknown fields are refused with 400, not silently dropped.

Envoy's transcoder ignores JSON fields the message does not have, so a partner who misspells
`externalReference` would get an order without one and no error. Envoy therefore asks this
check first (an `ext_authz` HTTP call carrying the body, only for JSON requests): it finds the
RPC from the method and path exactly as the `google.api.http` rules bind them, parses the body
into the bound message with unknown fields forbidden, and answers 200 (go on) or 400 with a
`google.rpc.Status` + `BadRequest` JSON body that Envoy returns to the client as is.

It runs in the authorization server's process: both are small, stateless edge helpers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from gateway import contracts

PREFIX = "/ext/validate"
_NO_FIELD = re.compile(r'has no field named "([^"]+)" at "([^"]*)"')


def _regex(template: str) -> re.Pattern[str]:
    """A google.api.http path template as a regex (`*` one segment, `**` the rest)."""
    out = []
    for part in re.split(r"(\{[^}]*\})", template):
        if part.startswith("{"):
            inner = part[1:-1]
            pattern = inner.split("=", 1)[1] if "=" in inner else "*"
            out.append("/".join("[^/]+" if s == "*" else ".+" if s == "**" else re.escape(s)
                                for s in pattern.split("/")))
        else:
            out.append("/".join(r"[^/:]+" if s == "*" else re.escape(s)
                                for s in part.split("/")))
    return re.compile("^" + "".join(out) + "$")


@dataclass(frozen=True)
class _Binding:
    verb: str
    regex: re.Pattern[str]
    message: type[Message]
    body: str  # the request field the body fills, or "*" for the whole request


class StrictJson:
    def __init__(self, descriptors: Any = None) -> None:
        files = descriptors or contracts.load()
        pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            pool.Add(file)
        self._bindings: list[_Binding] = []
        for rpc in contracts.rest_rpcs(files):
            request = pool.FindMessageTypeByName(rpc.input_type)
            for b in rpc.bindings:
                if not b.body:
                    continue
                target = (request if b.body == "*"
                          else request.fields_by_name[b.body].message_type)
                self._bindings.append(_Binding(
                    b.verb, _regex(b.template), message_factory.GetMessageClass(target), b.body))

    def check(self, verb: str, path: str, body: bytes) -> dict[str, Any] | None:
        """None when the body is acceptable (or not ours to judge), else the error body."""
        path = path.split("?", 1)[0]
        binding = next((b for b in self._bindings
                        if b.verb == verb and b.regex.match(path)), None)
        if binding is None or not body.strip():
            return None
        try:
            json_format.Parse(body, binding.message(), ignore_unknown_fields=False)
        except json_format.ParseError as error:
            text = str(error)
            found = _NO_FIELD.search(text)
            if found:
                at = found.group(2).split(".")[1:]
                prefix = [] if binding.body == "*" else [binding.body]
                field = ".".join([*prefix, *at, found.group(1)])
                description = "unknown field"
            else:
                field = binding.body if binding.body != "*" else ""
                description = text.split("  ")[0][:300]
            return _bad_request(field, description)
        except (ValueError, UnicodeDecodeError):
            return _bad_request("", "the body is not valid JSON")
        return None


def _bad_request(field: str, description: str) -> dict[str, Any]:
    message = f"{field}: {description}" if field else description
    return {"code": 3, "message": message, "details": [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": description}],
    }]}


def response_body(error: dict[str, Any]) -> bytes:
    return json.dumps(error).encode()
