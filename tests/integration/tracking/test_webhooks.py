"""Partner webhooks end to end on real Postgres and NATS: an order created through the order
service reaches the partner's loopback receiver signed (checked with the reference
`standardwebhooks` package), exactly once, only for its own tenant; retries on the compressed
schedule keep the webhook-id; 410 disables; Retry-After postpones; rotation signs twice;
hostile URLs are refused at creation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from cartage.tracking.v1 import webhook_pb2, webhook_service_pb2, webhook_service_pb2_grpc
from tests.support import OrderClient, eventually, new_client_id, rich_status, sample_order
from tests.webhook_receiver import Receiver

pb = webhook_service_pb2
State = webhook_pb2.WebhookDelivery.State


class Hooks:
    """WebhookService stubs bound to one caller."""

    def __init__(self, channel: grpc.aio.Channel, client_id: str) -> None:
        self.stub = webhook_service_pb2_grpc.WebhookServiceStub(channel)
        self.client_id = client_id

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.stub, method)

        async def invoke(request: Any) -> Any:
            return await call(request, timeout=30, metadata=(
                ("x-cartage-client-id", self.client_id),
                ("x-cartage-scopes", "webhooks.read webhooks.write")))

        return invoke

    async def endpoint(self, receiver: Receiver, *types: str) -> webhook_pb2.WebhookEndpoint:
        created = await self.CreateWebhookEndpoint(pb.CreateWebhookEndpointRequest(
            webhook_endpoint=webhook_pb2.WebhookEndpoint(
                url=receiver.url, event_types=list(types or ("webhook.test",)))))
        receiver.secrets = [created.secret]
        return created

    async def deliveries(self, endpoint: str) -> list[webhook_pb2.WebhookDelivery]:
        return list((await self.ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(parent=endpoint))).deliveries)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def hooks(tracking_address: str) -> AsyncIterator[Hooks]:
    async with grpc.aio.insecure_channel(tracking_address) as channel:
        yield Hooks(channel, new_client_id())


async def test_an_order_reaches_its_tenants_endpoint_signed_once_and_no_other(
        tracking_address: str, channel: grpc.aio.Channel, receiver: Receiver) -> None:
    async with grpc.aio.insecure_channel(tracking_address) as tch:
        mine, theirs = Hooks(tch, new_client_id()), Hooks(tch, new_client_id())
        other = await Receiver().start()
        try:
            created = await mine.endpoint(receiver, "order.*")
            assert created.secret.startswith("whsec_") and len(created.secret) >= 6 + 32
            await theirs.endpoint(other, "order.*")
            order = await OrderClient(channel, mine.client_id).create(sample_order())
            await eventually(lambda: _async(len(receiver.received) >= 1), seconds=20)
            got = receiver.received[0]
            assert got.verified, got.headers
            assert got.json["type"] == "order.created"
            assert got.json["data"]["order"]["name"] == order.name
            assert "clientId" not in got.json["data"]  # internal routing field never leaks
            assert set(got.headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}
            # The secret is shown at creation only.
            read = await mine.GetWebhookEndpoint(pb.GetWebhookEndpointRequest(
                name=created.name))
            assert read.secret == "" and read.url == receiver.url
            await _settle(1.0)
            assert [r.json["type"] for r in receiver.received] == ["order.created"]
            assert other.received == []  # another client's endpoint never sees it
            [delivery] = await mine.deliveries(created.name)
            assert delivery.state == State.STATE_DELIVERED
            assert delivery.name.endswith("/" + got.webhook_id)
            assert delivery.attempts[0].http_status == 200
        finally:
            await other.stop()


async def test_failures_are_retried_with_the_same_webhook_id(hooks: Hooks,
                                                             receiver: Receiver) -> None:
    receiver.answer = lambda _r: (500, {}, 0.0) if len(receiver.received) <= 2 else (
        204, {}, 0.0)
    endpoint = await hooks.endpoint(receiver)
    await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(name=endpoint.name))

    async def delivered() -> Any:
        [d] = await hooks.deliveries(endpoint.name)
        return d if d.state == State.STATE_DELIVERED else None

    delivery = await eventually(delivered, seconds=20)
    assert [a.http_status for a in delivery.attempts] == [500, 500, 204]
    assert len({r.webhook_id for r in receiver.received}) == 1
    assert all(r.verified for r in receiver.received)


async def test_retry_after_postpones_the_next_attempt(hooks: Hooks, receiver: Receiver) -> None:
    receiver.answer = lambda _r: (503, {"retry-after": "2"}, 0.0) if len(
        receiver.received) == 1 else (200, {}, 0.0)
    endpoint = await hooks.endpoint(receiver)
    await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(name=endpoint.name))
    await eventually(lambda: _async(len(receiver.received) >= 2), seconds=20)
    [d] = await hooks.deliveries(endpoint.name)
    first, second = (a.attempt_time.ToDatetime() for a in d.attempts[:2])
    assert (second - first).total_seconds() >= 1.9  # not the schedule's 5 ms


async def test_every_attempt_failing_ends_failed(hooks: Hooks, receiver: Receiver) -> None:
    receiver.answer = lambda _r: (500, {}, 0.0)
    endpoint = await hooks.endpoint(receiver)
    await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(name=endpoint.name))

    async def failed() -> Any:
        [d] = await hooks.deliveries(endpoint.name)
        return d if d.state == State.STATE_FAILED else None

    # 8 attempts, ~10 s on the compressed schedule.
    delivery = await eventually(failed, seconds=40)
    assert len(delivery.attempts) == 8


async def test_410_disables_the_endpoint(hooks: Hooks, receiver: Receiver) -> None:
    receiver.answer = lambda _r: (410, {}, 0.0)
    endpoint = await hooks.endpoint(receiver)
    await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(name=endpoint.name))

    async def disabled() -> Any:
        e = await hooks.GetWebhookEndpoint(pb.GetWebhookEndpointRequest(name=endpoint.name))
        return e if not e.enabled else None

    e = await eventually(disabled, seconds=20)
    assert e.disabled_reason == webhook_pb2.WebhookEndpoint.DISABLED_REASON_GONE
    [d] = await hooks.deliveries(endpoint.name)
    assert d.state == State.STATE_FAILED and len(receiver.received) == 1
    # Enabling it again is the partner's call; the failed delivery can then be retried.
    await hooks.UpdateWebhookEndpoint(pb.UpdateWebhookEndpointRequest(
        webhook_endpoint=webhook_pb2.WebhookEndpoint(name=endpoint.name, enabled=True),
        update_mask=field_mask_pb2.FieldMask(paths=["enabled"])))
    receiver.answer = lambda _r: (200, {}, 0.0)
    await hooks.RetryWebhookDelivery(pb.RetryWebhookDeliveryRequest(name=d.name))
    await eventually(lambda: _async(len(receiver.received) == 2), seconds=20)
    assert receiver.received[1].webhook_id == receiver.received[0].webhook_id


async def test_rotation_signs_with_both_secrets(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = await hooks.endpoint(receiver)
    old = endpoint.secret
    rotated = await hooks.RotateWebhookSecret(pb.RotateWebhookSecretRequest(name=endpoint.name))
    assert rotated.secret.startswith("whsec_") and rotated.secret != old
    receiver.secrets = [old, rotated.secret]  # each must verify on its own
    await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(name=endpoint.name))
    await eventually(lambda: _async(len(receiver.received) == 1), seconds=20)
    got = receiver.received[0]
    assert got.verified and len(got.headers["webhook-signature"].split(" ")) == 2


HOSTILE = [
    "http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://192.168.1.1/",
    "http://172.16.0.1/", "http://100.64.0.1/", "http://0.0.0.0/", "http://[::ffff:10.0.0.1]/",
    "http://[fd00::1]/", "http://[fe80::1]/", "http://224.0.0.1/", "http://0xa000001/",
    "http://167772161/", "http://012.0.0.1/", "http://[fd00:ec2::254]/",
    "http://100.100.100.200/", "http://8.8.8.8/", "ftp://127.0.0.1/", "http://user:pw@127.0.0.1/",
    "not a url", "http:///nohost", "http://[::ffff:169.254.169.254]/",
]


@pytest.mark.parametrize("url", HOSTILE)
async def test_hostile_urls_are_refused_at_creation(hooks: Hooks, url: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.CreateWebhookEndpoint(pb.CreateWebhookEndpointRequest(
            webhook_endpoint=webhook_pb2.WebhookEndpoint(url=url, event_types=["order.*"])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, details = rich_status(caught.value)
    fields = [v.field for d in details for v in getattr(d, "field_violations", [])]
    assert fields == ["webhook_endpoint.url"], details


async def test_bad_event_types_are_field_violations(hooks: Hooks, receiver: Receiver) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.CreateWebhookEndpoint(pb.CreateWebhookEndpointRequest(
            webhook_endpoint=webhook_pb2.WebhookEndpoint(
                url=receiver.url, event_types=["order.created", "*", "Order.X"])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, details = rich_status(caught.value)
    fields = [v.field for d in details for v in getattr(d, "field_violations", [])]
    assert fields == ["webhook_endpoint.event_types[1]", "webhook_endpoint.event_types[2]"]


async def test_another_clients_endpoint_is_not_found(hooks: Hooks, receiver: Receiver,
                                                     tracking_address: str) -> None:
    endpoint = await hooks.endpoint(receiver)
    async with grpc.aio.insecure_channel(tracking_address) as tch:
        stranger = Hooks(tch, new_client_id())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stranger.GetWebhookEndpoint(pb.GetWebhookEndpointRequest(name=endpoint.name))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stranger.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(
                name=endpoint.name))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def _async(value: Any) -> Any:
    return value


async def _settle(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_replay_is_an_operation_that_resends_under_the_same_webhook_id(
        hooks: Hooks, receiver: Receiver, tracking_address: str) -> None:
    from google.longrunning import operations_pb2_grpc, operations_proto_pb2

    endpoint = await hooks.endpoint(receiver)
    await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(name=endpoint.name))
    await eventually(lambda: _async(len(receiver.received) == 1), seconds=20)
    failed_only = await hooks.ReplayWebhookEvents(pb.ReplayWebhookEventsRequest(
        name=endpoint.name, failed_only=True))
    result = pb.ReplayWebhookEventsResponse()
    assert failed_only.done and failed_only.response.Unpack(result)
    assert result.deliveries_scheduled == 0
    everything = await hooks.ReplayWebhookEvents(pb.ReplayWebhookEventsRequest(
        name=endpoint.name))
    assert everything.name.startswith("operations/tracking/")
    await eventually(lambda: _async(len(receiver.received) == 2), seconds=20)
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id
    async with grpc.aio.insecure_channel(tracking_address) as ch:
        got = await operations_pb2_grpc.OperationsStub(ch).GetOperation(
            operations_proto_pb2.GetOperationRequest(name=everything.name),
            metadata=(("x-cartage-client-id", hooks.client_id),), timeout=10)
    assert got.done and got.response.Unpack(result) and result.deliveries_scheduled == 1


async def test_a_slow_endpoint_does_not_hold_up_another(hooks: Hooks, receiver: Receiver) -> None:
    import asyncio

    slow = await Receiver().start()
    slow.answer = lambda _r: (200, {}, 4.0)
    try:
        slow_endpoint = await hooks.endpoint(slow)
        for _ in range(12):  # three times its 4 slots
            await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(
                name=slow_endpoint.name))
        await eventually(lambda: _async(len(slow.received) >= 4), seconds=20)
        assert len(slow.received) == 4  # per-endpoint bound: the rest wait their turn
        fast_endpoint = await hooks.endpoint(receiver)
        started = asyncio.get_running_loop().time()
        await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(
            name=fast_endpoint.name))
        await eventually(lambda: _async(len(receiver.received) == 1), seconds=20)
        assert asyncio.get_running_loop().time() - started < 2.0  # not behind the slow ones
    finally:
        await slow.stop()
