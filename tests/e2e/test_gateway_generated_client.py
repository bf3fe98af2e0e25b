"""A client generated from the gateway's /openapi.json by openapi-python-client (at test time,
into a temporary directory, never committed) runs a partner's journey through the real edge:
create an order with an Idempotency-Key, list with a filter and pages, create a vehicle,
update it with a mask, plan and follow the operation to its plan, approve the decision, export
the plan. What the generator cannot call, a partner cannot either: the document has to be
right."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format

from gateway.policy import all_scopes
from tests.e2e.harness import EnvoyProcess
from tests.integration.routing.conftest import make_vehicle, shipment, unique
from tests.support import sample_order

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "cartage_generated_client"


async def _generate(envoy: EnvoyProcess, tmp: Path) -> Any:
    async with httpx.AsyncClient() as http:
        document = (await http.get(f"http://127.0.0.1:{envoy.port}/openapi.json")).json()
    (tmp / "openapi.json").write_text(json.dumps(document))
    process = await asyncio.create_subprocess_exec(
        str(GENERATOR), "generate", "--path", str(tmp / "openapi.json"), "--meta", "none",
        "--output-path", str(tmp / PACKAGE), cwd=tmp,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    sys.path.insert(0, str(tmp))
    return importlib.import_module(PACKAGE)


def _call(name: str) -> Any:
    group, _, function = name.partition(".")
    return importlib.import_module(f"{PACKAGE}.api.{group}.{function}")


def _model(name: str) -> Any:
    return getattr(importlib.import_module(f"{PACKAGE}.models"), name)


async def test_a_generated_client_runs_a_partner_journey(
        envoy: EnvoyProcess, partner_factory: Any, tmp_path: Path) -> None:
    generated = await _generate(envoy, tmp_path)
    partner = await partner_factory(tuple(all_scopes()))
    client = generated.AuthenticatedClient(base_url=f"http://127.0.0.1:{envoy.port}",
                                           token=partner.token, raise_on_unexpected_status=True)
    Order = _model("CartageOrderV1Order")
    async with client:
        # Create with an Idempotency-Key: a retry returns the first order.
        key = uuid.uuid4().hex
        body = Order.from_dict(json_format.MessageToDict(sample_order(f"gen-{key[:8]}")))
        create = _call("order_service.create_order")
        first = await create.asyncio_detailed(client=client, body=body, idempotency_key=key)
        again = await create.asyncio_detailed(client=client, body=body, idempotency_key=key)
        assert first.status_code == 200, first.content
        assert again.parsed.name == first.parsed.name
        for i in range(2):
            made = await create.asyncio_detailed(client=client, body=Order.from_dict(
                json_format.MessageToDict(sample_order(f"gen-{key[:8]}-{i}"))))
            assert made.status_code == 200, made.content

        # List with a filter, two to a page.
        listing = _call("order_service.list_orders")
        names: list[str] = []
        token: Any = generated.types.UNSET
        for _ in range(5):
            page = await listing.asyncio_detailed(client=client, filter_="state = CREATED",
                                                  page_size=2, page_token=token)
            assert page.status_code == 200, page.content
            assert len(page.parsed.orders) <= 2
            names += [o.name for o in page.parsed.orders]
            token = page.parsed.next_page_token
            if not token:
                break
        assert first.parsed.name in names and len(names) == 3

        # A vehicle: created with its id in the query string, updated through a mask.
        vehicle_id = unique()
        vehicle = await _call("routing_service.create_vehicle").asyncio_detailed(
            client=client, vehicle_id=vehicle_id, body=_model("CartageRoutingV1Vehicle").from_dict(
                json_format.MessageToDict(make_vehicle(weight=500))))
        assert vehicle.status_code == 200, vehicle.content
        updated = await _call("routing_service.update_vehicle").asyncio_detailed(
            vehicle_id, client=client, update_mask="displayName",
            body=_model("CartageRoutingV1VehicleUpdate").from_dict({"displayName": "Van 7"}))
        assert updated.status_code == 200, updated.content
        assert updated.parsed.display_name == "Van 7"

        # Plan, follow the operation, approve the decision, export the plan.
        # The document declares a stop's address required (the order service's rule; routing
        # does not need one), so the generated model asks for it.
        near = json_format.MessageToDict(shipment("near", 52.53, 13.41, weight=200))
        near["delivery"]["address"] = {"regionCode": "DE", "addressLines": ["Alexanderplatz 1"]}
        plan_body = _model("CartageRoutingV1PlanRoutesRequest").from_dict({
            "shipments": [near],
            "vehicles": [f"vehicles/{vehicle_id}"], "timeLimit": "1s"})
        started = await _call("routing_service.plan_routes").asyncio_detailed(
            client=client, body=plan_body, idempotency_key=uuid.uuid4().hex)
        assert started.status_code == 200, started.content
        assert started.parsed.name.startswith("operations/routing/")
        operation = await _done(started.parsed.name, client)
        assert not operation.error, operation.error
        # The response is a google.protobuf.Any: the generated model keeps `@type` and the
        # message's fields, which the RoutePlan model reads as they are.
        assert operation.response.type_.endswith("/cartage.routing.v1.RoutePlan")
        RoutePlan = _model("CartageRoutingV1RoutePlan")
        proposed = RoutePlan.from_dict(operation.response.to_dict())
        assert proposed.name.startswith("routePlans/") and proposed.state == "STATE_PROPOSED"
        assert [s.shipment for s in proposed.routes[0].stops] == ["near"]

        # Read the plan, approve its decision (the default policy is L1: a person decides).
        plan_id = proposed.name.split("/")[1]
        plan = await _call("routing_service.get_route_plan").asyncio_detailed(
            plan_id, client=client)
        assert plan.status_code == 200, plan.content
        assert plan.parsed.decision.startswith("decisions/"), plan.content
        pending = await _call("routing_service.list_decisions").asyncio_detailed(
            client=client, filter_="state = PENDING")
        assert pending.status_code == 200, pending.content
        assert plan.parsed.decision in [d.name for d in pending.parsed.decisions
                                        if d.proposed_plan == proposed.name]
        approved = await _call("routing_service.approve_decision").asyncio_detailed(
            plan.parsed.decision.split("/")[1], client=client,
            body=_model("CartageRoutingV1ApproveDecisionRequestBody").from_dict({}),
            idempotency_key=uuid.uuid4().hex)
        assert approved.status_code == 200, approved.content
        assert approved.parsed.state == "STATE_APPLIED"
        active = await _call("routing_service.get_route_plan").asyncio_detailed(
            plan_id, client=client)
        assert active.parsed.state == "STATE_ACTIVE", active.content

        # Export: GeoJSON, one LineString for the route, a Point per stop.
        exported = await _call("routing_service.export_route_plan").asyncio_detailed(
            plan_id, client=client)
        assert exported.status_code == 200, exported.content
        assert exported.headers["content-type"] == "application/geo+json"
        geojson = json.loads(exported.content)
        assert geojson["type"] == "FeatureCollection"
        kinds = [f["geometry"]["type"] for f in geojson["features"]]
        assert kinds.count("LineString") == 1 and "Point" in kinds


async def _done(name: str, client: Any, within: float = 30.0) -> Any:
    """Polls GetOperation (the REST surface has no WaitOperation) until the operation is done;
    raises after `within` seconds."""
    _, service, operation_id = name.split("/")
    get = _call("operations.get_operation_by_service")
    deadline = asyncio.get_running_loop().time() + within
    while True:
        got = await get.asyncio_detailed(service, operation_id, client=client)
        assert got.status_code == 200, got.content
        if got.parsed.done:
            return got.parsed
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{name} not done after {within:g} s: {got.content!r}")
        await asyncio.sleep(0.1)
