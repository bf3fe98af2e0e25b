"""Field checks of tracking requests. Bad requests get every problem at once; positions are
checked per item (a bad one is refused with a reason, the rest are stored)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2

from cartage.tracking.v1 import tracking_pb2
from services.kit.errors import InvalidArgument
from services.kit.validation import Violations
from services.tracking.domain.geofencing import circle, polygon_from_geojson
from services.tracking.domain.positions import Refusal, Refused
from services.tracking.domain.shipment import ALLOWED, STOPS, Type

MAX_POSITIONS = 1000
VEHICLE = re.compile(r"^vehicles/[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_NOTE = 1000
MAX_FUTURE = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_RADIUS_M = 100_000.0
MAX_DWELL = timedelta(hours=24)


def check_batch_size(count: int, field: str = "positions") -> None:
    if not 1 <= count <= MAX_POSITIONS:
        raise InvalidArgument.single(field, f"must hold 1 to {MAX_POSITIONS} positions "
                                            f"(got {count})")


def position_shape(index: int, p: tracking_pb2.Position) -> Refused | None:
    """What the domain cannot see: missing or malformed fields."""
    if not VEHICLE.match(p.vehicle):
        return Refused(index, Refusal.MISSING_FIELD, "vehicle must look like vehicles/{id}")
    if not p.HasField("time") or not 0 <= p.time.nanos < 1_000_000_000 or not (
            946_684_800 <= p.time.seconds <= 253_402_300_799):
        return Refused(index, Refusal.MISSING_FIELD, "time is required (after 2000-01-01)")
    if not p.HasField("location"):
        return Refused(index, Refusal.MISSING_FIELD, "location is required")
    return None


def _latlng(v: Violations, value: Any, field: str) -> None:
    v.number(value.latitude, f"{field}.latitude", minimum=-90, maximum=90)
    v.number(value.longitude, f"{field}.longitude", minimum=-180, maximum=180)


def check_milestone(m: tracking_pb2.Milestone, now: datetime, v: Violations,
                    path: str = "milestone") -> None:
    if m.stop_id not in STOPS:
        v.add(f"{path}.stop_id", "must be `pickup` or `delivery`")
    v.enum(m.type, tracking_pb2.MilestoneType.DESCRIPTOR, f"{path}.type",
           allow_unspecified=False)
    if m.type in tracking_pb2.MilestoneType.values() and m.type and m.stop_id in STOPS \
            and Type(m.type) not in ALLOWED[m.stop_id]:
        v.add(f"{path}.type", f"{tracking_pb2.MilestoneType.Name(m.type)} is not a milestone "
                              f"of the {m.stop_id} stop", "WRONG_STOP")
    v.enum(m.exception_reason, tracking_pb2.ExceptionReason.DESCRIPTOR,
           f"{path}.exception_reason")
    if m.type == tracking_pb2.MILESTONE_TYPE_EXCEPTION and not m.exception_reason:
        v.add(f"{path}.exception_reason", "is required for EXCEPTION milestones", "REQUIRED")
    if m.type != tracking_pb2.MILESTONE_TYPE_EXCEPTION and m.exception_reason:
        v.add(f"{path}.exception_reason", "is only allowed on EXCEPTION milestones")
    v.enum(m.source, tracking_pb2.MilestoneSource.DESCRIPTOR, f"{path}.source",
           allow_unspecified=False)
    if not m.HasField("event_time"):
        v.add(f"{path}.event_time", "is required", "REQUIRED")
    elif not 946_684_800 <= m.event_time.seconds <= 253_402_300_799:
        v.add(f"{path}.event_time", "must be after 2000-01-01", "OUT_OF_RANGE")
    elif datetime.fromtimestamp(m.event_time.seconds, UTC) > now + MAX_FUTURE:
        v.add(f"{path}.event_time", "is more than 5 minutes in the future", "IN_THE_FUTURE")
    if m.HasField("location"):
        _latlng(v, m.location, f"{path}.location")
    v.text(m.note, f"{path}.note", max_len=MAX_NOTE)
    if m.vehicle and not VEHICLE.match(m.vehicle):
        v.add(f"{path}.vehicle", "must look like vehicles/{id}")


def seconds(duration: Any) -> float:
    """A Duration's seconds without Duration.ToTimedelta, which overflows on extreme values
    (nanos outside ±999,999,999 count as invalid: NaN compares false with everything)."""
    if not -999_999_999 <= duration.nanos <= 999_999_999:
        return float("nan")
    return duration.seconds + duration.nanos / 1e9


def _vertices(geojson: struct_pb2.Struct) -> int:
    """Vertices of a GeoJSON polygon counted on the message itself (cheap, before the
    conversion to Python that a huge polygon would make expensive)."""
    coordinates = geojson.fields.get("coordinates")
    if coordinates is None or not coordinates.HasField("list_value"):
        return 0
    return sum(len(ring.list_value.values) for ring in coordinates.list_value.values)


def check_geofence(g: tracking_pb2.Geofence, max_vertices: int, v: Violations,
                   path: str = "geofence") -> Any:
    """The validated shape (shapely polygon) or None; problems go to `v`."""
    v.text(g.display_name, f"{path}.display_name", max_len=200)
    if g.HasField("dwell_time"):
        if not 0 < seconds(g.dwell_time) <= MAX_DWELL.total_seconds():
            v.add(f"{path}.dwell_time", "must be more than 0 and at most 24 hours",
                  "OUT_OF_RANGE")
    which = g.WhichOneof("area")
    if which is None:
        v.add(f"{path}.circle", "one of circle and geojson is required", "REQUIRED")
        return None
    if which == "circle":
        c = g.circle
        if not c.HasField("center"):
            v.add(f"{path}.circle.center", "is required", "REQUIRED")
        else:
            _latlng(v, c.center, f"{path}.circle.center")
        v.number(c.radius_meters, f"{path}.circle.radius_meters", minimum=0,
                 maximum=MAX_RADIUS_M, exclusive_minimum=True)
        if v:
            return None
        return circle(c.center.latitude, c.center.longitude, c.radius_meters)[0]
    count = _vertices(g.geojson)
    if count > max_vertices:
        v.add(f"{path}.geojson.coordinates",
              f"has {count} vertices; at most {max_vertices} allowed", "TOO_MANY_VERTICES")
        return None
    polygon, problems = polygon_from_geojson(json_format.MessageToDict(g.geojson), max_vertices)
    for sub, description in problems:
        v.add(f"{path}.geojson.{sub}", description, "INVALID_GEOMETRY")
    return polygon
