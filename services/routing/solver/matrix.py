"""Travel-time / distance matrices and the providers that build them.

A solver never computes a distance itself: it reads a :class:`TravelMatrix` (integer metres and
seconds) so that the feasibility checker, the solvers and the benchmark agree to the last unit.

Providers:

* :class:`HaversineProvider` - great-circle distance x road factor, duration from a speed
  profile by hour of day, slowed down by traffic incidents (production fallback, no service).
* :class:`EuclideanProvider` - planar coordinates, e.g. benchmark instances with the DIMACS
  convention (Euclidean truncated to one decimal, kept exact by scaling x10).
* :class:`OsrmTableProvider` - an OSRM-compatible ``/table`` service; it only builds the request
  URL and parses the response dict, the HTTP call is injected so tests need no network.

The matrices are static for one departure time: time-dependent travel is approximated by
building the matrix for the plan's start (or a replan's "now"), which is what incidents use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from services.routing.solver.model import Location

#: Value used for "no route between these points"; large but summable without int64 overflow.
UNREACHABLE = 10**9

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, eq=False)
class TravelMatrix:
    """Square integer matrices indexed by location index: metres and seconds."""

    distance: np.ndarray
    duration: np.ndarray

    def __post_init__(self) -> None:
        if self.distance.shape != self.duration.shape or self.distance.ndim != 2:
            raise ValueError("distance and duration must be square matrices of equal shape")
        if self.distance.shape[0] != self.distance.shape[1]:
            raise ValueError("matrix must be square")
        # Solvers require integers; freeze the arrays so a shared matrix cannot be mutated.
        for name in ("distance", "duration"):
            arr = np.ascontiguousarray(getattr(self, name), dtype=np.int64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def size(self) -> int:
        return int(self.distance.shape[0])

    def dist(self, i: int, j: int) -> int:
        return int(self.distance[i, j])

    def time(self, i: int, j: int) -> int:
        return int(self.duration[i, j])


class MatrixProvider(Protocol):
    """Anything that turns locations into a matrix (for a departure time in seconds)."""

    def build(self, locations: Sequence[Location], depart_at: int = 0) -> TravelMatrix: ...


# --------------------------------------------------------------------------- planar


@dataclass(frozen=True)
class EuclideanProvider:
    """Planar Euclidean distances scaled to integers.

    ``distance = round_fn(scale * euclid)``; ``duration = rint(distance * seconds_per_unit)``.
    DIMACS/Solomon: ``scale=10, rounding="floor", seconds_per_unit=1`` -> distance and travel
    time are the Euclidean distance truncated to one decimal, stored x10 (exact integers).
    """

    scale: float = 10.0
    rounding: str = "floor"  # "floor" (DIMACS truncation) | "round" | "exact" (no rounding x1e3)
    seconds_per_unit: float = 1.0

    def build(self, locations: Sequence[Location], depart_at: int = 0) -> TravelMatrix:
        xy = np.array([(p.x, p.y) for p in locations], dtype=np.float64)
        d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2)) * self.scale
        if self.rounding == "floor":
            # The epsilon guards against 10*d landing at k - 1e-12 for exact decimals.
            dist = np.floor(d + 1e-9)
        elif self.rounding == "round":
            dist = np.rint(d)
        else:
            raise ValueError(f"unknown rounding {self.rounding!r}")
        dur = np.rint(dist * self.seconds_per_unit)
        return TravelMatrix(dist.astype(np.int64), dur.astype(np.int64))


# --------------------------------------------------------------------------- geographic


def haversine_m(a: Location, b: Location) -> float:
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlng = math.radians(b.lng - a.lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class SpeedProfile:
    """Average road speed by hour of day: ``bands`` = ((from_hour, km/h), ...) sorted by hour."""

    bands: tuple[tuple[int, float], ...] = (
        (0, 60.0), (7, 35.0), (10, 50.0), (16, 35.0), (19, 55.0)
    )

    def kmh_at(self, t_s: int) -> float:
        hour = (t_s // 3600) % 24
        speed = self.bands[0][1]
        for start, kmh in self.bands:
            if hour >= start:
                speed = kmh
        return speed


@dataclass(frozen=True)
class TrafficIncident:
    """An area (centre + radius) where travel is ``slowdown`` times slower during [start, end).

    A leg is affected when the straight segment between its endpoints passes within the radius
    of the centre - a cheap proxy for "the road goes through the area" without a road graph.
    """

    centre: Location
    radius_m: float
    slowdown: float
    start: int
    end: int

    def active(self, t_s: int) -> bool:
        return self.start <= t_s < self.end


def _local_xy(origin: Location, p: Location) -> tuple[float, float]:
    """Equirectangular projection in metres around ``origin`` (fine for city-scale radii)."""
    kx = math.cos(math.radians(origin.lat)) * math.pi * EARTH_RADIUS_M / 180
    ky = math.pi * EARTH_RADIUS_M / 180
    return (p.lng - origin.lng) * kx, (p.lat - origin.lat) * ky


def segment_passes_within(a: Location, b: Location, centre: Location, radius_m: float) -> bool:
    ax, ay = _local_xy(centre, a)
    bx, by = _local_xy(centre, b)
    dx, dy = bx - ax, by - ay
    seg2 = dx * dx + dy * dy
    t = 0.0 if seg2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / seg2))
    px, py = ax + t * dx, ay + t * dy
    return px * px + py * py <= radius_m * radius_m


@dataclass(frozen=True)
class HaversineProvider:
    """Great-circle distance x ``road_factor``; duration from the speed at ``depart_at``."""

    road_factor: float = 1.3
    speed: SpeedProfile = SpeedProfile()
    incidents: tuple[TrafficIncident, ...] = ()

    def build(self, locations: Sequence[Location], depart_at: int = 0) -> TravelMatrix:
        n = len(locations)
        dist = np.zeros((n, n), dtype=np.float64)
        for i in range(n):
            for j in range(i + 1, n):
                dist[i, j] = dist[j, i] = haversine_m(locations[i], locations[j]) * self.road_factor
        mps = self.speed.kmh_at(depart_at) / 3.6
        dur = dist / mps
        for inc in self.incidents:
            if not inc.active(depart_at):
                continue
            for i in range(n):
                for j in range(n):
                    if i != j and segment_passes_within(
                        locations[i], locations[j], inc.centre, inc.radius_m
                    ):
                        dur[i, j] *= inc.slowdown
        return TravelMatrix(np.rint(dist).astype(np.int64), np.rint(dur).astype(np.int64))


# --------------------------------------------------------------------------- OSRM


@dataclass(frozen=True)
class OsrmTableProvider:
    """Client for an OSRM-compatible ``/table/v1`` endpoint.

    ``fetch`` performs the HTTP GET and returns the decoded JSON dict; it is injected so the
    service can use its own HTTP client (timeouts, retries) and tests can use a canned dict.
    """

    base_url: str
    profile: str = "driving"
    fetch: Callable[[str], dict[str, Any]] | None = None

    def request_url(self, locations: Sequence[Location]) -> str:
        # OSRM wants lng,lat pairs separated by ';'.
        coords = ";".join(f"{p.lng:.6f},{p.lat:.6f}" for p in locations)
        return (
            f"{self.base_url.rstrip('/')}/table/v1/{self.profile}/{coords}"
            "?annotations=distance,duration"
        )

    @staticmethod
    def parse(response: dict[str, Any], n: int) -> TravelMatrix:
        if response.get("code") != "Ok":
            raise ValueError(f"OSRM table error: {response.get('code')}: {response.get('message')}")

        def grid(key: str) -> np.ndarray:
            rows = response.get(key)
            if rows is None or len(rows) != n or any(len(r) != n for r in rows):
                raise ValueError(f"OSRM response lacks a {n}x{n} '{key}' table")
            # null = no route between the two points.
            return np.array(
                [[UNREACHABLE if v is None else round(v) for v in row] for row in rows],
                dtype=np.int64,
            )

        return TravelMatrix(grid("distances"), grid("durations"))

    def build(self, locations: Sequence[Location], depart_at: int = 0) -> TravelMatrix:
        if self.fetch is None:
            raise RuntimeError("OsrmTableProvider needs a fetch callable to reach the service")
        return self.parse(self.fetch(self.request_url(locations)), len(locations))
