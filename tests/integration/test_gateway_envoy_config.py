"""The generated Envoy config: accepted by the real `envoy --mode validate`, and derived from the
contracts plus the policy table (deny by default)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway import contracts
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


def test_envoy_accepts_the_generated_config(tmp_path: Path) -> None:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(build(config(audit_address="127.0.0.1:18091"))))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path),
                             "--log-level", "error"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_every_annotated_rpc_gets_a_route_with_its_policy_scope() -> None:
    rpcs = contracts.rest_rpcs(contracts.load())
    assert rpcs, "no annotated RPCs in build/cartage.binpb"
    generated = routes(build(config()))
    for rpc in rpcs:
        key = rpc.path.lstrip("/")
        assert generated[key]["match"] == {"path": rpc.path}
        assert allowed_scopes(generated[key]) == [POLICY[key].scope]
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
