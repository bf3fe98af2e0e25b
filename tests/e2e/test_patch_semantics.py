"""One PATCH rule everywhere (issue 13, AIP-134): `updateMask` names the fields to change; left
out, it means the fields the body populates; an update that names nothing is refused with 400
INVALID_ARGUMENT. ReplanRoutes needs its `reason`, so an empty body is refused too."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Partner
from tests.e2e.test_gateway_journeys import order_json
from tests.e2e.test_routing_rest import ROUTING_SCOPES, as_json
from tests.integration.routing.conftest import make_vehicle, unique

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

SCOPES = ("orders.read", "orders.write", *ROUTING_SCOPES, "autonomy.read", "autonomy.write")


def refused_empty(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 3, body
    [bad_request] = [d for d in body["details"] if d["@type"].endswith("BadRequest")]
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["update_mask"], body
    assert "empty update" in body["message"], body


@pytest.fixture
async def partner(partner_factory: Any) -> Partner:
    return await partner_factory(SCOPES)  # type: ignore[no-any-return]


async def test_order_patch_without_a_mask_changes_the_fields_sent(partner: Partner) -> None:
    created = await partner.http.post("/v1/orders", json=order_json(reference=unique("r-")))
    assert created.status_code == 200, created.text
    order = created.json()
    patched = await partner.http.patch(f"/v1/{order['name']}", json={"notes": "ring twice"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["notes"] == "ring twice"
    assert patched.json()["externalReference"] == order["externalReference"]
    assert patched.json()["pickup"] == order["pickup"]
    # With a mask, only the masked fields change, as before.
    masked = await partner.http.patch(f"/v1/{order['name']}?updateMask=priority",
                                      json={"notes": "ignored", "priority": "PRIORITY_URGENT"})
    assert masked.status_code == 200, masked.text
    assert masked.json()["notes"] == "ring twice"
    assert masked.json()["priority"] == "PRIORITY_URGENT"
    refused_empty(await partner.http.patch(f"/v1/{order['name']}", json={}))
    refused_empty(await partner.http.patch(f"/v1/{order['name']}"))
    # A populated field that cannot change is named, as it would be in a mask.
    fixed = await partner.http.patch(f"/v1/{order['name']}", json={"externalReference": "x"})
    assert fixed.status_code == 400 and "external_reference" in fixed.text, fixed.text


async def test_vehicle_patch_without_a_mask_changes_the_fields_sent(partner: Partner) -> None:
    vehicle_id = unique()
    created = await partner.http.post(f"/v1/vehicles?vehicleId={vehicle_id}",
                                      json=as_json(make_vehicle(weight=500)))
    assert created.status_code == 200, created.text
    patched = await partner.http.patch(f"/v1/vehicles/{vehicle_id}",
                                       json={"displayName": "night truck"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["displayName"] == "night truck"
    assert patched.json()["capacities"] == created.json()["capacities"]
    refused_empty(await partner.http.patch(f"/v1/vehicles/{vehicle_id}", json={}))
    # Only an etag is no change either.
    refused_empty(await partner.http.patch(f"/v1/vehicles/{vehicle_id}",
                                           json={"etag": patched.json()["etag"]}))


async def test_autonomy_policy_patch_follows_the_same_rule(partner: Partner) -> None:
    refused_empty(await partner.http.patch("/v1/autonomyPolicy", json={}))
    refused_empty(await partner.http.patch("/v1/autonomyPolicy"))
    policy = (await partner.http.get("/v1/autonomyPolicy")).json()
    domains = policy["domains"]
    domains[0]["level"] = "AUTONOMY_LEVEL_L2"
    patched = await partner.http.patch("/v1/autonomyPolicy", json={"domains": domains})
    assert patched.status_code == 200, patched.text
    assert patched.json()["domains"][0]["level"] == "AUTONOMY_LEVEL_L2"
    wrong = await partner.http.patch("/v1/autonomyPolicy?updateMask=etag", json={"etag": "x"})
    assert wrong.status_code == 400 and "updatable: domains" in wrong.text, wrong.text


async def test_replan_needs_a_reason(partner: Partner) -> None:
    for call in (partner.http.post("/v1/routePlans:replan"),
                 partner.http.post("/v1/routePlans:replan", json={}),
                 partner.http.post("/v1/routePlans:replan", json={"timeLimit": "1s"})):
        response = await call
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] == 3, body
        [bad_request] = [d for d in body["details"] if d["@type"].endswith("BadRequest")]
        assert [(v["field"], v["reason"]) for v in bad_request["fieldViolations"]] == [
            ("reason", "REQUIRED")], body
    # With one, the state decides: no active plan here.
    asked = await partner.http.post("/v1/routePlans:replan", json={"reason": "a road closed"})
    assert asked.status_code == 400 and asked.json()["code"] == 9, asked.text
