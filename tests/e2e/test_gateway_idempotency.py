"""Idempotency at size, through the gateway: 1,000 concurrent sends of one CreateOrder with one
Idempotency-Key (64 in flight) make one order and one `order.created` event; every 200 is
byte-identical, and anything else is 409 ABORTED `REQUEST_IN_FLIGHT`, whose retry gets the same
bytes. The same key with another body is refused (400 IDEMPOTENCY_KEY_REUSED)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.e2e.conftest import Partner
from tests.e2e.test_gateway_journeys import order_json
from tests.support import events_of, eventually

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

SENDS = 1000
IN_FLIGHT = 64


def reason(response: httpx.Response) -> str:
    try:
        details = response.json().get("details", [])
    except ValueError:
        return "not JSON"
    return next((d.get("reason", "") for d in details if d["@type"].endswith("ErrorInfo")), "")


async def test_one_key_sent_a_thousand_times_makes_one_order(
        partner_factory: Any, stack: Stack, record_property: Any) -> None:
    # "internal": a write bucket of 5,000 a second, so the rate limit stays out of the way.
    partner: Partner = await partner_factory(tier="internal")
    key = f"idem-{uuid.uuid4().hex}"
    body = order_json()
    gate = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=partner.http.base_url, headers=partner.http.headers,
                                 limits=limits, timeout=60) as http:

        async def send() -> httpx.Response:
            async with gate:
                return await http.post("/v1/orders", json=body,
                                       headers={"idempotency-key": key})

        started = time.monotonic()
        responses = await asyncio.wait_for(
            asyncio.gather(*(send() for _ in range(SENDS))), timeout=180)
        elapsed = time.monotonic() - started
        outcomes = Counter(f"{r.status_code} {reason(r)}".strip() for r in responses)
        record_property("outcomes", dict(outcomes))
        record_property("seconds", round(elapsed, 2))
        print(f"\n{SENDS} sends, {IN_FLIGHT} in flight, {elapsed:.1f} s: {dict(outcomes)}")

        served = [r for r in responses if r.status_code == 200]
        others = [r for r in responses if r.status_code != 200]
        assert served, outcomes
        assert {r.content for r in served} == {served[0].content}, outcomes
        assert all(r.status_code == 409 and r.json()["code"] == 10
                   and reason(r) == "REQUEST_IN_FLIGHT" for r in others), outcomes
        # A caller told "in flight" retries and gets exactly what the others got.
        for retried in await asyncio.gather(*(send() for _ in others)):
            assert retried.status_code == 200, retried.text
            assert retried.content == served[0].content

        # The same key with another body is a mistake, not a replay.
        reused = await http.post("/v1/orders", json=order_json(),
                                 headers={"idempotency-key": key})
        assert reused.status_code == 400, reused.text
        assert reused.json()["code"] == 3 and reason(reused) == "IDEMPOTENCY_KEY_REUSED"

    name = served[0].json()["name"]
    listed = await partner.http.get("/v1/orders", params={"page_size": 10})
    assert [o["name"] for o in listed.json()["orders"]] == [name]

    async def created() -> list[Any]:
        return [e for s, e, _ in await events_of(stack.nats_url, partner.client_id)
                if s == "order.created"]

    await eventually(created)
    await asyncio.sleep(1.0)  # a duplicate from a second transaction would be out by now
    assert [e.order.name for e in await created()] == [name]
