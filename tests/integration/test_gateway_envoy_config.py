"""The generated Envoy config: accepted by the real `envoy --mode validate`, and derived from the
contracts plus the policy table (deny by default)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import contracts, openapi, operations
from gateway.envoy_config import GatewayConfig, build, envoy_binary, unguarded_rpcs
from gateway.policy import POLICY, PUBLIC, operation_key, rules_of
from services import registry

pytestmark = pytest.mark.integration


def config(**overrides: Any) -> GatewayConfig:
    base: dict[str, Any] = dict(listen_port=18080, admin_port=19901,
                                auth_address="127.0.0.1:18090",
                                issuer="http://127.0.0.1:18090",
                                # every registered service, on its default port
                                upstreams={e.name: f"127.0.0.1:{e.default_port}"
                                           for e in registry.SERVICES})
    return GatewayConfig(**(base | overrides))


def routes(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    vhost = hcm["typed_config"]["route_config"]["virtual_hosts"][0]
    return {r["name"]: r for r in vhost["routes"]}


def allowed_scopes(route: dict[str, Any]) -> list[str] | None:
    """The scopes a route's RBAC lets through; None: no RBAC at all (a PUBLIC policy line)."""
    per_route = route["typed_per_filter_config"]["envoy.filters.http.rbac"]
    if "rbac" not in per_route:
        return None
    rbac = per_route["rbac"]
    return [name.removeprefix("scope:") for name in rbac["rules"]["policies"]]


@pytest.mark.parametrize("order", ["127.0.0.1:50051",
                                   "unix:/run/cartage/order-0.sock,unix:/run/cartage/order-1.sock"])
def test_envoy_accepts_the_generated_config(tmp_path: Path, order: str) -> None:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(build(config(
        audit_address="127.0.0.1:18091",
        upstreams={"order": order, "routing": "127.0.0.1:50052",
                   "carrier": "127.0.0.1:50053"}))))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path),
                             "--log-level", "error"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_a_service_with_worker_sockets_is_balanced_per_request() -> None:
    workers = "unix:/run/cartage/order-0.sock,unix:/run/cartage/order-1.sock"
    clusters = {c["name"]: c for c in build(config(upstreams={
        "order": workers, "routing": "127.0.0.1:50052"}))["static_resources"]["clusters"]}
    order, routing = clusters["svc_order"], clusters["svc_routing"]
    assert [e["endpoint"]["address"] for e in order["load_assignment"]["endpoints"][0][
        "lb_endpoints"]] == [{"pipe": {"path": "/run/cartage/order-0.sock"}},
                             {"pipe": {"path": "/run/cartage/order-1.sock"}}]
    assert order["lb_policy"] == "LEAST_REQUEST"

    def h2(cluster: dict[str, Any]) -> dict[str, Any]:
        return cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"][
            "http2_protocol_options"]

    # Per-worker sockets: one full connection each; a shared port: several, for the kernel.
    assert h2(order) == {} and h2(routing) == {"max_concurrent_streams": 8}
    one_worker = {c["name"]: c for c in build(config(upstreams={
        "order": "unix:/run/cartage/order-0.sock"}))["static_resources"]["clusters"]}
    assert h2(one_worker["svc_order"]) == {} and "lb_policy" not in one_worker["svc_order"]


def test_every_rpc_has_a_policy_line() -> None:
    """The build fails on an RPC nobody decided who may call (it would be refused to all)."""
    assert unguarded_rpcs() == []
    policy = dict(POLICY)
    del policy["cartage.routing.v1.RoutingService/WatchRoutePlan"]
    del policy[operation_key("CancelOperation", "routing")]
    assert sorted(unguarded_rpcs(policy=policy)) == [
        "cartage.routing.v1.RoutingService/WatchRoutePlan",
        "google.longrunning.Operations/CancelOperation@routing"]


def test_every_annotated_rpc_gets_a_route_with_its_policy_scope() -> None:
    rpcs = contracts.rest_rpcs(contracts.load())
    assert rpcs, "no annotated RPCs in build/cartage.binpb"
    generated = routes(build(config()))
    for rpc in rpcs:
        for _, key, rule in rules_of(rpc):
            assert generated[key]["match"]["path"] == rpc.path
            if key in PUBLIC:  # served without a token (a tracking link's own signed token)
                assert allowed_scopes(generated[key]) == ["public"]
                continue
            assert allowed_scopes(generated[key]) == ([rule.scope] if rule else [])
    transcoder = next(
        f for f in build(config())["static_resources"]["listeners"][0]["filter_chains"][0]
        ["filters"][0]["typed_config"]["http_filters"] if "transcoder" in f["name"])
    assert transcoder["typed_config"]["services"] == sorted({r.service_name for r in rpcs})


