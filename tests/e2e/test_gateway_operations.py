"""google.longrunning.Operations through the edge: each call reaches the service named in the
operation's name (`operations/{service}/{id}`; the old `operations/{id}` is routing's), under
that service's scopes, over REST and native gRPC alike; an unknown service gets the gateway's
own NOT_FOUND."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2_grpc, operations_proto_pb2

from services import registry
from tests.e2e.conftest import Partner
from tests.e2e.harness import EnvoyProcess

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

ops = operations_proto_pb2
ROUTING_READ = ("routes.read",)
UPSTREAM = f"cluster.{registry.get('routing').cluster}.upstream_rq_total"


def sent_to_routing(envoy: EnvoyProcess) -> int:
    return envoy.counters(UPSTREAM).get(UPSTREAM, 0)


def from_routing_not_found(response: Any) -> bool:
    """The routing service's own answer to a well-formed name it does not know: 404 with
    details (the gateway's own replies carry none)."""
    body = response.json()
    return bool(response.status_code == 404 and body["code"] == 5 and body.get("details"))


async def test_rest_operation_calls_reach_the_service_the_name_names(
        envoy: EnvoyProcess, partner_factory: Any) -> None:
    partner: Partner = await partner_factory(ROUTING_READ)
    unknown = uuid.uuid4().hex
    before = sent_to_routing(envoy)
    legacy = await partner.http.get(f"/v1/operations/{unknown}")
    assert legacy.status_code == 404, legacy.text
    assert legacy.json()["code"] == 5 and legacy.json()["details"], legacy.text  # routing's
    named = await partner.http.get(f"/v1/operations/routing/{unknown}")
    assert from_routing_not_found(named), named.text
    assert "x-envoy-upstream-service-time" in named.headers
    listed = await partner.http.get("/v1/operations")  # the default owner: routing
    assert listed.status_code == 200, listed.text
    assert sent_to_routing(envoy) == before + 3
    # A caller's own owner header changes nothing: the filter sets it from the name.
    spoofed = await partner.http.get(f"/v1/operations/{unknown}",
                                     headers={"x-cartage-operation-service": "order"})
    assert spoofed.status_code == 404 and spoofed.json()["details"], spoofed.text
    assert sent_to_routing(envoy) == before + 4
    # A percent-encoded slash is no separator in the name (the transcoder keeps it encoded in
    # a multi-segment variable): one segment, an old-form name, routing's to refuse. Hence
    # OpenAPI's second path with `{service}` as a parameter of its own.
    encoded = await partner.http.get(f"/v1/operations/nosuch%2F{unknown}")
    assert encoded.status_code == 400 and encoded.json()["details"], encoded.text
    assert sent_to_routing(envoy) == before + 5


async def test_an_unknown_service_in_the_name_is_the_gateways_404(
        envoy: EnvoyProcess, partner_factory: Any) -> None:
    partner: Partner = await partner_factory(ROUTING_READ)
    before = sent_to_routing(envoy)
    for call in (partner.http.get(f"/v1/operations/nosuch/{uuid.uuid4().hex}"),
                 partner.http.delete(f"/v1/operations/nosuch/{uuid.uuid4().hex}"),
                 partner.http.post(f"/v1/operations/nosuch/{uuid.uuid4().hex}:cancel",
                                   json={})):
        response = await call
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["code"] == 5
        assert [d["reason"] for d in body["details"]] == ["NOT_FOUND"], body
        assert "no service named nosuch" in body["message"]
    assert sent_to_routing(envoy) == before


async def test_operation_scopes_follow_the_owning_service(
        envoy: EnvoyProcess, partner_factory: Any) -> None:
    orders_only: Partner = await partner_factory(("orders.read", "orders.write"))
    reader: Partner = await partner_factory(ROUTING_READ)
    name = f"operations/routing/{uuid.uuid4().hex}"
    denied = await orders_only.http.get(f"/v1/{name}")
    assert denied.status_code == 403 and denied.json()["code"] == 7, denied.text
    cancel = await reader.http.post(f"/v1/{name}:cancel", json={})
    assert cancel.status_code == 403, cancel.text  # cancelling needs routes.write
    assert (await reader.http.get(f"/v1/{name}")).status_code != 403


async def test_native_grpc_operation_calls_are_routed_by_the_name_in_the_body(
        envoy: EnvoyProcess, partner_factory: Any) -> None:
    partner: Partner = await partner_factory(ROUTING_READ)
    auth = (("authorization", f"Bearer {partner.token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{envoy.port}") as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        before = sent_to_routing(envoy)
        with pytest.raises(grpc.aio.AioRpcError) as legacy:
            await stub.GetOperation(ops.GetOperationRequest(name=f"operations/{uuid.uuid4().hex}"),
                                    metadata=auth, timeout=10)
        assert legacy.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as named:
            await stub.WaitOperation(ops.WaitOperationRequest(
                name=f"operations/routing/{uuid.uuid4().hex}"), metadata=auth, timeout=10)
        assert named.value.code() in (grpc.StatusCode.NOT_FOUND,
                                      grpc.StatusCode.INVALID_ARGUMENT)
        # ListOperations: `operations` (or empty) is the default owner's collection.
        listed = await stub.ListOperations(ops.ListOperationsRequest(
            name="operations", filter="done = true", page_size=3), metadata=auth, timeout=10)
        assert len(listed.operations) <= 3
        assert sent_to_routing(envoy) == before + 3
        for call in (stub.GetOperation(ops.GetOperationRequest(name="operations/nosuch/x"),
                                       metadata=auth, timeout=10),
                     stub.ListOperations(ops.ListOperationsRequest(
                         name="operations/nosuch", page_size=3), metadata=auth, timeout=10)):
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await call
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            assert "no service named nosuch" in (unknown.value.details() or "")
        assert sent_to_routing(envoy) == before + 3
