"""The TrackingService gRPC servicer: convert, call the use case, convert back. No rules here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
from google.protobuf import empty_pb2

from cartage.tracking.v1 import tracking_pb2, tracking_service_pb2, tracking_service_pb2_grpc
from services.kit.auth import current_caller
from services.kit.clock import utc_now
from services.kit.errors import InvalidArgument
from services.kit.log import request_id_var
from services.kit.pagination import Keyset, newest_key, time_and_id
from services.kit.validation import Violations, parse_name
from services.tracking import conversion
from services.tracking.api import validation
from services.tracking.domain.positions import Fix, Refused
from services.tracking.use_cases.geofences import Geofences
from services.tracking.use_cases.milestones import Milestones
from services.tracking.use_cases.positions import Outcome, Positions
from services.tracking.use_cases.views import Views

DEFAULT_LINK_TTL = timedelta(days=7)
LINK_TTL = (timedelta(minutes=1), timedelta(days=30))

pb = tracking_service_pb2


def _order_id(name: str, field: str, suffix: str = "") -> str:
    v = Violations()
    if suffix and not name.endswith(suffix):
        v.add(field, f"must look like orders/{{order}}{suffix}", "INVALID_NAME")
        v.raise_if_any()
    order_id = v.resource_id(name.removesuffix(suffix), "orders", field)
    v.raise_if_any()
    return order_id


def _positions(items: list[tracking_pb2.Position]) -> tuple[list[tuple[int, Fix]],
                                                            list[Refused]]:
    fixes, refused = [], []
    for index, item in enumerate(items):
        problem = validation.position_shape(index, item)
        if problem is None:
            fixes.append((index, conversion.fix_from_proto(item)))
        else:
            refused.append(problem)
    return fixes, refused


class TrackingServicer(tracking_service_pb2_grpc.TrackingServiceServicer):
    def __init__(self, positions: Positions, milestones: Milestones, geofences: Geofences,
                 views: Views, *, max_polygon_vertices: int, watch_interval_s: float) -> None:
        self._positions = positions
        self._milestones = milestones
        self._geofences = geofences
        self._views = views
        self._max_vertices = max_polygon_vertices
        self._watch_interval = watch_interval_s

    async def RecordPositions(self, request_iterator: AsyncIterator[pb.RecordPositionsRequest],
                              context: grpc.aio.ServicerContext) -> pb.RecordPositionsResponse:
        """Each message is stored before the next is read (together with the messages other
        streams of the client sent meanwhile: one transaction for many small messages); see
        `_Tally` for a bad message."""
        caller = current_caller()
        total = Outcome()
        async for request in _Tally(request_iterator, total):
            validation.check_batch_size(len(request.positions))
            fixes, refused = _positions(list(request.positions))
            outcome = await self._positions.record_shared(caller.client_id, fixes, refused)
            total.accepted += outcome.accepted
            total.duplicates += outcome.duplicates
            total.late += outcome.late
            total.refused.extend(outcome.refused)
        return conversion.outcome_to_proto(total)

    async def BatchRecordPositions(self, request: pb.BatchRecordPositionsRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.RecordPositionsResponse:
        caller = current_caller()
        validation.check_batch_size(len(request.positions))
        fixes, refused = _positions(list(request.positions))
        outcome = await self._positions.record(caller.client_id, fixes, refused,
                                               request_id_var.get())
        return conversion.outcome_to_proto(outcome)

    async def RecordMilestone(self, request: pb.RecordMilestoneRequest,
                              context: grpc.aio.ServicerContext) -> tracking_pb2.Milestone:
        caller = current_caller()
        v = Violations()
        order_id = v.resource_id(request.parent, "orders", "parent")
        if request.HasField("milestone"):
            validation.check_milestone(request.milestone, utc_now(), v)
        else:
            v.add("milestone", "is required", "REQUIRED")
        v.raise_if_any()
        milestone, body = conversion.milestone_from_proto(request.milestone)
        stored = await self._milestones.record(
            caller.client_id, order_id, milestone, body,
            request.milestone.vehicle.removeprefix("vehicles/"), request_id_var.get())
        return conversion.milestone_to_proto(order_id, stored)

    async def ListMilestones(self, request: pb.ListMilestonesRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListMilestonesResponse:
        caller = current_caller()
        order_id = _order_id(request.parent, "parent")
        page = Keyset.of(request, caller.client_id, order_id, parse=time_and_id)
        rows = await self._milestones.list(caller.client_id, order_id, page.after, page.fetch)
        return pb.ListMilestonesResponse(
            milestones=[conversion.milestone_to_proto(order_id, s) for s in rows[:page.limit]],
            next_page_token=page.next_token(
                rows, lambda s: (s.milestone.event_time.isoformat(), s.id)))

    async def GetTracking(self, request: pb.GetTrackingRequest,
                          context: grpc.aio.ServicerContext) -> tracking_pb2.Tracking:
        caller = current_caller()
        order_id = _order_id(request.name, "name", "/tracking")
        return conversion.tracking_to_proto(await self._views.tracking(caller.client_id,
                                                                       order_id))

    async def WatchTracking(self, request: pb.WatchTrackingRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[tracking_pb2.Tracking]:
        """The current record at once, then each change, read every `watch_interval_s`."""
        caller = current_caller()
        order_id = _order_id(request.name, "name", "/tracking")
        sent = b""
        while True:
            message = conversion.tracking_to_proto(await self._views.tracking(caller.client_id,
                                                                              order_id))
            data = message.SerializeToString(deterministic=True)
            if data != sent:
                sent = data
                yield message
            await asyncio.sleep(self._watch_interval)

    async def CreateGeofence(self, request: pb.CreateGeofenceRequest,
                             context: grpc.aio.ServicerContext) -> tracking_pb2.Geofence:
        caller = current_caller()
        v = Violations()
        shape = None
        if request.HasField("geofence"):
            shape = validation.check_geofence(request.geofence, self._max_vertices, v)
        else:
            v.add("geofence", "is required", "REQUIRED")
        v.raise_if_any()
        content = tracking_pb2.Geofence()
        content.CopyFrom(request.geofence)
        for output in ("name", "origin", "order", "stop_id", "create_time"):
            content.ClearField(output)

        def body(fence_id: str, create_time: object) -> bytes:
            return content.SerializeToString()

        dwell = (request.geofence.dwell_time.ToTimedelta()
                 if request.geofence.HasField("dwell_time") else None)
        stored = await self._geofences.create(caller.client_id, shape, dwell, body,
                                              request_id_var.get())
        return conversion.fence_to_proto(stored.fence, stored.create_time, stored.body)

    async def GetGeofence(self, request: pb.GetGeofenceRequest,
                          context: grpc.aio.ServicerContext) -> tracking_pb2.Geofence:
        caller = current_caller()
        stored = await self._geofences.get(caller.client_id, parse_name(request.name,
                                                                        "geofences"))
        return conversion.fence_to_proto(stored.fence, stored.create_time, stored.body)

    async def ListGeofences(self, request: pb.ListGeofencesRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListGeofencesResponse:
        caller = current_caller()
        page = Keyset.of(request, caller.client_id, parse=time_and_id)
        rows = await self._geofences.list(caller.client_id, page.after, page.fetch)
        return pb.ListGeofencesResponse(
            geofences=[conversion.fence_to_proto(s.fence, s.create_time, s.body)
                       for s in rows[:page.limit]],
            next_page_token=page.next_token(
                [_Keyed(s.create_time, s.fence.id) for s in rows], newest_key))

    async def DeleteGeofence(self, request: pb.DeleteGeofenceRequest,
                             context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        caller = current_caller()
        await self._geofences.delete(caller.client_id, parse_name(request.name, "geofences"),
                                     request_id_var.get())
        return empty_pb2.Empty()

    async def CreateTrackingLink(self, request: pb.CreateTrackingLinkRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> tracking_pb2.TrackingLink:
        caller = current_caller()
        v = Violations()
        order_id = v.resource_id(request.parent, "orders", "parent")
        ttl = DEFAULT_LINK_TTL
        if request.HasField("ttl"):
            if not (LINK_TTL[0].total_seconds() <= validation.seconds(request.ttl)
                    <= LINK_TTL[1].total_seconds()):
                v.add("ttl", "must be from 1 minute to 30 days", "OUT_OF_RANGE")
            else:
                ttl = request.ttl.ToTimedelta()
        v.raise_if_any()
        link = await self._views.create_link(caller.client_id, order_id, ttl,
                                             request_id_var.get())
        return conversion.link_to_proto(link, self._views.token(link))

    async def RevokeTrackingLink(self, request: pb.RevokeTrackingLinkRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> tracking_pb2.TrackingLink:
        caller = current_caller()
        link = await self._views.revoke_link(
            caller.client_id, parse_name(request.name, "trackingLinks"), request_id_var.get())
        return conversion.link_to_proto(link)

    async def GetSharedTracking(self, request: pb.GetSharedTrackingRequest,
                                context: grpc.aio.ServicerContext
                                ) -> tracking_pb2.SharedTracking:
        # No caller: the token is the authorization.
        if not 1 <= len(request.token) <= 200:
            raise InvalidArgument.single("token", "is required (at most 200 characters)")
        return conversion.shared_to_proto(await self._views.shared(request.token))


class _Keyed:
    __slots__ = ("create_time", "id")

    def __init__(self, create_time: object, id_: str) -> None:
        self.create_time, self.id = create_time, id_


class _Tally:
    """The stream's messages; a malformed one ends the stream with INVALID_ARGUMENT whose
    metadata `accepted` says how many positions were stored before it (they stay stored)."""

    def __init__(self, stream: AsyncIterator[pb.RecordPositionsRequest], total: Outcome
                 ) -> None:
        self._stream = stream
        self._total = total

    def __aiter__(self) -> _Tally:
        return self

    async def __anext__(self) -> pb.RecordPositionsRequest:
        try:
            return await self._stream.__anext__()
        except InvalidArgument as error:
            error.metadata["accepted"] = str(self._total.accepted)
            raise
