"""Release then plan at once (issue 13): the routing service learns of the release from the order
service's events, ~0.1 s later; PlanRoutes waits for its read model (bounded) instead of
refusing an order it has not seen released, and a state question is never INVALID_ARGUMENT."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Partner
from tests.e2e.test_gateway_journeys import order_json
from tests.e2e.test_routing_rest import ROUTING_SCOPES, as_json
from tests.integration.routing.conftest import make_vehicle, unique

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

SCOPES = ("orders.read", "orders.write", *ROUTING_SCOPES)


async def test_release_then_plan_back_to_back_20_times(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(SCOPES)
    vehicle_id = unique()
    created = await partner.http.post(f"/v1/vehicles?vehicleId={vehicle_id}",
                                      json=as_json(make_vehicle(weight=5000)))
    assert created.status_code == 200, created.text
    for attempt in range(20):
        order = await partner.http.post("/v1/orders", json=order_json(reference=unique("r-")))
        assert order.status_code == 200, order.text
        name = order.json()["name"]
        released = await partner.http.post(f"/v1/{name}:release", json={})
        assert released.status_code == 200, released.text
        planned = await partner.http.post("/v1/routePlans:plan", json={
            "orders": [name], "vehicles": [f"vehicles/{vehicle_id}"], "timeLimit": "1s"})
        assert planned.status_code == 200, (attempt, planned.text)
        assert planned.json()["name"].startswith("operations/routing/")
        # Only the call matters here: leave the solver free for the other tests.
        cancelled = await partner.http.post(f"/v1/{planned.json()['name']}:cancel", json={})
        assert cancelled.status_code == 200, cancelled.text


async def test_nothing_to_plan_is_a_failed_precondition(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(SCOPES)
    vehicle_id = unique()
    created = await partner.http.post(f"/v1/vehicles?vehicleId={vehicle_id}",
                                      json=as_json(make_vehicle()))
    assert created.status_code == 200, created.text
    refused = await partner.http.post("/v1/routePlans:plan", json={"timeLimit": "1s"})
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["code"] == 9, body  # FAILED_PRECONDITION, not INVALID_ARGUMENT
    assert body["details"][0]["reason"] == "NO_ORDER_TO_PLAN"
    # An order created but not released: still a state question, after the wait.
    order = await partner.http.post("/v1/orders", json=order_json(reference=unique("r-")))
    not_released = await partner.http.post("/v1/routePlans:plan", json={
        "orders": [order.json()["name"]], "timeLimit": "1s"})
    assert not_released.status_code == 400 and not_released.json()["code"] == 9, (
        not_released.text)
    assert not_released.json()["details"][0]["reason"] == "ORDER_NOT_RELEASED"
