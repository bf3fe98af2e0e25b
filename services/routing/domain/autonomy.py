"""Autonomy levels: may a proposed plan replace the active one without a person?

Each decision domain (initial plan, replan after a cancellation, a breakdown, a traffic incident,
an urgent insertion, a manual replan) has a level:

* **L1** - every decision waits for approval (the default for a domain without a policy);
* **L2** - applied when it stays inside the guardrails (the share of compared stops that change
  vehicle, and the relative cost increase); otherwise it waits and is *flagged*, with one
  sentence per broken guardrail;
* **L3** - applied.

The guardrails look at a :class:`PlanDiff`, computed by :func:`diff_plans` from the previous and
the proposed plan.

The cost compared is the plans' **route cost under the vehicles' cost model**: for every route
with at least one stop, the vehicle's ``fixed_cost`` + ``cost_per_km`` x km driven +
``cost_per_hour`` x hours from route start to route end (the last departure on an open route),
in currency units - the formula of ``feasibility.evaluate``. Drop penalties of unassigned stops
are *not* part of it: they are solver weights, not money, and would swamp any real change (a
plan that leaves stops unserved shows up in the moved share instead, see :func:`diff_plans`).
Given ``vehicles``, :func:`diff_plans` recomputes this cost from both plans' routes
(:func:`plan_cost`); without them it uses ``Solution.cost``, which ``solve`` (through the
referee) and ``replanning.replan`` stamp with the same formula.

Pure Python: no I/O.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from services.routing.domain.ids import shipment_of
from services.routing.solver.model import COST_SCALE, Route, Solution, Vehicle, arc_cost


class Level(enum.IntEnum):
    """How much a decision may do without a person (proto ``AutonomyLevel``)."""

    L1 = 1
    L2 = 2
    L3 = 3


class Domain(enum.Enum):
    """The kinds of decision; values are the proto ``DecisionDomain`` names without prefix."""

    INITIAL_PLAN = "INITIAL_PLAN"
    CANCELLATION = "CANCELLATION"
    BREAKDOWN = "BREAKDOWN"
    TRAFFIC = "TRAFFIC"
    URGENT_INSERTION = "URGENT_INSERTION"
    MANUAL_REPLAN = "MANUAL_REPLAN"
    DELAY = "DELAY"


@dataclass(frozen=True)
class DomainPolicy:
    """The level of one domain and its L2 guardrails (shares: 0.10 means 10 %)."""

    level: Level = Level.L1
    max_moved_share: float = 0.10  # share of compared stops that may change vehicle
    max_cost_increase: float = 0.05  # largest relative cost increase

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_moved_share <= 1.0:  # also rejects NaN
            raise ValueError(f"max_moved_share must be in [0, 1], got {self.max_moved_share}")
        if not math.isfinite(self.max_cost_increase):
            raise ValueError(f"max_cost_increase must be finite, got {self.max_cost_increase}")


@dataclass(frozen=True)
class Policy:
    """The autonomy policy: one :class:`DomainPolicy` per domain; missing domains are L1."""

    domains: Mapping[Domain, DomainPolicy] = field(default_factory=dict)

    def for_domain(self, domain: Domain) -> DomainPolicy:
        return self.domains.get(domain, DomainPolicy())


@dataclass(frozen=True)
class PlanDiff:
    """How a proposed plan differs from the previous one (proto ``PlanDiff``).

    ``stops_compared`` counts the stops routed in the previous plan that are still in the
    proposed one (routed or unassigned), minus the ``fixed`` stops given to :func:`diff_plans`;
    ``stops_moved`` those of them on another vehicle now, or no longer routed. ``added``,
    ``removed`` and ``moved`` are shipment keys, sorted.
    """

    stops_moved: int
    stops_compared: int
    moved_share: float
    added: tuple[str, ...]
    removed: tuple[str, ...]
    moved: tuple[str, ...]
    cost_delta: float
    cost_change_ratio: float
    distance_delta_m: float


def route_cost(vehicle: Vehicle, route: Route) -> float:
    """Currency cost of one route under its vehicle's cost model (0 for an empty route)."""
    if not route.visits:
        return 0.0
    end = route.end_time if vehicle.end is not None else route.visits[-1].departure
    duration = end - route.start_time
    return vehicle.fixed_cost + arc_cost(vehicle, route.distance, duration) / COST_SCALE


