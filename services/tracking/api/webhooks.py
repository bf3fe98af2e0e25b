"""The WebhookService gRPC servicer and its proto⇄row conversion: convert, call, convert back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.longrunning import operations_proto_pb2
from google.protobuf import empty_pb2

from cartage.tracking.v1 import webhook_pb2, webhook_service_pb2, webhook_service_pb2_grpc
from services.kit.auth import current_caller
from services.kit.clock import set_timestamp
from services.kit.fieldmask import check_update_mask, effective_update_mask
from services.kit.operations import OperationNames
from services.kit.pagination import Keyset, newest_key, time_and_id
from services.kit.validation import Violations
from services.tracking.api.webhook_operations import operation_to_proto
from services.tracking.domain.webhooks import type_problem
from services.tracking.use_cases.webhooks import Endpoints, etag_of

pb = webhook_service_pb2
COLLECTION = "webhookEndpoints"
UPDATABLE = frozenset({"url", "event_types", "description", "enabled"})


def endpoint_to_proto(row: Any, secret: str = "") -> webhook_pb2.WebhookEndpoint:
    message = webhook_pb2.WebhookEndpoint(
        name=f"{COLLECTION}/{row.id}", url=row.url, event_types=list(row.event_types),
        description=row.description, enabled=row.enabled,
        disabled_reason=row.disabled_reason, secret=secret, etag=etag_of(row))
    set_timestamp(message.create_time, row.create_time)
    set_timestamp(message.update_time, row.update_time)
    return message


def delivery_to_proto(row: Any) -> webhook_pb2.WebhookDelivery:
    message = webhook_pb2.WebhookDelivery(
        name=f"{COLLECTION}/{row.endpoint_id}/deliveries/{row.id}", event_id=row.event_id,
        event_type=row.event_type, state=row.state)
    for item in row.attempts:
        attempt = message.attempts.add(http_status=item["http_status"],
                                       response=item["response"])
        set_timestamp(attempt.attempt_time, datetime.fromisoformat(item["attempt_time"]))
        attempt.latency.FromNanoseconds(int(item["latency_s"] * 1e9))
    if row.next_attempt_time is not None and row.state in (1, 3):
        set_timestamp(message.next_attempt_time, row.next_attempt_time)
    set_timestamp(message.create_time, row.create_time)
    return message


def _values(endpoint: webhook_pb2.WebhookEndpoint, paths: set[str]) -> dict[str, Any]:
    """The fields named in `paths`, checked (field violations for each bad one)."""
    v = Violations()
    prefix = "webhook_endpoint"
    if "url" in paths and not endpoint.url:
        v.add(f"{prefix}.url", "is required", "REQUIRED")
    if "event_types" in paths:
        if not endpoint.event_types:
            v.add(f"{prefix}.event_types", "name at least one event type", "REQUIRED")
        if len(endpoint.event_types) > 100:
            v.add(f"{prefix}.event_types", "at most 100 event types")
        for i, pattern in enumerate(endpoint.event_types):
            problem = type_problem(pattern)
            if problem:
                v.add(f"{prefix}.event_types[{i}]", problem)
    if "description" in paths and len(endpoint.description) > 500:
        v.add(f"{prefix}.description", "must be at most 500 characters")
    v.raise_if_any()
    values: dict[str, Any] = {}
    for path in paths:
        value = getattr(endpoint, path)
        values[path] = list(value) if path == "event_types" else value
    return values


def _endpoint_id(name: str, field: str = "name") -> str:
    v = Violations()
    endpoint_id = v.resource_id(name, COLLECTION, field)
    v.raise_if_any()
    return endpoint_id


def _delivery_ids(name: str) -> tuple[str, str]:
    parts = name.split("/")
    v = Violations()
    if len(parts) != 4 or parts[0] != COLLECTION or parts[2] != "deliveries" or \
            not parts[1] or not parts[3]:
        v.add("name", "must look like webhookEndpoints/{endpoint}/deliveries/{delivery}",
              "INVALID_NAME")
    v.raise_if_any()
    return parts[1], parts[3]


class WebhookServicer(webhook_service_pb2_grpc.WebhookServiceServicer):
    def __init__(self, endpoints: Endpoints, names: OperationNames) -> None:
        self._endpoints = endpoints
        self._names = names

    async def ReplayWebhookEvents(self, request: pb.ReplayWebhookEventsRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> operations_proto_pb2.Operation:
        start = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
        end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None
        row = await self._endpoints.replay(current_caller().client_id,
                                           _endpoint_id(request.name), start, end,
                                           request.failed_only)
        return operation_to_proto(self._names, row)

    async def CreateWebhookEndpoint(self, request: pb.CreateWebhookEndpointRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> webhook_pb2.WebhookEndpoint:
        values = _values(request.webhook_endpoint, {"url", "event_types", "description"})
        row, secret = await self._endpoints.create(current_caller().client_id, values)
        return endpoint_to_proto(row, secret)

    async def GetWebhookEndpoint(self, request: pb.GetWebhookEndpointRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> webhook_pb2.WebhookEndpoint:
        return endpoint_to_proto(await self._endpoints.get(
            current_caller().client_id, _endpoint_id(request.name)))

    async def ListWebhookEndpoints(self, request: pb.ListWebhookEndpointsRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.ListWebhookEndpointsResponse:
        caller = current_caller()
        page = Keyset.of(request, caller.client_id, "endpoints", parse=time_and_id)
        rows = await self._endpoints.list(caller.client_id, page.after, page.fetch)
        return pb.ListWebhookEndpointsResponse(
            webhook_endpoints=[endpoint_to_proto(r) for r in rows[:page.limit]],
            next_page_token=page.next_token(rows, newest_key))

    async def UpdateWebhookEndpoint(self, request: pb.UpdateWebhookEndpointRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> webhook_pb2.WebhookEndpoint:
        endpoint = request.webhook_endpoint
        endpoint_id = _endpoint_id(endpoint.name, "webhook_endpoint.name")
        mask = effective_update_mask(request.update_mask, endpoint, updatable=UPDATABLE)
        paths = check_update_mask(mask, endpoint.DESCRIPTOR, updatable=UPDATABLE)
        values = _values(endpoint, set(paths))
        return endpoint_to_proto(await self._endpoints.update(
            current_caller().client_id, endpoint_id, endpoint.etag, values))

    async def DeleteWebhookEndpoint(self, request: pb.DeleteWebhookEndpointRequest,
                                    context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._endpoints.delete(current_caller().client_id, _endpoint_id(request.name))
        return empty_pb2.Empty()

    async def RotateWebhookSecret(self, request: pb.RotateWebhookSecretRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> webhook_pb2.WebhookEndpoint:
        row, secret = await self._endpoints.rotate(current_caller().client_id,
                                                   _endpoint_id(request.name))
        return endpoint_to_proto(row, secret)

    async def ListWebhookDeliveries(self, request: pb.ListWebhookDeliveriesRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> pb.ListWebhookDeliveriesResponse:
        caller = current_caller()
        endpoint_id = _endpoint_id(request.parent, "parent")
        page = Keyset.of(request, caller.client_id, endpoint_id, str(request.state),
                         request.event_type, parse=time_and_id)
        rows = await self._endpoints.deliveries(caller.client_id, endpoint_id, request.state,
                                                request.event_type, page.after, page.fetch)
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_proto(r) for r in rows[:page.limit]],
            next_page_token=page.next_token(rows, newest_key))

    async def RetryWebhookDelivery(self, request: pb.RetryWebhookDeliveryRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> webhook_pb2.WebhookDelivery:
        endpoint_id, delivery_id = _delivery_ids(request.name)
        return delivery_to_proto(await self._endpoints.retry(
            current_caller().client_id, endpoint_id, delivery_id))

    async def SendTestWebhookEvent(self, request: pb.SendTestWebhookEventRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> webhook_pb2.WebhookDelivery:
        return delivery_to_proto(await self._endpoints.send_test(
            current_caller().client_id, _endpoint_id(request.name)))
