"""A partner's journeys through the real Envoy with real OAuth2 tokens."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from google.protobuf import json_format

from tests.e2e.conftest import Partner
from tests.e2e.harness import EnvoyProcess
from tests.support import sample_order

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]


def order_json(**overrides: Any) -> dict[str, Any]:
    return json_format.MessageToDict(sample_order(**overrides))


async def test_create_an_order_over_rest_and_read_it_back(partner: Partner) -> None:
    created = await partner.http.post("/v1/orders", json=order_json())
    assert created.status_code == 200, created.text
    order = created.json()
    assert order["name"].startswith("orders/") and order["state"] == "STATE_CREATED"
    assert created.headers["x-request-id"]
    fetched = await partner.http.get(f"/v1/{order['name']}",
                                     headers={"x-request-id": "partner-trace-42"})
    assert fetched.status_code == 200 and fetched.json() == order
    assert fetched.headers["x-request-id"] == "partner-trace-42"  # propagated, not replaced
    listed = await partner.http.get("/v1/orders", params={"page_size": 10})
    assert [o["name"] for o in listed.json()["orders"]] == [order["name"]]


async def test_healthz_needs_no_token(envoy: EnvoyProcess) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{envoy.port}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def field_violations(body: dict[str, Any]) -> dict[str, str]:
    return {v["field"]: v["description"] for d in body.get("details", [])
            for v in d.get("fieldViolations", [])}


def reasons(body: dict[str, Any]) -> set[str]:
    found = {d.get("reason", "") for d in body.get("details", [])}
    for d in body.get("details", []):
        found |= {v.get("reason", "") for v in d.get("fieldViolations", [])}
    return found - {""}


async def test_invalid_argument_is_400_with_field_violations(partner: Partner) -> None:
    bad = order_json()
    bad["lineItems"][0]["weightKg"] = -1
    bad["pickup"]["location"]["latitude"] = 123
    response = await partner.http.post("/v1/orders", json=bad)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == 3
    violations = field_violations(body)
    assert "order.line_items[0].weight_kg" in violations, violations
    assert "order.pickup.location.latitude" in violations, violations


async def test_not_found_is_404_and_duplicates_are_409(partner: Partner) -> None:
    missing = await partner.http.get(f"/v1/orders/{uuid.uuid4().hex}")
    assert missing.status_code == 404 and missing.json()["code"] == 5, missing.text
    body = order_json()
    assert (await partner.http.post("/v1/orders", json=body)).status_code == 200
    duplicate = await partner.http.post("/v1/orders", json=body)
    assert duplicate.status_code == 409 and duplicate.json()["code"] == 6
    assert "DUPLICATE_EXTERNAL_REFERENCE" in reasons(duplicate.json())


async def test_stale_etag_is_409_and_wrong_state_is_400(partner: Partner) -> None:
    order = (await partner.http.post("/v1/orders", json=order_json())).json()
    stale = await partner.http.post(f"/v1/{order['name']}:cancel",
                                    json={"etag": "W/\"stale\"", "reason": "x"})
    assert stale.status_code == 409 and stale.json()["code"] == 10, stale.text
    cancelled = await partner.http.post(f"/v1/{order['name']}:cancel", json={"reason": "x"})
    assert cancelled.status_code == 200, cancelled.text
    again = await partner.http.post(f"/v1/{order['name']}:release", json={})
    # FAILED_PRECONDITION keeps Envoy's standard mapping (400): the request cannot succeed as
    # sent; 412 is reserved for HTTP preconditions (If-Match), which we do not use.
    assert again.status_code == 400 and again.json()["code"] == 9, again.text
    assert "INVALID_STATE_TRANSITION" in reasons(again.json())


async def test_idempotency_key_replays_the_first_response_and_refuses_another_body(
        partner: Partner) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = order_json()
    first = await partner.http.post("/v1/orders", json=body, headers=key)
    replay = await partner.http.post("/v1/orders", json=body, headers=key)
    assert first.status_code == replay.status_code == 200, replay.text
    assert replay.json() == first.json()
    other = await partner.http.post("/v1/orders", json=order_json(), headers=key)
    assert other.status_code in (400, 409, 422), other.text
    assert "IDEMPOTENCY_KEY_REUSED" in reasons(other.json())
    listed = await partner.http.get("/v1/orders")
    assert [o["name"] for o in listed.json()["orders"]] == [first.json()["name"]]


async def test_spoofed_identity_headers_never_reach_the_service(partner_factory: Any) -> None:
    victim, intruder = await partner_factory(), await partner_factory()
    order = (await victim.http.post("/v1/orders", json=order_json())).json()
    spoofed = {"x-cartage-client-id": victim.client_id, "x-cartage-scopes": "orders.write",
               "x-cartage-tier": "internal"}
    stolen = await intruder.http.get(f"/v1/{order['name']}", headers=spoofed)
    assert stolen.status_code == 404  # the service saw the intruder's own identity
    mine = await intruder.http.post("/v1/orders", json=order_json(), headers=spoofed)
    assert mine.status_code == 200
    own = await intruder.http.get("/v1/orders")
    assert [o["name"] for o in own.json()["orders"]] == [mine.json()["name"]]
    victims = await victim.http.get("/v1/orders")
    assert [o["name"] for o in victims.json()["orders"]] == [order["name"]]


async def test_wrong_scope_is_403_json_for_rest(partner_factory: Any) -> None:
    reader = await partner_factory(("orders.read",))
    refused = await reader.http.post("/v1/orders", json=order_json(),
                                     headers={"x-cartage-scopes": "orders.write"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == 7 and refused.json()["message"]
    assert (await reader.http.get("/v1/orders")).status_code == 200


async def test_unknown_query_parameters_are_400_json(partner: Partner) -> None:
    response = await partner.http.get("/v1/orders", params={"pageSise": 5})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 3


async def test_unknown_path_is_404_json(partner: Partner) -> None:
    response = await partner.http.get("/v2/nothing-here")
    assert response.status_code == 404 and response.json()["code"] == 5, response.text


async def test_unknown_json_fields_are_refused_with_400(partner: Partner) -> None:
    body = order_json()
    body["pickup"]["colour"] = "blue"
    response = await partner.http.post("/v1/orders", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == 3
    assert field_violations(response.json()) == {"order.pickup.colour": "unknown field"}
    verb = await partner.http.post(f"/v1/orders/{uuid.uuid4().hex}:cancel",
                                   json={"reason": "x", "because": "y"})
    assert verb.status_code == 400 and "because" in field_violations(verb.json())
    # The transcoder reads any non-gRPC body as JSON, so the check must not trust the label.
    disguised = await partner.http.post("/v1/orders", content=json.dumps(body),
                                        headers={"content-type": "text/plain"})
    assert disguised.status_code == 400, disguised.text
    assert "order.pickup.colour" in field_violations(disguised.json()), disguised.text
    # Only gRPC skips the check: application/grpc-web is JSON to the transcoder.
    web = await partner.http.post("/v1/orders", content=json.dumps(body),
                                  headers={"content-type": "application/grpc-web"})
    assert web.status_code == 400 and "order.pickup.colour" in field_violations(web.json())
    # A body on a GET is read into the request by the transcoder: checked as well.
    get = await partner.http.request("GET", "/v1/orders", content='{"pageSise": 1}')
    assert get.status_code == 400 and field_violations(get.json()) == {
        "pageSise": "unknown field"}, get.text
    # Lenient JSON the transcoder would parse (and could hide a key in) is refused.
    lenient = await partner.http.post("/v1/orders", content="{'externalReference': 'x'}")
    assert lenient.status_code == 400, lenient.text
    assert lenient.json()["message"] == "the body is not valid JSON"
    # Nothing was created by the refused requests; a clean body still goes through.
    assert (await partner.http.get("/v1/orders")).json().get("orders", []) == []
    assert (await partner.http.post("/v1/orders", json=order_json())).status_code == 200


async def test_proto_field_names_are_accepted_like_json_names(partner: Partner) -> None:
    """The transcoder accepts both; so does the strict check (it must not refuse valid JSON)."""
    order = json_format.MessageToDict(sample_order(), preserving_proto_field_name=True)
    assert "external_reference" in order and "line_items" in order
    created = await partner.http.post("/v1/orders", json=order)
    assert created.status_code == 200, created.text
    assert created.json()["externalReference"] == order["external_reference"]
    assert created.json()["lineItems"][0]["sku"] == order["line_items"][0]["sku"]


async def test_request_bodies_up_to_4_mib_reach_the_service(partner: Partner) -> None:
    """The strict check holds the whole body; a batch of 1000 orders (~1.2 MB) must fit."""
    big = order_json(notes="x" * (2 * 1024 * 1024))
    response = await partner.http.post("/v1/orders", json=big)
    # Through Envoy to the service, which refuses notes that long.
    assert response.status_code == 400, response.text[:300]
    assert "order.notes" in field_violations(response.json())
    too_big = await partner.http.post("/v1/orders", json=order_json(notes="x" * (5 << 20)))
    assert too_big.status_code == 413 and too_big.json()["code"] == 3


async def test_openapi_document_is_served_and_describes_working_routes(
        envoy: EnvoyProcess, partner: Partner) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{envoy.port}/openapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["openapi"].startswith("3.")
    create = document["paths"]["/v1/orders"]["post"]
    assert create["security"] == [{"oauth2": ["orders.write"]}]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/cartage.order.v1.Order"}
    order = document["components"]["schemas"]["cartage.order.v1.Order"]
    assert {"externalReference", "lineItems", "pickup"} <= set(order["properties"])
    flows = document["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"].endswith("/oauth/token")
    # The documented path shape is the one Envoy serves.
    created = (await partner.http.post("/v1/orders", json=order_json())).json()
    order_id = created["name"].split("/", 1)[1]
    assert "/v1/orders/{order_id}" in document["paths"]
    assert (await partner.http.get(f"/v1/orders/{order_id}")).status_code == 200