def plan_cost(solution: Solution, vehicles: Iterable[Vehicle] | Mapping[str, Vehicle]) -> float:
    """Sum of :func:`route_cost` over the plan's routes (no drop penalties)."""
    by_id = vehicles if isinstance(vehicles, Mapping) else {v.id: v for v in vehicles}
    missing = sorted({r.vehicle_id for r in solution.routes} - by_id.keys())
    if missing:
        raise ValueError(f"no cost model for vehicles {missing}")
    return sum(route_cost(by_id[r.vehicle_id], r) for r in solution.routes)


def _placement(solution: Solution) -> dict[str, str | None]:
    """Stop id -> vehicle id, or None for an unassigned stop."""
    out: dict[str, str | None] = {u.stop_id: None for u in solution.unassigned}
    for r in solution.routes:
        for sid in r.stop_ids:
            out[sid] = r.vehicle_id
    return out


def diff_plans(
    previous: Solution | None,
    proposed: Solution,
    *,
    vehicles: Iterable[Vehicle] | Mapping[str, Vehicle] | None = None,
    fixed: Collection[str] = (),
) -> PlanDiff:
    """Compare two plans (see :class:`PlanDiff`; the cost is defined in the module docstring).

    ``vehicles`` (the union of both plans' fleets) makes the cost be recomputed from the routes;
    ``fixed`` names stops that could not move (completed, in progress, next stops, e.g.
    ``ReplanOutcome.fixed``) and are left out of the comparison, so that the moved share is a
    share of what a replan could actually change. With no previous plan nothing is compared:
    everything is added, the moved share and the cost ratio are 0.
    """
    new = _placement(proposed)
    new_cost = plan_cost(proposed, vehicles) if vehicles is not None else proposed.cost
    if previous is None:
        added = tuple(sorted({shipment_of(s) for s in new}))
        return PlanDiff(0, 0, 0.0, added, (), (), new_cost, 0.0, float(proposed.distance))
    old = _placement(previous)
    old_cost = plan_cost(previous, vehicles) if vehicles is not None else previous.cost
    skip = set(fixed)
    compared = [s for s, vid in old.items() if vid is not None and s in new and s not in skip]
    moved_stops = [s for s in compared if new[s] != old[s]]
    old_keys = {shipment_of(s) for s in old}
    new_keys = {shipment_of(s) for s in new}
    delta = new_cost - old_cost
    return PlanDiff(
        stops_moved=len(moved_stops),
        stops_compared=len(compared),
        moved_share=len(moved_stops) / len(compared) if compared else 0.0,
        added=tuple(sorted(new_keys - old_keys)),
        removed=tuple(sorted(old_keys - new_keys)),
        moved=tuple(sorted({shipment_of(s) for s in moved_stops})),
        cost_delta=delta,
        cost_change_ratio=delta / old_cost if old_cost > 0 else 0.0,
        distance_delta_m=float(proposed.distance - previous.distance),
    )


@dataclass(frozen=True)
class Verdict:
    """What the policy says about one decision.

    ``decided_by`` is ``autonomy/L2`` or ``autonomy/L3`` when the plan is applied, None when it
    waits for a person (who then decides with ApproveDecision / RejectDecision).
    """

    apply: bool
    flagged: bool
    reasons: tuple[str, ...]
    decided_by: str | None


# Guardrails compare with a hair of tolerance so 3 of 30 stops is within a 10 % limit.
_EPS = 1e-9


def decide(policy: DomainPolicy, diff: PlanDiff) -> Verdict:
    """Apply the domain's level to a diff (see the module docstring)."""
    if policy.level is Level.L3:
        return Verdict(True, False, (), "autonomy/L3")
    if policy.level is Level.L1:
        return Verdict(False, False, (), None)
    reasons = []
    if diff.moved_share > policy.max_moved_share + _EPS:
        reasons.append(
            f"moved {100 * diff.moved_share:.1f} % of stops"
            f" (limit {100 * policy.max_moved_share:.1f} %)"
        )
    if diff.cost_change_ratio > policy.max_cost_increase + _EPS:
        reasons.append(
            f"cost up {100 * diff.cost_change_ratio:.1f} %"
            f" (limit {100 * policy.max_cost_increase:.1f} %)"
        )
    if reasons:
        return Verdict(False, True, tuple(reasons), None)
    return Verdict(True, False, (), "autonomy/L2")
