"""Geofences: shapes, a spatial index, and enter / exit / dwell with hysteresis.

Shapes are shapely geometries in (longitude, latitude) degrees. Each fence has two: the fence
itself (`inner`) and the fence grown by a margin (`outer`, `HYSTERESIS_M`). A vehicle enters
when a position falls inside `inner` and leaves only when one falls outside `outer`, so GPS
jitter along the edge (a few tens of metres) cannot make it flap. Circles and margins are built
in a local metric projection around the fence (equirectangular, exact enough at fence scale)
and projected back to degrees. The index is shapely's STRtree over the `outer` shapes, queried
with all of a request's positions at once.

Time is the positions' own time (event time), never the wall clock: dwell and detention are
measured between fixes, so replaying the same fixes gives the same events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.validation import explain_validity

METRES_PER_DEGREE = 111_320.0
HYSTERESIS_M = 30.0


@dataclass(frozen=True, slots=True)
class Fence:
    id: str
    client_id: str
    inner: Any  # shapely geometry
    outer: Any
    dwell: timedelta
    origin: int = 1  # 1 manual, 2 stop (the contract's Geofence.Origin)
    order_id: str = ""
    stop_id: str = ""
    vehicle: str = ""  # for stop fences: the vehicle the active plan sends there


def _to_metres(lat0: float, lng0: float) -> tuple[float, float]:
    return METRES_PER_DEGREE * math.cos(math.radians(lat0)), METRES_PER_DEGREE


def circle(lat: float, lng: float, radius_m: float, margin_m: float = HYSTERESIS_M
           ) -> tuple[Any, Any]:
    """(inner, outer) polygons of a circle of `radius_m` around (lat, lng)."""
    kx, ky = _to_metres(lat, lng)
    centre = shapely.Point(0, 0)

    def back(metric: Any) -> Any:
        return shapely.transform(metric, lambda xy: xy / np.array([kx, ky]) + [lng, lat])

    return back(centre.buffer(radius_m, 32)), back(centre.buffer(radius_m + margin_m, 32))


def grown(polygon: Any, margin_m: float = HYSTERESIS_M) -> Any:
    """The polygon grown by `margin_m` metres (in its own local projection)."""
    c = polygon.centroid
    kx, ky = _to_metres(c.y, c.x)
    scale = np.array([kx, ky])
    metric = shapely.transform(polygon, lambda xy: (xy - [c.x, c.y]) * scale)
    return shapely.transform(metric.buffer(margin_m, 8), lambda xy: xy / scale + [c.x, c.y])


def polygon_from_geojson(data: Mapping[str, Any], max_vertices: int
                         ) -> tuple[Any | None, list[tuple[str, str]]]:
    """A GeoJSON Polygon as a shapely polygon, or the problems (sub-field, description).
    Vertices are counted before anything is built, so a huge polygon costs no geometry work."""
    problems: list[tuple[str, str]] = []
    if data.get("type") != "Polygon":
        return None, [("type", "must be \"Polygon\"")]
    rings = data.get("coordinates")
    if not isinstance(rings, list | tuple) or not rings:
        return None, [("coordinates", "must be a list of linear rings")]
    total = sum(len(r) for r in rings if isinstance(r, list | tuple))
    if total > max_vertices:
        return None, [("coordinates", f"has {total} vertices; at most {max_vertices} allowed")]
    parsed: list[list[tuple[float, float]]] = []
    for i, ring in enumerate(rings):
        where = f"coordinates[{i}]"
        if not isinstance(ring, list | tuple) or len(ring) < 4:
            problems.append((where, "a linear ring needs at least 4 positions"))
            continue
        points = []
        for j, position in enumerate(ring):
            ok = (isinstance(position, list | tuple) and len(position) in (2, 3)
                  and all(isinstance(x, int | float) and math.isfinite(x) for x in position))
            if not ok or not (-180 <= position[0] <= 180 and -90 <= position[1] <= 90):
                problems.append((f"{where}[{j}]", "must be [longitude, latitude] in range"))
                break
            points.append((float(position[0]), float(position[1])))
        else:
            if points[0] != points[-1]:
                problems.append((where, "is not closed (the last position must equal the first)"))
            parsed.append(points)
    if problems:
        return None, problems
    polygon = Polygon(parsed[0], parsed[1:])
    if not polygon.is_valid:
        return None, [("coordinates", f"is not a valid polygon: {explain_validity(polygon)}")]
    return polygon, []


class FenceIndex:
    """One client's fences in an STRtree (over the `outer` shapes)."""

    def __init__(self, fences: Sequence[Fence]) -> None:
        self.fences = list(fences)
        self._by_id = {f.id: i for i, f in enumerate(self.fences)}
        self._tree = shapely.STRtree([f.outer for f in self.fences]) if self.fences else None
        self._inner = np.array([f.inner for f in self.fences], dtype=object)

    def __len__(self) -> int:
        return len(self.fences)

    def get(self, fence_id: str) -> Fence | None:
        i = self._by_id.get(fence_id)
        return None if i is None else self.fences[i]

    def locate(self, lats: Sequence[float], lngs: Sequence[float]
               ) -> list[dict[str, bool]]:
        """Per point: {fence id: inside `inner`} for every fence whose `outer` holds it."""
        out: list[dict[str, bool]] = [{} for _ in lats]
        if self._tree is None or not lats:
            return out
        points = shapely.points(np.column_stack([lngs, lats]))
        pairs = self._tree.query(points, predicate="intersects")
        if pairs.shape[1] == 0:
            return out
        inside = shapely.intersects(self._inner[pairs[1]], points[pairs[0]])
        for p, f, ok in zip(pairs[0].tolist(), pairs[1].tolist(), inside.tolist(), strict=True):
            out[p][self.fences[f].id] = bool(ok)
        return out


