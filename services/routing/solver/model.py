"""Problem and solution model of the routing solver layer.

Everything here is a frozen dataclass so a problem can be shared between solver threads, hashed
and cached without defensive copies.

Units. The solver works in integers: distances in metres and times in seconds, both read from a
:class:`~services.routing.solver.matrix.TravelMatrix`. Benchmark instances that use abstract
units (Solomon) are scaled by the loader (see ``Problem.distance_scale``) so that the DIMACS
truncation to one decimal stays exact.

Load semantics. A plain stop's ``demand`` is goods loaded at the vehicle's start depot and
dropped at the stop; a pickup-and-delivery pair carries its ``demand`` from the pickup stop to
the delivery stop. The onboard load therefore starts at the sum of the plain demands of the route
and changes along it; it must stay within the capacity in every dimension.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - import only for type checkers
    from services.routing.solver.matrix import TravelMatrix

#: Penalty (in internal cost units, see ``Vehicle``) for leaving a *required* stop of priority 0
#: unserved; a required stop of priority p costs (p + 1) times this. 10^10 internal units are
#: 10^7 currency units, far above what serving one more stop can cost (a detour and a vehicle's
#: fixed cost), so a solver only leaves a required stop out when the fleet cannot serve it; and
#: when it cannot serve them all, the lowest priorities go first. Solvers multiply penalties by
#: their cost factor (at most 1,000, ``base.cost_scale_factor``): 10^4 stops of the highest
#: priority (20) then sum to 2.1 x 10^18, inside int64 (9.2 x 10^18) with room for route costs.
REQUIRED_DROP_PENALTY = 10**10

#: Penalty of an optional stop of priority 0; each priority level doubles it. Up to priority 13
#: it stays below the penalty of any required stop (the service's priorities go up to 4).
OPTIONAL_DROP_BASE = 10**6


@dataclass(frozen=True, slots=True)
class Location:
    """A point, either planar (x, y) or geographic (lat, lng; stored as y, x)."""

    x: float
    y: float
    geographic: bool = False

    @classmethod
    def latlng(cls, lat: float, lng: float) -> Location:
        return cls(x=lng, y=lat, geographic=True)

    @property
    def lat(self) -> float:
        return self.y

    @property
    def lng(self) -> float:
        return self.x


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A closed interval [start, end] in seconds from the planning epoch."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"time window ends before it starts: {self}")

    def contains(self, t: int) -> bool:
        return self.start <= t <= self.end


class StopKind(enum.Enum):
    VISIT = "visit"  # plain delivery from the start depot
    PICKUP = "pickup"
    DELIVERY = "delivery"


@dataclass(frozen=True, slots=True)
class Stop:
    """One place a vehicle must (or may) visit.

    ``windows`` lists the acceptable service-start windows; service may start in ANY of them
    (an empty tuple means "any time within the shift"). ``priority`` (0 lowest .. 20) sets the
    drop penalty, which grows with it. A required stop is left out only when the fleet cannot
    serve every required stop, and then the lowest priorities go first: of two required stops
    competing for the same room, the lower priority is left out whatever the route costs. Its
    penalty grows linearly ((p + 1) x ``REQUIRED_DROP_PENALTY``), so a solver may leave out one
    required stop to serve several of lower priority whose penalties add up to more (one of
    priority 4 weighs as much as five of priority 0). An optional stop (``required=False``) is
    also left out when serving it costs more than its penalty, which doubles per level, so
    when not all optional stops fit the lowest-priority ones are dropped first.
    """

    id: str
    location: int  # index into Problem.locations / the matrix
    demand: tuple[int, ...] = ()
    service_s: int = 0
    windows: tuple[TimeWindow, ...] = ()
    skills: frozenset[str] = frozenset()
    required: bool = True
    priority: int = 0
    kind: StopKind = StopKind.VISIT
    pair: str | None = None  # id of the partner stop for PICKUP / DELIVERY

    def __post_init__(self) -> None:
        if (self.kind is StopKind.VISIT) != (self.pair is None):
            raise ValueError(f"stop {self.id}: pickup/delivery stops need a pair, visits not")
        if any(d < 0 for d in self.demand):
            raise ValueError(f"stop {self.id}: negative demand")
        if not 0 <= self.priority <= 20:
            raise ValueError(f"stop {self.id}: priority must be in 0..20")
        ws = sorted(self.windows, key=lambda w: w.start)
        if any(a.end >= b.start for a, b in zip(ws, ws[1:], strict=False)):
            raise ValueError(f"stop {self.id}: time windows overlap")

    @property
    def drop_penalty(self) -> int:
        """Internal cost of leaving this stop unserved (priority -> penalty mapping). The two
        stops of a pickup-and-delivery pair are one shipment, left out together: each carries
        half, so that a pair weighs as much as a plain stop of the same priority (both bases
        are even, so the halves are exact)."""
        if self.required:
            penalty = REQUIRED_DROP_PENALTY * (1 + self.priority)
        else:
            penalty = OPTIONAL_DROP_BASE * (2**self.priority)
        return penalty // 2 if self.pair is not None else penalty


@dataclass(frozen=True, slots=True)
class Break:
    """A driver break of ``duration_s`` that must lie entirely inside ``window``."""

    window: TimeWindow
    duration_s: int

    @property
    def latest_start(self) -> int:
        return self.window.end - self.duration_s


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A vehicle and its driver's shift.

    Costs are in currency units; solvers convert them to integers with ``COST_SCALE``. A route
    costs ``fixed_cost`` (if used) + ``cost_per_km`` per km + ``cost_per_hour`` per hour of route
    duration. ``end`` = None is an open route: the vehicle stops at its last visit.
    ``fixed_prefix`` pins already-dispatched stops as the first visits, in that order (used
    for mid-day replanning; the vehicle then starts where it currently is).
    """

    id: str
    start: int  # location index
    end: int | None  # location index, None = open route
    capacity: tuple[int, ...] = ()
    skills: frozenset[str] = frozenset()
    shift: TimeWindow = TimeWindow(0, 7 * 24 * 3600)
    breaks: tuple[Break, ...] = ()
    fixed_cost: float = 0.0
    cost_per_km: float = 1.0
    cost_per_hour: float = 0.0
    max_duration_s: int | None = None
    max_distance_m: int | None = None
    fixed_prefix: tuple[str, ...] = ()

    def can_serve(self, stop: Stop) -> bool:
        return stop.skills <= self.skills


