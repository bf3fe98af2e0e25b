"""Route timeouts through the real Envoy: a unary route times out (GatewayConfig's
`unary_timeout_seconds`, here 2 s), a server-streaming one (WatchRoutePlan) never does.

Two Envoys in front of the same services: the generated config, and a control in which the
watch route gets the unary timeout, as every route did before (30 s then). The same watch is
cut after 2 s by the control and still delivers a new version after 5 s through the generated
config: the watch outlives the unary timeout there because its route has none (0s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from cartage.routing.v1 import route_plan_pb2, routing_service_pb2, routing_service_pb2_grpc
from gateway.envoy_config import build
from tests.conftest import Stack
from tests.e2e.conftest import Partner, gateway_config
from tests.e2e.harness import EnvoyProcess, RunningAuth
from tests.integration.routing.conftest import make_vehicle, shipment, unique

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

UNARY_TIMEOUT = 2.0
WATCH = "cartage.routing.v1.RoutingService/WatchRoutePlan"
SCOPES = ("fleet.read", "fleet.write", "routes.read", "routes.write", "decisions.approve")


def routes_of(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return {r["name"]: r for r in
            hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]}


@pytest.fixture(scope="module")
def short_envoys(stack: Stack, gateway_auth: RunningAuth,
                 upstreams: dict[str, str]) -> Iterator[tuple[EnvoyProcess, EnvoyProcess]]:
    """(generated with a 2 s unary timeout, the same with that timeout on the watch route)."""
    started: list[EnvoyProcess] = []
    try:
        for cut_streams in (False, True):
            config = gateway_config(stack, gateway_auth, upstreams, None,
                                    unary_timeout_seconds=UNARY_TIMEOUT)
            bootstrap = build(config)
            routes = routes_of(bootstrap)
            assert routes[WATCH]["route"]["timeout"] == "0s"
            assert routes["cartage.routing.v1.RoutingService/GetRoutePlan"]["route"][
                "timeout"] == "2s"
            if cut_streams:
                routes[WATCH]["route"]["timeout"] = "2s"
            started.append(EnvoyProcess(bootstrap, stack.tmp, config.listen_port).start())
        yield started[0], started[1]
    finally:
        for envoy in started:
            envoy.stop()


async def proposed_plan(partner: Partner) -> dict[str, Any]:
    """A plan waiting for a decision (autonomy L1): its watch stays open until someone
    decides."""
    vehicle_id = unique()
    created = await partner.http.post(
        f"/v1/vehicles?vehicleId={vehicle_id}",
        json=json_format.MessageToDict(make_vehicle(weight=500)))
    assert created.status_code == 200, created.text
    started = await partner.http.post("/v1/routePlans:plan", json={
        "shipments": [json_format.MessageToDict(shipment("one", 52.53, 13.41, weight=100))],
        "vehicles": [f"vehicles/{vehicle_id}"], "timeLimit": "1s"})
    assert started.status_code == 200, started.text
    for _ in range(150):
        operation = (await partner.http.get(f"/v1/{started.json()['name']}")).json()
        if operation.get("done"):
            plan: dict[str, Any] = operation["response"]
            assert plan["state"] == "STATE_PROPOSED", plan
            return plan
        await asyncio.sleep(0.1)
    raise AssertionError("the plan was not solved within 15 s")


async def test_a_watch_outlives_the_unary_route_timeout(
        partner_factory: Any, short_envoys: tuple[EnvoyProcess, EnvoyProcess]) -> None:
    generated, control = short_envoys
    partner: Partner = await partner_factory(SCOPES)
    plan = await proposed_plan(partner)
    auth = (("authorization", f"Bearer {partner.token}"),)
    request = routing_service_pb2.WatchRoutePlanRequest(name=plan["name"])

    # The control: a watch route with the unary timeout is cut by Envoy after it.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{control.port}") as channel:
        call = routing_service_pb2_grpc.RoutingServiceStub(channel).WatchRoutePlan(
            request, metadata=auth)
        assert (await call.read()).name == plan["name"]
        opened = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await asyncio.wait_for(call.read(), timeout=10)
        assert UNARY_TIMEOUT - 0.5 < time.monotonic() - opened < 6
        # Mid-stream Envoy can only reset the stream: the caller sees INTERNAL.
        assert cut.value.code() == grpc.StatusCode.INTERNAL, cut.value
        assert "RST_STREAM" in (cut.value.details() or "")

    # The generated config: the watch is still open after 2.5 unary timeouts and delivers the
    # next version (the plan rejected, a final state) when it comes, then ends.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{generated.port}") as channel:
        call = routing_service_pb2_grpc.RoutingServiceStub(channel).WatchRoutePlan(
            request, metadata=auth)
        first = await call.read()
        assert first.state == route_plan_pb2.RoutePlan.STATE_PROPOSED
        pending = asyncio.ensure_future(call.read())
        await asyncio.sleep(2.5 * UNARY_TIMEOUT)
        assert not pending.done(), "the watch ended before the plan changed"
        rejected = await partner.http.post(f"/v1/{plan['decision']}:reject",
                                           json={"reason": "timeout test"})
        assert rejected.status_code == 200, rejected.text
        update = await asyncio.wait_for(pending, timeout=10)
        assert update != grpc.aio.EOF and update.state == route_plan_pb2.RoutePlan.STATE_REJECTED
        assert await asyncio.wait_for(call.read(), timeout=10) == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
