"""The generated Envoy config: accepted by the real `envoy --mode validate`, and derived from the
contracts plus the policy table (deny by default)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway import contracts, openapi
from gateway.envoy_config import GatewayConfig, build, envoy_binary
from gateway.policy import POLICY

pytestmark = pytest.mark.integration


def config(**overrides: Any) -> GatewayConfig:
    base: dict[str, Any] = dict(listen_port=18080, admin_port=19901,
                                auth_address="127.0.0.1:18090",
                                issuer="http://127.0.0.1:18090",
                                upstreams={"order": "127.0.0.1:50051",
                                           "routing": "127.0.0.1:50052"})
    return GatewayConfig(**(base | overrides))


def routes(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    vhost = hcm["typed_config"]["route_config"]["virtual_hosts"][0]
    return {r["name"]: r for r in vhost["routes"]}


def allowed_scopes(route: dict[str, Any]) -> list[str]:
    rbac = route["typed_per_filter_config"]["envoy.filters.http.rbac"]["rbac"]
    return [name.removeprefix("scope:") for name in rbac["rules"]["policies"]]


@pytest.mark.parametrize("order", ["127.0.0.1:50051",
                                   "unix:/run/cartage/order-0.sock,unix:/run/cartage/order-1.sock"])
def test_envoy_accepts_the_generated_config(tmp_path: Path, order: str) -> None:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(build(config(
        audit_address="127.0.0.1:18091",
        upstreams={"order": order, "routing": "127.0.0.1:50052"}))))
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


def test_every_annotated_rpc_gets_a_route_with_its_policy_scope() -> None:
    rpcs = contracts.rest_rpcs(contracts.load())
    assert rpcs, "no annotated RPCs in build/cartage.binpb"
    generated = routes(build(config()))
    for rpc in rpcs:
        key = rpc.path.lstrip("/")
        assert generated[key]["match"] == {"path": rpc.path}
        assert allowed_scopes(generated[key]) == ([POLICY[key].scope] if key in POLICY else [])
    transcoder = next(
        f for f in build(config())["static_resources"]["listeners"][0]["filter_chains"][0]
        ["filters"][0]["typed_config"]["http_filters"] if "transcoder" in f["name"])
    assert transcoder["typed_config"]["services"] == sorted({r.service_name for r in rpcs})


def test_an_rpc_without_a_policy_line_is_denied_to_everyone() -> None:
    policy = dict(POLICY)
    del policy["cartage.order.v1.OrderService/ReleaseOrder"]
    generated = routes(build(config(policy=policy)))
    assert allowed_scopes(generated["cartage.order.v1.OrderService/ReleaseOrder"]) == []
    assert allowed_scopes(generated["cartage.order.v1.OrderService/CancelOrder"]) == [
        "orders.write"]


def test_identity_headers_are_stripped_before_anything_else() -> None:
    hcm = build(config())["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    first = hcm["typed_config"]["http_filters"][0]
    assert first["name"] == "envoy.filters.http.header_mutation"
    removed = {m["remove"] for m in first["typed_config"]["mutations"]["request_mutations"]}
    assert {"x-cartage-client-id", "x-cartage-scopes"} <= removed


# --- domains: the package's, or EXTRA_SERVICES for standard services ------------------------

OPERATIONS = "google.longrunning.Operations"


def has_operations(descriptors: Any) -> bool:
    return any(f"{f.package}.{s.name}" == OPERATIONS for f in descriptors.file for s in f.service)


def transcoded_services(bootstrap: dict[str, Any]) -> list[str]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    [transcoder] = [f for f in hcm["typed_config"]["http_filters"] if "transcoder" in f["name"]]
    return list(transcoder["typed_config"]["services"])


def test_each_domain_is_routed_to_its_own_upstream() -> None:
    bootstrap = build(config())
    clusters = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    assert {"svc_order", "svc_routing"} <= clusters
    generated = routes(bootstrap)
    for rpc in contracts.rpcs(contracts.load()):
        assert rpc.domain == contracts.EXTRA_SERVICES.get(
            rpc.service_name, rpc.package.split(".")[1])
        assert generated[rpc.path.lstrip("/")]["route"]["cluster"] == f"svc_{rpc.domain}"
    # Without the routing upstream, nothing of the routing domain is routed or transcoded.
    order_only = build(config(upstreams={"order": "127.0.0.1:50051"}))
    assert all(r["route"]["cluster"] == "svc_order" for r in routes(order_only).values()
               if "route" in r)
    assert all(s.startswith("cartage.order.") for s in transcoded_services(order_only))


def test_standard_services_are_served_by_the_domain_extra_services_names() -> None:
    descriptors = contracts.load()
    if not has_operations(descriptors):
        pytest.skip("the contracts do not use google.longrunning yet")
    bootstrap = build(config())
    generated = routes(bootstrap)
    ops = [r for r in contracts.rpcs(descriptors) if r.service_name == OPERATIONS]
    assert {r.method for r in ops} >= {"GetOperation", "ListOperations", "CancelOperation",
                                       "DeleteOperation", "WaitOperation"}
    for rpc in ops:
        route = generated[rpc.path.lstrip("/")]
        assert route["match"] == {"path": rpc.path}
        assert route["route"]["cluster"] == "svc_routing"
        # Deny by default until policy.py has a line for it.
        key = rpc.path.lstrip("/")
        assert allowed_scopes(route) == ([POLICY[key].scope] if key in POLICY else [])
    assert OPERATIONS in transcoded_services(bootstrap)
    # WaitOperation has no HTTP rule: routed for native gRPC, absent from the REST document.
    document = openapi.build(descriptors)
    operation_ids = {op["operationId"] for path in document["paths"].values()
                     for op in path.values()}
    assert {"GetOperation", "ListOperations", "CancelOperation", "DeleteOperation"
            } <= operation_ids
    assert "WaitOperation" not in operation_ids
    get = document["paths"]["/v1/operations/{operation_id}"]["get"]
    rule = POLICY.get(f"{OPERATIONS}/GetOperation")
    assert get["security"] == [{"oauth2": [rule.scope if rule else "-"]}]
    # `{name=operations}` binds `name` in the path: not a query parameter as well.
    listed = document["paths"]["/v1/operations"]["get"]
    assert "name" not in {p["name"] for p in listed["parameters"]}
    # The mapping is the only thing that makes it a routing RPC.
    moved = contracts.rpcs(descriptors, extra={OPERATIONS: "order"})
    assert {r.domain for r in moved if r.service_name == OPERATIONS} == {"order"}
    unmapped = contracts.rpcs(descriptors, extra={})
    assert not any(r.service_name == OPERATIONS for r in unmapped)


def test_contracts_without_the_routing_package_still_build(tmp_path: Path) -> None:
    """As before the routing contracts landed: EXTRA_SERVICES names a service that is not in
    the descriptor set, and a `routing` upstream may be configured already."""
    descriptors = contracts.load()
    kept = [f for f in descriptors.file
            if not f.package.startswith(("cartage.routing", "google.longrunning"))]
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
