"""The audit record's grpc_status is the call's true outcome, over REST and native gRPC alike:
the service's own status for its errors (not one guessed back from the HTTP code after
transcoding), and the gateway's for its own refusals."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cartage.order.v1 import order_service_pb2, order_service_pb2_grpc
from gateway.audit import AuditStore
from tests.e2e.conftest import Partner
from tests.e2e.harness import EnvoyProcess
from tests.e2e.test_gateway_journeys import order_json
from tests.support import eventually, sample_order

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]


async def test_the_audit_records_the_true_grpc_status(
        envoy: EnvoyProcess, partner_factory: Any, engine: AsyncEngine) -> None:
    writer: Partner = await partner_factory()
    reader: Partner = await partner_factory(("orders.read",))
    existing = (await writer.http.post("/v1/orders", json=order_json())).json()
    missing = f"orders/{uuid.uuid4().hex}"
    expected: dict[str, tuple[str, str, int]] = {}  # request id → (case, status, http status)

    def rid(case: str, status: str, http: int) -> str:
        request_id = f"audit-status-{uuid.uuid4().hex}"
        expected[request_id] = (case, status, http)
        return request_id

    # REST: (case, expected grpc_status, expected HTTP status, the call)
    rest: list[tuple[str, str, int, Callable[[str], Awaitable[Any]]]] = [
        ("ok", "OK", 200, lambda r: writer.http.get(
            f"/v1/{existing['name']}", headers={"x-request-id": r})),
        ("invalid argument", "InvalidArgument", 400, lambda r: writer.http.get(
            "/v1/orders/0", headers={"x-request-id": r})),
        ("not found", "NotFound", 404, lambda r: writer.http.get(
            f"/v1/{missing}", headers={"x-request-id": r})),
        ("already exists", "AlreadyExists", 409, lambda r: writer.http.post(
            "/v1/orders", headers={"x-request-id": r},
            json=order_json(reference=existing["externalReference"]))),
        ("aborted (stale etag)", "Aborted", 409, lambda r: writer.http.post(
            f"/v1/{existing['name']}:cancel", headers={"x-request-id": r},
            json={"reason": "test", "etag": 'W/"stale"'})),
        ("permission denied (the gateway's scope check)", "PermissionDenied", 403,
         lambda r: reader.http.post("/v1/orders", headers={"x-request-id": r},
                                    json=order_json())),
        ("unauthenticated", "Unauthenticated", 401, lambda r: writer.http.get(
            "/v1/orders", headers={"x-request-id": r, "authorization": "Bearer nope"})),
        ("unknown field (the gateway's strict JSON check)", "InvalidArgument", 400,
         lambda r: writer.http.post("/v1/orders", headers={"x-request-id": r},
                                    json={**order_json(), "colour": "red"})),
    ]
    for case, status, http, call in rest:
        response = await call(rid(f"REST {case}", status, http))
        assert response.status_code == http, (case, response.text)

    # The gateway's rate limit ("premium" has 3 calls a minute in the test config).
    busy: Partner = await partner_factory(tier="premium")
    for _ in range(3):
        assert (await busy.http.get("/v1/orders")).status_code == 200
    limited = await busy.http.get("/v1/orders", headers={
        "x-request-id": rid("REST resource exhausted (the gateway's rate limit)",
                            "ResourceExhausted", 429)})
    assert limited.status_code == 429, limited.text

    def md(partner: Partner | None, request_id: str) -> tuple[tuple[str, str], ...]:
        auth = (("authorization", f"Bearer {partner.token}"),) if partner else ()
        return (*auth, ("x-request-id", request_id))

    o = order_service_pb2
    native: list[tuple[str, str, grpc.StatusCode, Partner | None, str, Any]] = [
        ("ok", "OK", grpc.StatusCode.OK, writer, "GetOrder",
         o.GetOrderRequest(name=existing["name"])),
        ("invalid argument", "InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT, writer,
         "GetOrder", o.GetOrderRequest(name="orders/0")),
        ("not found", "NotFound", grpc.StatusCode.NOT_FOUND, writer, "GetOrder",
         o.GetOrderRequest(name=missing)),
        ("already exists", "AlreadyExists", grpc.StatusCode.ALREADY_EXISTS, writer,
         "CreateOrder", o.CreateOrderRequest(order=sample_order(existing["externalReference"]))),
        ("aborted (stale etag)", "Aborted", grpc.StatusCode.ABORTED, writer, "CancelOrder",
         o.CancelOrderRequest(name=existing["name"], reason="test", etag='W/"stale"')),
        ("permission denied", "PermissionDenied", grpc.StatusCode.PERMISSION_DENIED, reader,
         "CreateOrder", o.CreateOrderRequest(order=sample_order())),
        ("unauthenticated", "Unauthenticated", grpc.StatusCode.UNAUTHENTICATED, None,
         "GetOrder", o.GetOrderRequest(name=existing["name"])),
        ("resource exhausted", "ResourceExhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, busy,
         "ListOrders", o.ListOrdersRequest()),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{envoy.port}") as channel:
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        for case, status, code, who, method, request in native:
            request_id = rid(f"gRPC {case}", status, 200)
            try:
                await getattr(stub, method)(request, metadata=md(who, request_id), timeout=10)
                got = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                got = error.code()
            assert got == code, (case, got)

    store = AuditStore(engine)

    async def recorded() -> dict[str, dict[str, Any]]:
        return {r["request_id"]: r for r in await store.records()
                if r.get("request_id") in expected}

    records = await eventually(recorded, until=lambda found: len(found) == len(expected))
    wrong = [f"{case}: recorded {records[r]['grpc_status']} (HTTP {records[r]['http_status']})"
             f", expected {status}"
             for r, (case, status, _) in expected.items() if records[r]["grpc_status"] != status]
    assert wrong == [], "\n".join(wrong)
    # REST records keep their HTTP status next to the gRPC one; the helper fields are not stored.
    for r, (case, _, http) in expected.items():
        if case.startswith("REST"):
            assert records[r]["http_status"] == str(http), case
        assert "service_grpc_status" not in records[r]
