"""Every error a partner can get through the edge is a google.rpc.Status JSON with an ErrorInfo
reason and a message in our words, the transcoder's own refusals too; a known path with a method
it does not serve is 405 with Allow; REST responses carry no gRPC headers and print zero values
(issue 13)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Partner
from tests.e2e.test_routing_rest import ROUTING_SCOPES, as_json
from tests.integration.routing.conftest import make_vehicle, unique

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

GRPC_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin",
                "grpc-accept-encoding")


def error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    """The body, after checking it is the error shape with this reason."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert [(i["reason"], i["domain"]) for i in infos] == [(reason, "cartage.io")], body
    for header in GRPC_HEADERS:
        assert header not in response.headers, (header, response.headers)
    return dict(body)


def violations(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["field"], v["reason"]) for d in body["details"]
            if d["@type"].endswith("google.rpc.BadRequest") for v in d["fieldViolations"]]


async def test_the_transcoders_refusals_are_ours(partner: Partner) -> None:
    unknown = error(await partner.http.get("/v1/orders?foo=1"), 400, "UNKNOWN_QUERY_PARAMETER")
    assert unknown["code"] == 3
    assert unknown["message"] == "foo: unknown query parameter"
    assert violations(unknown) == [("foo", "UNKNOWN_QUERY_PARAMETER")]
    assert "cartage.order.v1" not in unknown["message"]

    typed = error(await partner.http.get("/v1/orders?pageSize=abc"), 400,
                  "INVALID_FIELD_VALUE")
    assert typed["message"] == 'page_size: "abc" is not an integer'
    assert violations(typed) == [("page_size", "INVALID_FIELD_VALUE")]

    for body in (b"[]", b"[1]", b'[{"externalReference": "x"}]'):
        listed = error(await partner.http.post(
            "/v1/orders", content=body, headers={"content-type": "application/json"}),
            400, "MALFORMED_BODY")
        assert listed["message"] == "the body must be a JSON object, not a list"
        assert violations(listed) == [("", "MALFORMED_BODY")]

    scalar = error(await partner.http.post(
        "/v1/orders", content=b"5", headers={"content-type": "application/json"}),
        400, "INVALID_FIELD_VALUE")
    assert scalar["message"] == "order: 5 is not a JSON object"

    wrong = error(await partner.http.post("/v1/orders", json={"externalReference": 5}),
                  400, "INVALID_FIELD_VALUE")
    assert violations(wrong) == [("order.external_reference", "INVALID_FIELD_VALUE")], wrong
    enum = error(await partner.http.post("/v1/orders", json={"mode": "BY_BALLOON"}),
                 400, "INVALID_FIELD_VALUE")
    assert "one of the enum's value names" in enum["message"], enum

    malformed = error(await partner.http.post(
        "/v1/orders", content=b"{bad", headers={"content-type": "application/json"}),
        400, "MALFORMED_BODY")
    assert malformed["message"] == "the body is not valid JSON"
    misspelt = error(await partner.http.post("/v1/orders", json={"externalReferense": "x"}),
                     400, "UNKNOWN_FIELD")
    assert violations(misspelt) == [("order.externalReferense", "UNKNOWN_FIELD")]


@pytest.mark.parametrize("method", ["TRACE", "HEAD", "OPTIONS", "PUT", "DELETE"])
async def test_a_known_path_with_another_method_is_405_with_allow(
        partner: Partner, method: str) -> None:
    response = await partner.http.request(method, "/v1/orders")
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "GET, POST"
    if method != "HEAD":
        body = error(response, 405, "METHOD_NOT_ALLOWED")
        assert body["message"] == "this path serves GET, POST only"
    one = await partner.http.request(method, f"/v1/orders/{'0' * 32}")
    assert one.status_code == 405 and one.headers["allow"] == "GET, PATCH", one.text
    verb = await partner.http.request(method, f"/v1/orders/{'0' * 32}:cancel")
    assert verb.status_code == 405 and verb.headers["allow"] == "POST", verb.text


async def test_every_method_a_path_does_not_serve_is_405_before_the_transcoder(
        partner: Partner) -> None:
    # `{name=operations/**}` would match the collection for the transcoder (DeleteOperation of
    # `operations`, refused for its query parameters): the 405 comes first.
    collection = await partner.http.request("DELETE", "/v1/operations", params={"filter": "x"})
    assert collection.status_code == 405 and collection.headers["allow"] == "GET", collection.text
    # A method HTTP/1 does not know, and one on a path with a larger body limit.
    made_up = await partner.http.request("FROB", "/v1/orders")
    assert made_up.status_code == 405 and made_up.headers["allow"] == "GET, POST", made_up.text
    trace = await partner.http.request("TRACE", "/v1/documents:captureProofOfDelivery")
    assert trace.status_code == 405 and trace.headers["allow"] == "POST", trace.text
    assert (await partner.http.get("/v1/operations")).status_code != 405


async def test_an_unknown_path_is_a_json_404(partner: Partner) -> None:
    body = error(await partner.http.get("/v1/nothing/here"), 404, "UNKNOWN_PATH")
    assert body["code"] == 5 and "/openapi.json" in body["message"]
    # A known path with an unknown custom verb is no endpoint either.
    error(await partner.http.post(f"/v1/orders/{'0' * 32}:explode", json={}), 405,
          "METHOD_NOT_ALLOWED")


async def test_authentication_and_scope_errors_are_in_our_words(
        partner: Partner, partner_factory: Any) -> None:
    anonymous = httpx.AsyncClient(base_url=str(partner.http.base_url))
    async with anonymous:
        missing = error(await anonymous.get("/v1/orders"), 401, "TOKEN_MISSING")
        assert "Authorization: Bearer" in missing["message"]
        forged = error(await anonymous.get("/v1/orders", headers={
            "authorization": "Bearer " + partner.token[:-4] + "AAAA"}), 401, "INVALID_TOKEN")
        assert "Jwt" not in forged["message"]
    reader: Partner = await partner_factory(("orders.read",))
    denied = error(await reader.http.post("/v1/orders", json={}), 403, "MISSING_SCOPE")
    assert "RBAC" not in denied["message"] and "scope" in denied["message"]


async def test_rest_responses_carry_no_grpc_headers(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(ROUTING_SCOPES)
    ok = await partner.http.get("/v1/vehicles")
    assert ok.status_code == 200, ok.text
    service_error = await partner.http.get("/v1/vehicles/nosuch")
    assert service_error.status_code == 404, service_error.text
    for response in (ok, service_error):
        for header in GRPC_HEADERS:
            assert header not in response.headers, (header, response.headers)


async def test_zero_values_are_printed(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(ROUTING_SCOPES)
    vehicle_id = unique()
    created = await partner.http.post(f"/v1/vehicles?vehicleId={vehicle_id}",
                                      json=as_json(make_vehicle(weight=500)))
    assert created.status_code == 200, created.text
    vehicle = created.json()
    # Set to nothing, still there: zero numbers, empty strings and lists.
    assert vehicle["maxRouteDistanceMeters"] == 0
    assert vehicle["skills"] == [] and vehicle["breaks"] == []
    listed = await partner.http.get("/v1/vehicles", params={"pageSize": 1000})
    assert listed.status_code == 200 and "nextPageToken" in listed.json(), listed.text