def test_public_routes_skip_the_token_and_have_their_own_rate_limit() -> None:
    bootstrap = build(config())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    jwt = next(f for f in hcm["typed_config"]["http_filters"] if "jwt_authn" in f["name"])
    rules = jwt["typed_config"]["rules"]
    shared = "/cartage.tracking.v1.TrackingService/GetSharedTracking"
    assert {"match": {"path": shared}} in rules
    regexes = [r["match"]["safe_regex"]["regex"] for r in rules if "safe_regex" in r["match"]]
    assert sorted(regexes) == ["^/v1/downloads/[^/]+$", "^/v1/sharedTracking/[^/]+$"]
    assert all("requires" not in r for r in rules[:-1]) and "requires" in rules[-1]
    route = routes(bootstrap)[shared.lstrip("/")]
    limit = route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    assert limit["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    # nothing else is public: exactly the PUBLIC table's lines
    public = [name for name, r in routes(bootstrap).items() if "route" in r
              and allowed_scopes(r) == ["public"]]
    assert sorted(public) == sorted(PUBLIC) == [
        "cartage.document.v1.DocumentService/DownloadDocument", shared.lstrip("/")]


def test_an_rpc_without_a_policy_line_is_denied_to_everyone() -> None:
    policy = dict(POLICY)
    del policy["cartage.order.v1.OrderService/ReleaseOrder"]
    generated = routes(build(config(policy=policy)))
    assert allowed_scopes(generated["cartage.order.v1.OrderService/ReleaseOrder"]) == []
    assert allowed_scopes(generated["cartage.order.v1.OrderService/CancelOrder"]) == [
        "orders.write"]


def test_identity_headers_are_stripped_before_anything_else() -> None:
    hcm = build(config())["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    response_only, first = hcm["typed_config"]["http_filters"][:2]
    # The REST response filter comes first but does nothing on the request path.
    assert response_only["name"] == "cartage.rest_response"
    lua = response_only["typed_config"]["extension_config"]["typed_config"]
    assert "envoy_on_request" not in lua["default_source_code"]["inline_string"]
    assert first["name"] == "envoy.filters.http.header_mutation"
    removed = {m["remove"] for m in first["typed_config"]["mutations"]["request_mutations"]}
    assert {"x-cartage-client-id", "x-cartage-scopes"} <= removed


# --- services: the registry's; Operations: per call, the operation's owner -----------------

OPERATIONS = "google.longrunning.Operations"


def has_operations(descriptors: Any) -> bool:
    return any(f"{f.package}.{s.name}" == OPERATIONS for f in descriptors.file for s in f.service)


def transcoded_services(bootstrap: dict[str, Any]) -> list[str]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    [transcoder] = [f for f in hcm["typed_config"]["http_filters"] if "transcoder" in f["name"]]
    return list(transcoder["typed_config"]["services"])


def http_filters(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return list(hcm["typed_config"]["http_filters"])


def test_each_service_is_routed_to_its_own_upstream() -> None:
    bootstrap = build(config())
    clusters = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    assert {entry.cluster for entry in registry.SERVICES} <= clusters
    generated = routes(bootstrap)
    for rpc in contracts.rpcs(contracts.load()):
        if rpc.shared:
            continue
        [entry] = [e for e in registry.SERVICES if rpc.service_name in e.grpc_services]
        assert rpc.owners == (entry.name,)
        assert generated[rpc.path.lstrip("/")]["route"]["cluster"] == entry.cluster
    # Without the routing upstream, nothing of the routing service is routed or transcoded.
    order_only = build(config(upstreams={"order": "127.0.0.1:50051"}))
    assert all(r["route"]["cluster"] == "svc_order" for r in routes(order_only).values()
               if "route" in r)
    assert all(s.startswith("cartage.order.") for s in transcoded_services(order_only))
    assert operations.FILTER not in [f["name"] for f in http_filters(order_only)]
    with pytest.raises(ValueError, match="nosuch"):
        build(config(upstreams={"order": "127.0.0.1:50051", "nosuch": "127.0.0.1:1"}))


def test_every_service_in_the_contracts_is_registered() -> None:
    served = {f"{f.package}.{s.name}" for f in contracts.load().file for s in f.service
              if f.package.startswith("cartage.")}
    registered = {name for entry in registry.SERVICES for name in entry.grpc_services}
    assert served == registered
    for entry in registry.SERVICES:
        assert all(s.startswith(entry.proto_package + ".") for s in entry.grpc_services)


def test_unary_routes_time_out_and_streaming_routes_do_not() -> None:
    generated = routes(build(config(unary_timeout_seconds=2.5)))
    rpcs = contracts.rpcs(contracts.load())
    streaming = [r for r in rpcs if r.streaming]
    assert sorted(r.method for r in streaming) == [
        "RecordPositions", "WatchRoutePlan", "WatchTracking"]
    for rpc in rpcs:
        for _, key, _ in rules_of(rpc):
            timeout = generated[key]["route"]["timeout"]
            if rpc.streaming:
                assert timeout == "0s", key
            elif rpc.method == "WaitOperation":
                assert timeout == "90s", key  # longer than the service's 60 s wait
            else:
                assert timeout == "2.5s", key
    assert routes(build(config()))["cartage.order.v1.OrderService/GetOrder"]["route"][
        "timeout"] == "30s"


def test_operations_are_routed_per_owner_with_the_owners_scopes() -> None:
    descriptors = contracts.load()
    if not has_operations(descriptors):
        pytest.skip("the contracts do not use google.longrunning yet")
    bootstrap = build(config())
    generated = routes(bootstrap)
    ops = [r for r in contracts.rpcs(descriptors) if r.service_name == OPERATIONS]
    assert {r.method for r in ops} >= {"GetOperation", "ListOperations", "CancelOperation",
                                       "DeleteOperation", "WaitOperation"}
    owners = registry.operations_owners()
    assert [o.name for o in owners] == ["routing", "tracking", "document"]
    names = list(generated)
    for rpc in ops:
        assert rpc.owners == ("routing", "tracking", "document")
        first = generated[rpc.path.lstrip("/")]  # where a call lands before the filter
        assert first["match"] == {"path": rpc.path} and "route" not in first
        assert allowed_scopes(first) == []
        for owner in owners:
            route = generated[operation_key(rpc.method, owner.name)]
            assert route["match"] == {"path": rpc.path, "headers": [{
                "name": operations.SERVICE_HEADER, "string_match": {"exact": owner.name}}]}
            assert route["route"]["cluster"] == owner.cluster
            assert owner.operation_scopes is not None
            read = rpc.method in ("GetOperation", "ListOperations", "WaitOperation")
            assert allowed_scopes(route) == [owner.operation_scopes.read if read
                                             else owner.operation_scopes.write]
            assert names.index(route["name"]) < names.index(first["name"])
            assert route["typed_per_filter_config"][operations.FILTER] == (
                operations.per_route())
    assert registry.get("routing").operation_scopes == (
        registry.OperationScopes("routes.read", "routes.write"))
    assert registry.get("tracking").operation_scopes == (
        registry.OperationScopes("webhooks.read", "webhooks.write"))
    assert registry.get("document").operation_scopes == (
        registry.OperationScopes("documents.read", "documents.write"))
    # The Lua filter sits between the transcoder and RBAC, with no code for other routes.
    names_in_chain = [f["name"] for f in http_filters(bootstrap)]
    assert (names_in_chain.index("envoy.filters.http.grpc_json_transcoder")
            < names_in_chain.index(operations.FILTER)
            < names_in_chain.index("envoy.filters.http.rbac"))
    [lua] = [f for f in http_filters(bootstrap) if f["name"] == operations.FILTER]
    assert "default_source_code" not in lua["typed_config"]
    assert all(operations.FILTER not in r.get("typed_per_filter_config", {})
               for name, r in generated.items() if not name.startswith(OPERATIONS))
    # A caller cannot pre-set the owner header.
    [mutation] = [f for f in http_filters(bootstrap)
                  if f["name"] == "envoy.filters.http.header_mutation"]
    removed = {m["remove"] for m in mutation["typed_config"]["mutations"][
        "request_mutations"]}
    assert operations.SERVICE_HEADER in removed
    assert OPERATIONS in transcoded_services(bootstrap)
    # WaitOperation has no HTTP rule: routed for native gRPC, absent from the REST document.
    document = openapi.build(descriptors)
    operation_ids = {op["operationId"] for path in document["paths"].values()
                     for op in path.values()}
    assert {"GetOperation", "ListOperations", "CancelOperation", "DeleteOperation"
            } <= operation_ids
    assert "WaitOperation" not in operation_ids
    get = document["paths"]["/v1/operations/{operation_id}"]["get"]
    # Any owner's read scope (the service segment picks the owner; the document lists each).
    assert get["security"] == [{"oauth2": ["routes.read"]}, {"oauth2": ["webhooks.read"]},
                               {"oauth2": ["documents.read"]}]
    # The service is a path parameter of its own (an encoded slash would stay encoded).
    by_service = document["paths"]["/v1/operations/{service}/{operation_id}"]
    assert [p["name"] for p in by_service["get"]["parameters"]] == ["service", "operation_id"]
    assert set(by_service) == {"get", "delete"}
    assert "/v1/operations/{service}/{operation_id}:cancel" in document["paths"]
    # `{name=operations}` binds `name` in the path: not a query parameter as well.
    listed = document["paths"]["/v1/operations"]["get"]
    assert "name" not in {p["name"] for p in listed["parameters"]}
    # Who serves Operations is the registry's say only.
    moved = tuple(registry.ServiceEntry(**{**e.__dict__, "serves_operations": e.name == "order",
                                           "operation_scopes": registry.OperationScopes(
                                               "orders.read", "orders.write")})
                  for e in registry.SERVICES)
    assert {r.owners for r in contracts.rpcs(descriptors, moved)
            if r.service_name == OPERATIONS} == {("order",)}
    nobody = tuple(registry.ServiceEntry(**{**e.__dict__, "serves_operations": False})
                   for e in registry.SERVICES)
    assert not any(r.service_name == OPERATIONS for r in contracts.rpcs(descriptors, nobody))


def test_the_registry_imports_no_service() -> None:
    code = ("import sys, services.registry; "
            "print(sorted(m for m in sys.modules if m.startswith(('services.', 'cartage', "
            "'grpc', 'google'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "['services.registry']", result.stdout
    # ... and the kit, which knows no service, never reads it.
    kit = Path(registry.__file__).parent / "kit"
    assert not [p for p in kit.rglob("*.py") if "registry" in p.read_text()
                and ("from services import registry" in p.read_text()
                     or "services.registry" in p.read_text())]


def test_contracts_without_the_routing_package_still_build(tmp_path: Path) -> None:
    """As before the routing contracts landed: the registry names a service (and an
    operations owner) that is not in the descriptor set, and its upstream is configured."""
    descriptors = contracts.load()
    # (and without the services that came after it, nor files that import longrunning)
    kept = [f for f in descriptors.file
            if not f.package.startswith(("cartage.routing", "google.longrunning"))
            and "google/longrunning/operations.proto" not in f.dependency
            and not any(f.package == e.proto_package for e in registry.SERVICES
                        if e.name not in ("order", "routing"))]
    del descriptors.file[:]
    descriptors.file.extend(kept)
    path = tmp_path / "order-only.binpb"
    path.write_bytes(descriptors.SerializeToString())
    assert not has_operations(descriptors)
    bootstrap = build(config(descriptor_set=path))
    generated = routes(bootstrap)
    assert not any(name.startswith((OPERATIONS, "cartage.routing.")) for name in generated)
    assert transcoded_services(bootstrap) == ["cartage.order.v1.OrderService"]
    validate = tmp_path / "envoy.json"
    validate.write_text(json.dumps(bootstrap))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(validate),
                             "--log-level", "error"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_json_filter_sits_before_the_transcoder_and_skips_only_grpc() -> None:
    hcm = build(config())["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    names = [f["name"] for f in hcm["typed_config"]["http_filters"]]
    assert names.index("cartage.strict_json") < names.index(
        "envoy.filters.http.grpc_json_transcoder")
    assert "envoy.filters.http.ext_authz" not in names  # no call out of Envoy per request
    [strict] = [f for f in hcm["typed_config"]["http_filters"]
                if f["name"] == "cartage.strict_json"]
    lua = strict["typed_config"]["extension_config"]["typed_config"]["default_source_code"][
        "inline_string"]
    # Every binding the transcoder serves is in the filter's path matcher.
    for rpc in contracts.rest_rpcs(contracts.load()):
        for binding in rpc.bindings:
            for segment in binding.template.replace("{", "/").replace("}", "/").split("/"):
                literal = segment.split("=")[-1].split(":")[0]
                if literal and "*" not in literal and "." not in literal:
                    assert f'["{literal}"]' in lua, (binding.template, literal)


def test_rest_responses_pass_the_rest_filter_first_and_every_error_has_a_reason() -> None:
    from gateway.envoy_config import LOCAL_REPLY_CODES, LOCAL_REPLY_REASONS

    hcm = build(config())["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = hcm["typed_config"]["http_filters"]
    # First in the chain = last on the response path: it sees every local reply too.
    assert filters[0]["name"] == "cartage.rest_response"
    skip = filters[0]["typed_config"]["xds_matcher"]["matcher_list"]["matchers"][0]
    assert json.dumps(skip).count("application/grpc") == 2  # native gRPC keeps its headers
    transcoder = next(f for f in filters if f["name"].endswith("grpc_json_transcoder"))
    assert transcoder["typed_config"]["print_options"]["always_print_primitive_fields"]
    assert set(LOCAL_REPLY_REASONS) == set(LOCAL_REPLY_CODES)
    for mapper in hcm["typed_config"]["local_reply_config"]["mappers"]:
        if "body_format_override" in mapper:
            [info] = mapper["body_format_override"]["json_format"]["details"]
            assert info["@type"].endswith("google.rpc.ErrorInfo") and info["reason"]


def test_every_rest_path_answers_other_methods_with_405_and_allow() -> None:
    import re

    table = [r for r in routes(build(config())).values()
             if r["name"].startswith("method_not_allowed")]
    names = list(routes(build(config())))
    assert names.index("method_not_allowed /v1/orders/[^/]+") < names.index("not_found")

    def allow(path: str) -> str:
        for route in table:
            if re.fullmatch(route["match"]["safe_regex"]["regex"], path):
                return str(route["response_headers_to_add"][0]["header"]["value"])
        return ""

    assert allow("/v1/orders") == "GET, POST"
    assert allow("/v1/orders/abc") == "GET, PATCH"
    assert allow("/v1/orders/abc:cancel") == "POST"
    assert allow("/v1/vehicles/v1") == "DELETE, GET, PATCH"
    assert allow("/v1/operations/routing/x") == "DELETE, GET"
    assert allow("/v1/operations/routing/x:cancel") == "POST"
    assert allow("/v1/routePlans:plan") == "POST"
    assert allow("/v1/nothing") == ""


def test_a_public_rpc_skips_the_token_on_its_own_paths_only() -> None:
    """DownloadDocument (a signed link is its credential): its paths need no token, its route
    lets anyone in under a per-address rate limit; every other path still needs a token."""
    bootstrap = build(config())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    [jwt] = [f for f in hcm["typed_config"]["http_filters"]
             if f["name"] == "envoy.filters.http.jwt_authn"]
    rules = jwt["typed_config"]["rules"]
    open_rules = [r["match"] for r in rules if "requires" not in r]
    assert {"safe_regex": {"regex": r"^/v1/downloads/[^/]+$"}} in open_rules
    assert rules[-1] == {"match": {"prefix": "/"}, "requires": {"provider_name": "cartage"}}
    assert not any("GetDocumentContent" in json.dumps(m) for m in open_rules)
    route = routes(bootstrap)["cartage.document.v1.DocumentService/DownloadDocument"]
    assert allowed_scopes(route) == ["public"]
    assert "envoy.filters.http.local_ratelimit" in route["typed_per_filter_config"]
    assert allowed_scopes(routes(bootstrap)[
        "cartage.document.v1.DocumentService/GetDocumentContent"]) == ["documents.read"]


def test_a_larger_body_is_allowed_on_its_rest_path_only() -> None:
    """CaptureProofOfDelivery's policy line raises the strict JSON buffer for its REST path
    (the route the filters before the transcoder see); nothing is served from that route."""
    from gateway.envoy_config import STRICT_JSON_BUFFER

    generated = routes(build(config()))
    route = generated["rest-body:cartage.document.v1.DocumentService/CaptureProofOfDelivery"]
    # Its own method only: TRACE on the path is the 405 with Allow.
    assert route["match"] == {"path": "/v1/documents:captureProofOfDelivery", "headers": [
        {"name": ":method", "string_match": {"exact": "POST"}}]}
    assert route["direct_response"]["status"] == 404 and "route" not in route
    limit = POLICY["cartage.document.v1.DocumentService/CaptureProofOfDelivery"]
    assert route["typed_per_filter_config"][STRICT_JSON_BUFFER]["buffer"] == {
        "max_request_bytes": limit.max_request_bytes}
    assert [name for name in generated if name.startswith("rest-body:")] == [
        "rest-body:cartage.document.v1.DocumentService/CaptureProofOfDelivery"]
    names = list(generated)
    assert names.index(route["name"]) < names.index("not_found")
