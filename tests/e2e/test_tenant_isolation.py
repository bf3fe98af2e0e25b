"""Tenant isolation through the gateway: partner B, with every scope, names partner A's
resources on every RPC that takes a name, orders and routing alike. Each call is NOT_FOUND
(404, answered by the service, indistinguishable from a name nobody has), and A reads every
resource back unchanged. The RPCs that take no name (lists, replanning, incidents, the
autonomy policy) act on B's own data only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from google.longrunning import operations_pb2_grpc, operations_proto_pb2
from google.protobuf import duration_pb2

from gateway.auth.clients import ClientRegistry
from tests.e2e.conftest import Partner
from tests.e2e.harness import EnvoyProcess, RunningAuth
from tests.e2e.test_gateway_journeys import order_json
from tests.e2e.test_routing_rest import ROUTING_SCOPES, as_json, done_operation
from tests.integration.routing.conftest import make_vehicle, shipment, unique

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

SCOPES = ("orders.read", "orders.write", *ROUTING_SCOPES)


@dataclass
class World:
    a: Partner
    b: Partner
    names: dict[str, str]  # resource kind → A's resource name
    snapshot: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def read(self, kind: str) -> dict[str, Any]:
        response = await self.a.http.get(f"/v1/{self.names[kind]}")
        assert response.status_code == 200, (kind, response.text)
        body: dict[str, Any] = response.json()
        return body


async def _partner(envoy: EnvoyProcess, auth: RunningAuth, registry: ClientRegistry,
                   opened: list[httpx.AsyncClient]) -> Partner:
    client_id = f"tenant-{uuid.uuid4().hex[:8]}"
    secret = await registry.create(client_id, list(SCOPES))
    async with AsyncOAuth2Client(client_id, secret,
                                 token_endpoint_auth_method="client_secret_basic") as oauth:
        token = (await oauth.fetch_token(auth.token_url,
                                         grant_type="client_credentials"))["access_token"]
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{envoy.port}", timeout=15,
                             headers={"authorization": f"Bearer {token}"})
    opened.append(http)
    return Partner(client_id, secret, token, http)


@pytest.fixture(scope="module")
async def world(envoy: EnvoyProcess, gateway_auth: RunningAuth,
                registry: ClientRegistry) -> AsyncIterator[World]:
    opened: list[httpx.AsyncClient] = []
    a = await _partner(envoy, gateway_auth, registry, opened)
    b = await _partner(envoy, gateway_auth, registry, opened)
    names: dict[str, str] = {}
    order = await a.http.post("/v1/orders", json=order_json())
    assert order.status_code == 200, order.text
    names["order"] = order.json()["name"]
    vehicle_id = unique()
    vehicle = await a.http.post(f"/v1/vehicles?vehicleId={vehicle_id}",
                                json=as_json(make_vehicle(weight=500)))
    assert vehicle.status_code == 200, vehicle.text
    names["vehicle"] = vehicle.json()["name"]
    started = await a.http.post("/v1/routePlans:plan", json={
        "shipments": [as_json(shipment("near", 52.53, 13.41, weight=200))],
        "vehicles": [names["vehicle"]], "timeLimit": "1s"})
    assert started.status_code == 200, started.text
    names["operation"] = started.json()["name"]
    plan = (await done_operation(a, names["operation"]))["response"]
    names["plan"] = plan["name"]
    names["decision"] = plan["decision"]  # the default policy (L1) leaves it pending
    incident = await a.http.post("/v1/trafficIncidents", json={
        "area": {"latitude": 48.1, "longitude": 11.6, "radiusMeters": 2000},
        "slowdownFactor": 3, "startTime": "2030-01-01T08:00:00Z",
        "endTime": "2030-01-01T18:00:00Z", "description": "A's incident"})
    assert incident.status_code == 200, incident.text
    names["incident"] = incident.json()["name"]
    names["policy"] = "autonomyPolicy"
    world = World(a, b, names)
    for kind in ("order", "vehicle", "operation", "plan", "decision", "policy"):
        world.snapshot[kind] = await world.read(kind)
    assert world.snapshot["decision"]["state"] == "STATE_PENDING"
    yield world
    for http in opened:
        await http.aclose()


# (id, method, path with {kind} placeholders, JSON body, A's resources to read back)
NAMED: list[tuple[str, str, str, dict[str, Any] | None, tuple[str, ...]]] = [
    ("GetOrder", "GET", "/v1/{order}", None, ("order",)),
    ("UpdateOrder", "PATCH", "/v1/{order}?updateMask=notes", {"notes": "B was here"},
     ("order",)),
    ("CancelOrder", "POST", "/v1/{order}:cancel", {"reason": "B"}, ("order",)),
    ("ReleaseOrder", "POST", "/v1/{order}:release", {}, ("order",)),
    ("GetVehicle", "GET", "/v1/{vehicle}", None, ("vehicle",)),
    ("UpdateVehicle", "PATCH", "/v1/{vehicle}?updateMask=displayName",
     {"displayName": "B's now"}, ("vehicle",)),
    ("DeleteVehicle", "DELETE", "/v1/{vehicle}", None, ("vehicle",)),
    ("SetVehicleStatus", "POST", "/v1/{vehicle}:setStatus",
     {"status": "STATUS_BROKEN_DOWN", "reason": "B"}, ("vehicle",)),
    ("GetRoutePlan", "GET", "/v1/{plan}", None, ("plan",)),
    ("WatchRoutePlan", "GET", "/v1/{plan}:watch", None, ("plan",)),
    ("ExportRoutePlan", "GET", "/v1/{plan}:export", None, ("plan",)),
    ("GetDecision", "GET", "/v1/{decision}", None, ("decision",)),
    ("ApproveDecision", "POST", "/v1/{decision}:approve", {}, ("decision", "plan")),
    ("RejectDecision", "POST", "/v1/{decision}:reject", {"reason": "B"}, ("decision", "plan")),
    ("GetOperation", "GET", "/v1/{operation}", None, ("operation",)),
    ("CancelOperation", "POST", "/v1/{operation}:cancel", {}, ("operation",)),
    ("DeleteOperation", "DELETE", "/v1/{operation}", None, ("operation",)),
]


async def unchanged(world: World, kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        assert await world.read(kind) == world.snapshot[kind], kind


@pytest.mark.parametrize(("method", "path", "body", "touches"),
                         [case[1:] for case in NAMED], ids=[case[0] for case in NAMED])
async def test_another_clients_resource_is_not_found_and_unchanged(
        world: World, method: str, path: str, body: dict[str, Any] | None,
        touches: tuple[str, ...]) -> None:
    theirs = await world.b.http.request(method, path.format(**world.names), json=body)
    assert theirs.status_code == 404, theirs.text
    error = theirs.json()
    # The service's NOT_FOUND (the gateway's own 404s carry no details) ...
    assert error["code"] == 5 and error["details"], error
    # ... and the same answer as for a name nobody has: nothing tells B that A's exists.
    nobody = {kind: name.rsplit("/", 1)[0] + "/"
              + (unique() if kind == "vehicle" else uuid.uuid4().hex)
              for kind, name in world.names.items()}
    unknown = await world.b.http.request(method, path.format(**nobody), json=body)
    assert unknown.status_code == 404
    assert ([d.get("reason") for d in unknown.json()["details"]]
            == [d.get("reason") for d in error["details"]])
    await unchanged(world, touches)


async def test_wait_operation_on_another_clients_operation_is_not_found(
        world: World, envoy: EnvoyProcess) -> None:
    # WaitOperation has no REST binding: native gRPC through the same listener.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{envoy.port}") as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.WaitOperation(
                operations_proto_pb2.WaitOperationRequest(
                    name=world.names["operation"], timeout=duration_pb2.Duration(seconds=1)),
                metadata=(("authorization", f"Bearer {world.b.token}"),), timeout=10)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    await unchanged(world, ("operation",))


LISTS = [("orders", "orders"), ("vehicles", "vehicles"), ("routePlans", "routePlans"),
         ("decisions", "decisions"), ("trafficIncidents", "trafficIncidents"),
         ("operations", "operations")]


async def test_lists_show_only_the_callers_own(world: World) -> None:
    mine = set(world.names.values())
    for path, key in LISTS:
        listed = await world.b.http.get(f"/v1/{path}")
        assert listed.status_code == 200, (path, listed.text)
        theirs = {item["name"] for item in listed.json().get(key, [])}
        assert not theirs & mine, path
        own = await world.a.http.get(f"/v1/{path}")
        assert own.status_code == 200, (path, own.text)
        assert {item["name"] for item in own.json().get(key, [])} & mine, path


async def test_rpcs_without_a_name_act_on_the_callers_own_data_only(world: World) -> None:
    # B's autonomy policy is B's: changing it leaves A's as it was.
    policy = (await world.b.http.get("/v1/autonomyPolicy")).json()
    domains = [{**d, "level": "AUTONOMY_LEVEL_L3"} for d in policy["domains"]]
    updated = await world.b.http.patch("/v1/autonomyPolicy?updateMask=domains",
                                       json={"domains": domains})
    assert updated.status_code == 200, updated.text
    assert {d["level"] for d in updated.json()["domains"]} == {"AUTONOMY_LEVEL_L3"}
    # B's incident on A's route and B's replan touch none of A's plans or decisions.
    incident = await world.b.http.post("/v1/trafficIncidents", json={
        "area": {"latitude": 52.53, "longitude": 13.41, "radiusMeters": 3000},
        "slowdownFactor": 4, "startTime": "2030-01-01T06:00:00Z",
        "endTime": "2030-01-01T20:00:00Z", "description": "B's incident"})
    assert incident.status_code == 200, incident.text
    # B has no active plan of its own: its replan finds nothing to do (A's plan is not B's).
    replan = await world.b.http.post("/v1/routePlans:replan",
                                     json={"timeLimit": "1s", "reason": "B"})
    assert replan.status_code == 400, replan.text
    assert replan.json()["details"][0]["reason"] == "NO_ACTIVE_PLAN"
    await asyncio.sleep(0.5)  # any event-driven work of B's has had its chance
    await unchanged(world, ("policy", "plan", "decision"))
    decisions = (await world.a.http.get("/v1/decisions")).json()["decisions"]
    assert [d["name"] for d in decisions] == [world.names["decision"]]
