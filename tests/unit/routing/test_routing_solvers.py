"""Solver plumbing: Solomon files, cancellation, progress, warm start, replanning, bench."""

import json
import threading
import time

import pytest

from bench import routing_bench
from services.routing.domain.autonomy import Domain
from services.routing.domain.replanning import Change, replan
from services.routing.solver import (
    ORToolsSolver,
    PyVRPSolver,
    Stop,
    TimeWindow,
    Vehicle,
    evaluate,
    freeze_at,
    referee,
    solve,
)
from services.routing.solver.base import assemble
from services.routing.solver.solomon import load_solomon, load_solution

SOLOMON = routing_bench.DATA / "solomon"
needs_data = pytest.mark.skipif(not SOLOMON.exists(), reason="shared VRP data not mounted")


@pytest.fixture(scope="module")
def r101():
    return load_solomon(SOLOMON / "R101.txt")


@needs_data
def test_solomon_parser_reads_r101(r101):
    assert (len(r101.stops), len(r101.vehicles), r101.vehicles[0].capacity) == (100, 25, (200,))
    s1 = r101.stops[0]
    # customer 1: 41 49, demand 10, ready 161, due 171, service 10 (times stored x10)
    assert (s1.id, s1.demand, s1.service_s) == ("1", (10,), 100)
    assert s1.windows == (TimeWindow(1610, 1710),)
    assert r101.vehicles[0].shift == TimeWindow(0, 2300)


@needs_data
def test_reference_optimum_is_feasible_and_measures_its_published_cost(r101):
    ref = load_solution(SOLOMON / "R101.sol")
    assert len(ref.routes) == 20 and ref.cost == 1637.7
    sol = referee(r101, assemble(r101, dict(zip([v.id for v in r101.vehicles], ref.routes,
                                               strict=False)), "reference", 0))
    assert sol.feasible, sol.violations[:3]
    assert evaluate(r101, sol).distance / r101.distance_scale == pytest.approx(1637.7)


@needs_data
@pytest.mark.parametrize("solver", [PyVRPSolver(), ORToolsSolver()], ids=lambda s: s.name)
def test_cancel_stops_search_early_and_progress_is_reported(r101, solver):
    cancel = threading.Event()
    seen = []
    threading.Timer(0.3, cancel.set).start()
    t0 = time.perf_counter()
    sol = referee(r101, solver.solve(r101, 2.0, cancel=cancel, on_progress=seen.append))
    assert time.perf_counter() - t0 < 1.5  # well before the 2 s limit
    assert sol.feasible and not sol.unassigned
    assert seen and all(b.best_cost <= a.best_cost for a, b in zip(seen, seen[1:], strict=False))


@needs_data
def test_ortools_warm_started_from_pyvrp_keeps_the_better_plan(r101):
    good = referee(r101, PyVRPSolver().solve(r101, 1.5))
    cold = referee(r101, ORToolsSolver().solve(r101, 1.0))
    warm = referee(r101, ORToolsSolver().solve(r101, 1.0, warm_start=good))
    # Guided local search never returns worse than its start; a cold start at 1 s is worse.
    assert warm.feasible and warm.distance <= good.distance
    assert warm.distance <= cold.distance


def test_a_breakdown_replan_moves_only_orphans(mk):
    """The benchmark's breakdown scenario, on the service's replanning path."""
    tw = TimeWindow
    pts = [(0, 0), (10, 0), (20, 0), (30, 0), (10, 5), (20, 5), (30, 5)]
    stops = [Stop(n, i + 1, (1,), windows=(tw(0, 500),)) for i, n in enumerate("ABCDEF")]
    p = mk(pts, stops, [Vehicle("v1", 0, 0, (10,)), Vehicle("v2", 0, 0, (10,))])
    plan = assemble(p, {"v1": ["A", "B", "C"], "v2": ["D", "E", "F"]}, "hand", 0)
    t = plan.route_of("v1").visits[0].departure  # v1 has just left A
    fz = freeze_at(p, plan, t, broken="v1")
    assert fz.done == ["A"] and fz.orphans == ["B", "C"]
    assert fz.problem.vehicles[0].fixed_prefix == ("D",)  # v2 is on its way to D
    res = replan(p, plan, t, Change(Domain.BREAKDOWN, broken=frozenset({"v1"})), time_limit=2)
    assert res.feasible and not res.remainder.unassigned and res.orphans == 2
    seq = res.remainder.route_of("v2").stop_ids
    assert seq[0] == "D" and sorted(seq) == ["B", "C", "D", "E", "F"]
    assert res.moved == 0 and res.open_stops == 3 and res.moved_share == 0


@needs_data
def test_bench_quick_writes_records(tmp_path):
    out = tmp_path / "quick.json"
    assert routing_bench.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    recs = data["records"]
    assert [r["instance"] for r in recs] == list(routing_bench.QUICK)
    for r in recs:
        assert {"instance", "feasible", "distance", "vehicles", "seconds", "gap_pct"} <= r.keys()
        assert r["feasible"] and r["distance"] >= r["reference"] * 0.999
        assert r["seconds"] < 4


def test_solve_entry_point_referees(mk):
    p = mk([(0, 0), (10, 0)], [Stop("A", 1)], [Vehicle("v1", 0, 0, ())])
    sol = solve(p, 0.2)
    assert sol.feasible and sol.violations == () and sol.cost == pytest.approx(0.02)
