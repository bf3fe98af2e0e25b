"""Partner webhooks through the real edge (Envoy, OAuth2): a partner registers an endpoint over
REST (the secret is in that response only), an order it creates over REST reaches its loopback
receiver signed; a hostile URL is 400 with a field violation; without the scope, 403."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import Partner
from tests.e2e.test_gateway_journeys import order_json
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

SCOPES = ("orders.read", "orders.write", "webhooks.read", "webhooks.write")


async def test_a_partner_registers_an_endpoint_and_receives_order_created(
        partner_factory: Any) -> None:
    partner: Partner = await partner_factory(SCOPES)
    receiver = await Receiver().start()
    try:
        created = await partner.http.post("/v1/webhookEndpoints", json={
            "url": receiver.url, "eventTypes": ["order.created"], "description": "ours"})
        assert created.status_code == 200, created.text
        endpoint = created.json()
        assert endpoint["secret"].startswith("whsec_") and endpoint["enabled"] is True
        receiver.secrets = [endpoint["secret"]]
        read = await partner.http.get(f"/v1/{endpoint['name']}")
        assert read.status_code == 200 and read.json()["secret"] == ""
        listed = await partner.http.get("/v1/webhookEndpoints")
        assert [e["secret"] for e in listed.json()["webhookEndpoints"]] == [""]

        order = await partner.http.post("/v1/orders", json=order_json())
        assert order.status_code == 200, order.text
        for _ in range(200):
            if receiver.received:
                break
            await asyncio.sleep(0.1)
        [got] = receiver.received
        assert got.verified and got.json["type"] == "order.created"
        assert got.json["data"]["order"]["name"] == order.json()["name"]

        deliveries = await partner.http.get(f"/v1/{endpoint['name']}/deliveries")
        assert deliveries.status_code == 200, deliveries.text
        [delivery] = deliveries.json()["deliveries"]
        assert delivery["state"] == "STATE_DELIVERED"
    finally:
        await receiver.stop()


async def test_a_metadata_url_is_400_with_a_field_violation(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(SCOPES)
    refused = await partner.http.post("/v1/webhookEndpoints", json={
        "url": "http://169.254.169.254/latest/meta-data/", "eventTypes": ["order.*"]})
    assert refused.status_code == 400, refused.text
    violations = [v for d in refused.json()["details"] for v in d.get("fieldViolations", [])]
    assert [v["field"] for v in violations] == ["webhook_endpoint.url"]


async def test_without_the_scope_it_is_403(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(("orders.read",))
    response = await partner.http.post("/v1/webhookEndpoints", json={
        "url": "http://127.0.0.1:9/h", "eventTypes": ["order.*"]})
    assert response.status_code == 403, response.text
