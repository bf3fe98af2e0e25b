"""The tracking service through the real edge: a partner records positions and a milestone
over REST + OAuth2, reads and watches the tracking record as a streaming response, shares a
tracking link; bad input is 400 with field violations, a missing scope 403."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Partner
from tests.e2e.test_gateway_journeys import order_json
from tests.integration.tracking.conftest import publish_plan

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

SCOPES = ("orders.read", "orders.write", "tracking.read", "tracking.write", "geofences.write")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fix(truck: str, moment: datetime, lat: float, lng: float) -> dict[str, Any]:
    return {"vehicle": f"vehicles/{truck}", "time": iso(moment),
            "location": {"latitude": lat, "longitude": lng}}


async def until_ok(call: Any, seconds: float = 15.0) -> Any:
    for _ in range(int(seconds * 10)):
        response = await call()
        if response.status_code != 404:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(f"still 404 after {seconds} s: {response.text}")


async def test_a_partner_tracks_an_order_over_rest(partner_factory: Any, stack: Any) -> None:
    partner: Partner = await partner_factory(SCOPES)
    created = await partner.http.post("/v1/orders", json=order_json())
    assert created.status_code == 200, created.text
    order = created.json()["name"]
    tracking = await until_ok(lambda: partner.http.get(f"/v1/{order}/tracking"))
    assert tracking.status_code == 200, tracking.text
    assert tracking.json()["state"] == "SHIPMENT_STATE_PENDING"

    truck = f"truck-{uuid.uuid4().hex[:8]}"
    order_id = order.removeprefix("orders/")
    await publish_plan(stack.nats_url, partner.client_id, {truck: [
        (order_id, "pickup", 52.52, 13.40, 900), (order_id, "delivery", 52.40, 13.05, 900)]})
    now = datetime.now(UTC).replace(microsecond=0)
    body = {"positions": [fix(truck, now - timedelta(minutes=10), 52.60, 13.40),
                          fix(truck, now - timedelta(minutes=9), 95.0, 13.40)]}
    recorded = await until_ok(lambda: partner.http.post("/v1/positions:batchRecord", json=body))
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["accepted"] == 1
    assert recorded.json()["refusals"] == [{"index": 1, "reason": "REASON_OUT_OF_RANGE",
                                            "description": "latitude 95 is outside [-90, 90]"}]
    too_many = await partner.http.post("/v1/positions:batchRecord", json={
        "positions": [fix(truck, now - timedelta(seconds=i), 52.6, 13.4) for i in range(1001)]})
    assert too_many.status_code == 400, too_many.text
    assert "positions" in too_many.text

    # watch: the current record at once, then the change a milestone makes
    async with partner.http.stream("GET", f"/v1/{order}/tracking:watch") as watch:
        assert watch.status_code == 200
        chunks = watch.aiter_text()
        first = await asyncio.wait_for(anext(chunks), 10)
        assert "SHIPMENT_STATE_PENDING" in first and "etas" not in first
        milestone = await partner.http.post(f"/v1/{order}/milestones", json={
            "stopId": "pickup", "type": "MILESTONE_TYPE_PICKED_UP", "eventTime": iso(now),
            "source": "MILESTONE_SOURCE_DRIVER_APP"})
        assert milestone.status_code == 200, milestone.text
        seen = first
        while "SHIPMENT_STATE_IN_TRANSIT" not in seen:
            seen += await asyncio.wait_for(anext(chunks), 10)
    bad = await partner.http.post(f"/v1/{order}/milestones", json={
        "stopId": "dock", "type": "MILESTONE_TYPE_DELIVERED"})
    assert bad.status_code == 400, bad.text
    fields = {v["field"] for d in bad.json()["details"] for v in d.get("fieldViolations", [])}
    assert {"milestone.stop_id", "milestone.event_time", "milestone.source"} <= fields

    record = (await partner.http.get(f"/v1/{order}/tracking")).json()
    assert record["state"] == "SHIPMENT_STATE_IN_TRANSIT"
    assert {s["stopId"] for s in record["stops"] if "eta" in s} == {"delivery"}
    listed = (await partner.http.get(f"/v1/{order}/milestones")).json()
    assert [m["type"] for m in listed["milestones"]] == ["MILESTONE_TYPE_PICKED_UP"]

    fence = await partner.http.post("/v1/geofences", json={
        "displayName": "bad", "geojson": {"type": "Polygon", "coordinates": [
            [[13.0, 50.0], [13.1, 50.1], [13.1, 50.0], [13.0, 50.1], [13.0, 50.0]]]}})
    assert fence.status_code == 400 and "Self-intersection" in fence.text, fence.text

    link = await partner.http.post(f"/v1/{order}/trackingLinks", json={"ttl": "3600s"})
    assert link.status_code == 200, link.text
    # the consignee has no token: the link's own signed token is the authorization
    async with httpx.AsyncClient(base_url=str(partner.http.base_url), timeout=10) as anyone:
        shared = await anyone.get(link.json()["path"])
        assert shared.status_code == 200, shared.text
        view = shared.json()
        assert view["state"] == "SHIPMENT_STATE_IN_TRANSIT" and "etaLatest" in view
        assert "latitude" not in json.dumps(view) and "Acme" not in json.dumps(view)
        forged = await anyone.get(link.json()["path"][:-3] + "AAA")
        assert forged.status_code == 404, forged.text
        # its own rate limit per address (5 per second), JSON 429 with Retry-After
        statuses = [(await anyone.get(link.json()["path"])).status_code for _ in range(12)]
        assert 429 in statuses and statuses[0] in (200, 429)
        # every other route still needs a token
        assert (await anyone.get(f"/v1/{order}/tracking")).status_code == 401
    revoked = await partner.http.post(f"/v1/{link.json()['name']}:revoke", json={})
    assert revoked.status_code == 200, revoked.text
    await asyncio.sleep(1.1)  # a fresh bucket
    async with httpx.AsyncClient(base_url=str(partner.http.base_url), timeout=10) as anyone:
        assert (await anyone.get(link.json()["path"])).status_code == 404


async def test_tracking_needs_its_scopes(partner_factory: Any) -> None:
    reader: Partner = await partner_factory(("orders.read",))
    response = await reader.http.post("/v1/positions:batchRecord", json={"positions": []})
    assert response.status_code == 403, response.text


async def test_another_partner_sees_none_of_it(partner_factory: Any) -> None:
    a: Partner = await partner_factory(SCOPES)
    b: Partner = await partner_factory(SCOPES)
    order = (await a.http.post("/v1/orders", json=order_json())).json()["name"]
    await until_ok(lambda: a.http.get(f"/v1/{order}/tracking"))
    fence = (await a.http.post("/v1/geofences", json={"circle": {
        "center": {"latitude": 50.0, "longitude": 10.0}, "radiusMeters": 100}})).json()
    link = (await a.http.post(f"/v1/{order}/trackingLinks", json={})).json()
    now = iso(datetime.now(UTC))
    calls = [
        ("GET", f"/v1/{order}/tracking", None),
        ("GET", f"/v1/{order}/milestones", None),
        ("POST", f"/v1/{order}/milestones", {
            "stopId": "pickup", "type": "MILESTONE_TYPE_ARRIVED", "eventTime": now,
            "source": "MILESTONE_SOURCE_MANUAL"}),
        ("POST", f"/v1/{order}/trackingLinks", {}),
        ("GET", f"/v1/{fence['name']}", None),
        ("DELETE", f"/v1/{fence['name']}", None),
        ("POST", f"/v1/{link['name']}:revoke", {}),
    ]
    for method, path, body in calls:
        response = await b.http.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    # A's things are untouched
    assert (await a.http.get(f"/v1/{fence['name']}")).status_code == 200
    assert (await a.http.get(f"/v1/{order}/milestones")).json() == {
        "milestones": [], "nextPageToken": ""}
    assert (await a.http.get(link["path"])).status_code == 200
    listed = (await b.http.get("/v1/geofences")).json()
    assert fence["name"] not in json.dumps(listed)