#: Internal integer cost = COST_SCALE x currency (milli-units), so cost_per_km=1 on a matrix in
#: metres gives an arc cost equal to the distance in metres.
COST_SCALE = 1000


def arc_cost(vehicle: Vehicle, distance_m: int, duration_s: int) -> float:
    """Cost of a leg in internal units (not rounded; solvers round consistently)."""
    return distance_m * vehicle.cost_per_km + duration_s * vehicle.cost_per_hour * COST_SCALE / 3600


@dataclass(frozen=True)
class Problem:
    """A complete routing problem: where, what, who, and the travel matrix between locations.

    ``distance_scale`` converts matrix distances to the unit reported to users (1.0 = metres;
    10.0 for Solomon instances whose distances are stored x10 to keep one exact decimal).
    """

    locations: tuple[Location, ...]
    stops: tuple[Stop, ...]
    vehicles: tuple[Vehicle, ...]
    matrix: TravelMatrix
    name: str = ""
    distance_scale: float = 1.0
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        ids = [s.id for s in self.stops]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate stop ids")
        vids = [v.id for v in self.vehicles]
        if len(set(vids)) != len(vids):
            raise ValueError("duplicate vehicle ids")
        n = len(self.locations)
        if self.matrix.size != n:
            raise ValueError(f"matrix size {self.matrix.size} != {n} locations")
        dims = {len(v.capacity) for v in self.vehicles}
        if len(dims) > 1:
            raise ValueError("all vehicles must have the same number of capacity dimensions")
        ndim = dims.pop() if dims else 0
        by_id = {s.id: s for s in self.stops}
        for s in self.stops:
            if not 0 <= s.location < n:
                raise ValueError(f"stop {s.id}: bad location index")
            if len(s.demand) not in (0, ndim):
                raise ValueError(f"stop {s.id}: demand has {len(s.demand)} dims, fleet {ndim}")
            if s.pair is not None:
                partner = by_id.get(s.pair)
                if partner is None or partner.pair != s.id or partner.kind is s.kind:
                    raise ValueError(f"stop {s.id}: pair {s.pair} is not a matching partner")
                if s.kind is StopKind.PICKUP and partner.demand != s.demand:
                    raise ValueError(f"pair {s.id}/{s.pair}: pickup and delivery demand differ")
        for v in self.vehicles:
            for loc in (v.start, v.end):
                if loc is not None and not 0 <= loc < n:
                    raise ValueError(f"vehicle {v.id}: bad depot location index")
            for sid in v.fixed_prefix:
                if sid not in by_id:
                    raise ValueError(f"vehicle {v.id}: fixed stop {sid} unknown")

    # Convenience lookups; the problem is immutable so these are cheap to rebuild.
    @property
    def stop_index(self) -> Mapping[str, int]:
        return {s.id: i for i, s in enumerate(self.stops)}

    @property
    def dimensions(self) -> int:
        return len(self.vehicles[0].capacity) if self.vehicles else 0

    def demand(self, stop: Stop) -> tuple[int, ...]:
        return stop.demand or (0,) * self.dimensions

    def pairs(self) -> list[tuple[Stop, Stop]]:
        """(pickup, delivery) pairs."""
        by_id = {s.id: s for s in self.stops}
        return [(s, by_id[s.pair]) for s in self.stops if s.kind is StopKind.PICKUP and s.pair]

    # Feature flags used by solvers' ``supports`` and the portfolio's choice.
    @property
    def uses_multiple_windows(self) -> bool:
        return any(len(s.windows) > 1 for s in self.stops)

    @property
    def uses_pairs(self) -> bool:
        return any(s.pair is not None for s in self.stops)

    @property
    def uses_breaks(self) -> bool:
        return any(v.breaks for v in self.vehicles)

    @property
    def uses_skills(self) -> bool:
        return any(s.skills for s in self.stops)

    @property
    def uses_fixed_prefix(self) -> bool:
        return any(v.fixed_prefix for v in self.vehicles)


