"""The routing service through the real edge: a partner plans its fleet over REST + OAuth2, follows
the long-running operation, approves the decision and exports the plan; bad input and missing
scopes get the gateway's JSON errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.protobuf import json_format

from tests.e2e.conftest import Partner
from tests.integration.routing.conftest import make_vehicle, shipment, unique

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

ROUTING_SCOPES = ("fleet.read", "fleet.write", "routes.read", "routes.write",
                  "decisions.approve")


def as_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


async def done_operation(partner: Partner, name: str) -> dict[str, Any]:
    for _ in range(150):
        response = await partner.http.get(f"/v1/{name}")
        assert response.status_code == 200, response.text
        if response.json().get("done"):
            return response.json()
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} not done after 15 s")


async def test_a_partner_plans_approves_and_exports_over_rest(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(ROUTING_SCOPES)
    vehicle_id = unique()
    created = await partner.http.post(f"/v1/vehicles?vehicleId={vehicle_id}",
                                      json=as_json(make_vehicle(weight=500)))
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "STATUS_AVAILABLE"

    body = {"shipments": [as_json(shipment("near", 52.53, 13.41, weight=200)),
                          as_json(shipment("far", 52.60, 13.30, weight=200)),
                          as_json(shipment("too-heavy", 52.50, 13.45, weight=900))],
            "vehicles": [f"vehicles/{vehicle_id}"], "timeLimit": "1s"}
    started = await partner.http.post("/v1/routePlans:plan", json=body,
                                      headers={"idempotency-key": unique("plan-")})
    assert started.status_code == 200, started.text
    # The service segment is what the gateway routes Operations calls by.
    assert started.json()["name"].startswith("operations/routing/")
    operation = await done_operation(partner, started.json()["name"])
    plan = operation["response"]
    assert plan["@type"].endswith("cartage.routing.v1.RoutePlan")
    assert plan["state"] == "STATE_PROPOSED"  # the default policy is L1: a person decides
    # Zero values are printed: the load after the last delivery is an amount of 0, and the
    # objective's weights are there even when they are all 0.
    loads = [q for stop in plan["routes"][0]["stops"] for q in stop["loadAfter"]]
    assert loads and all("amount" in q for q in loads), plan["routes"][0]["stops"]
    assert 0 in [q["amount"] for q in loads]
    assert set(plan["objective"]) == {"cost", "distance", "duration"}, plan["objective"]
    served = {stop["shipment"] for stop in plan["routes"][0]["stops"]}
    assert served == {"near", "far"}
    assert plan["unassigned"] == [{"shipment": "too-heavy", "reason": "REASON_CAPACITY",
                                   "detail": plan["unassigned"][0]["detail"]}]

    pending = await partner.http.get("/v1/decisions", params={"filter": "state = PENDING"})
    assert pending.status_code == 200, pending.text
    [decision] = pending.json()["decisions"]
    assert decision["proposedPlan"] == plan["name"]
    approved = await partner.http.post(f"/v1/{decision['name']}:approve", json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "STATE_APPLIED"
    assert approved.json()["decidedBy"] == partner.client_id
    active = await partner.http.get(f"/v1/{plan['name']}")
    assert active.json()["state"] == "STATE_ACTIVE"

    exported = await partner.http.get(f"/v1/{plan['name']}:export")
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "application/geo+json"
    features = exported.json()["features"]
    assert [f["geometry"]["type"] for f in features].count("LineString") == 1
    points = {f["properties"].get("shipment") for f in features
              if f["geometry"]["type"] == "Point"}
    assert {"near", "far", "too-heavy"} <= points


async def test_bad_routing_input_is_a_400_with_field_violations(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(ROUTING_SCOPES)
    vehicle = as_json(make_vehicle())
    vehicle["shift"]["endTime"], vehicle["shift"]["startTime"] = (
        vehicle["shift"]["startTime"], vehicle["shift"]["endTime"])
    vehicle["startDepot"]["location"]["latitude"] = 91
    refused = await partner.http.post(f"/v1/vehicles?vehicleId={unique()}", json=vehicle)
    assert refused.status_code == 400, refused.text
    [bad_request] = [d for d in refused.json()["details"] if d["@type"].endswith("BadRequest")]
    fields = {v["field"] for v in bad_request["fieldViolations"]}
    assert fields == {"vehicle.shift.end_time", "vehicle.start_depot.location.latitude"}

    unknown = await partner.http.post("/v1/routePlans:plan", json={"timeLimit": "1s",
                                                                   "solverMagic": True})
    assert unknown.status_code == 400, unknown.text
    assert "solverMagic" in unknown.text


async def test_routing_needs_its_own_scopes(partner_factory: Any) -> None:
    reader: Partner = await partner_factory(("fleet.read", "routes.read"))
    refused = await reader.http.post(f"/v1/vehicles?vehicleId={unique()}",
                                     json=as_json(make_vehicle()))
    assert refused.status_code == 403, refused.text
    listed = await reader.http.get("/v1/vehicles")
    assert listed.status_code == 200, listed.text
    orders_only: Partner = await partner_factory()
    assert (await orders_only.http.get("/v1/routePlans")).status_code == 403
    assert (await orders_only.http.get("/v1/operations")).status_code == 403