class Happening(StrEnum):
    ENTERED = "entered"
    EXITED = "exited"
    DWELLED = "dwelled"
    DETENTION_STARTED = "detention_started"
    DETENTION_ENDED = "detention_ended"


@dataclass(frozen=True, slots=True)
class Presence:
    """A vehicle inside a fence (no row: outside)."""

    fence_id: str
    vehicle: str
    enter_time: datetime
    last_time: datetime
    dwelled: bool = False
    detained: bool = False


@dataclass(frozen=True, slots=True)
class Occurrence:
    what: Happening
    fence: Fence
    vehicle: str
    time: datetime  # when it happened (a position's time, or enter + free time)
    enter_time: datetime
    lat: float
    lng: float
    duration: timedelta = timedelta(0)  # dwell so far, or billable detention


@dataclass(slots=True)
class Step:
    presence: Presence | None
    occurrences: list[Occurrence] = field(default_factory=list)


def step(presence: Presence | None, fence: Fence, vehicle: str, time: datetime,
         lat: float, lng: float, in_inner: bool, in_outer: bool,
         free_time: timedelta) -> Step:
    """One position against one fence. Positions not newer than the presence's last are
    ignored (late fixes never replay a visit)."""
    if presence is not None and time <= presence.last_time:
        return Step(presence)
    if presence is None:
        if not in_inner:
            return Step(None)
        entered = Presence(fence.id, vehicle, time, time)
        return Step(entered, [Occurrence(Happening.ENTERED, fence, vehicle, time, time, lat,
                                         lng)])
    if not in_outer:
        inside_for = time - presence.enter_time
        happened = [Occurrence(Happening.EXITED, fence, vehicle, time, presence.enter_time,
                               lat, lng, inside_for)]
        if presence.detained:
            happened.append(Occurrence(Happening.DETENTION_ENDED, fence, vehicle, time,
                                       presence.enter_time, lat, lng,
                                       max(timedelta(0), inside_for - free_time)))
        return Step(None, happened)
    now_inside = replace(presence, last_time=time)
    happened = []
    inside_for = time - presence.enter_time
    if not presence.dwelled and inside_for >= fence.dwell:
        now_inside = replace(now_inside, dwelled=True)
        happened.append(Occurrence(Happening.DWELLED, fence, vehicle, time, presence.enter_time,
                                   lat, lng, inside_for))
    if fence.origin == 2 and not presence.detained and inside_for >= free_time:
        now_inside = replace(now_inside, detained=True)
        happened.append(Occurrence(Happening.DETENTION_STARTED, fence, vehicle,
                                   presence.enter_time + free_time, presence.enter_time, lat,
                                   lng))
    return Step(now_inside, happened)