class UnassignedReason(enum.Enum):
    """Why a stop is not in any route; diagnosed by ``feasibility.diagnose_unassigned``."""

    CAPACITY = "capacity"  # heavier than any vehicle that may serve it
    TIME_WINDOW_UNREACHABLE = "time_window_unreachable"  # no window reachable in any shift
    NO_VEHICLE_WITH_SKILL = "no_vehicle_with_skill"
    SHIFT_TOO_SHORT = "shift_too_short"  # reachable, but cannot get back before shift end
    MAX_DISTANCE = "max_distance"  # a round trip alone exceeds every vehicle's max distance
    MAX_DURATION = "max_duration"  # a round trip alone exceeds every vehicle's max duration
    PAIR_INFEASIBLE = "pair_infeasible"  # its pickup/delivery partner cannot be served
    DROPPED_FOR_COST = "dropped_for_cost"  # optional and cheaper to skip
    FLEET_EXHAUSTED = "fleet_exhausted"  # feasible alone, no room left in the fleet
    SOLVER_FAILED = "solver_failed"  # no usable solution at all


@dataclass(frozen=True, slots=True)
class Visit:
    """A stop in a route with its planned schedule and the onboard load after service."""

    stop_id: str
    arrival: int
    start: int  # service start (>= arrival; waiting is start - arrival)
    departure: int
    load_after: tuple[int, ...]
    distance_from_prev: int


@dataclass(frozen=True, slots=True)
class PlannedBreak:
    start: int
    duration_s: int


@dataclass(frozen=True, slots=True)
class Route:
    vehicle_id: str
    visits: tuple[Visit, ...]
    start_time: int
    end_time: int
    distance: int  # metres (matrix units), including the leg back to the end depot
    breaks: tuple[PlannedBreak, ...] = ()

    @property
    def stop_ids(self) -> list[str]:
        return [v.stop_id for v in self.visits]


@dataclass(frozen=True, slots=True)
class Unassigned:
    stop_id: str
    reason: UnassignedReason


@dataclass(frozen=True)
class Solution:
    """A plan. Routes of unused vehicles are omitted."""

    routes: tuple[Route, ...]
    unassigned: tuple[Unassigned, ...] = ()
    solver: str = ""
    wall_time_s: float = 0.0
    cost: float = 0.0  # objective in currency units as computed by the checker
    feasible: bool = False  # set by the referee (feasibility checker), never by a solver
    violations: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def distance(self) -> int:
        return sum(r.distance for r in self.routes)

    @property
    def vehicles_used(self) -> int:
        return sum(1 for r in self.routes if r.visits)

    @property
    def complete(self) -> bool:
        return not self.unassigned

    def route_of(self, vehicle_id: str) -> Route | None:
        return next((r for r in self.routes if r.vehicle_id == vehicle_id), None)

    def sequences(self) -> dict[str, list[str]]:
        return {r.vehicle_id: r.stop_ids for r in self.routes}

