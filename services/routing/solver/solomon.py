"""Solomon / Gehring-Homberger instance files and their reference solutions.

Convention (DIMACS / CVRPLIB): distance = travel time = Euclidean distance truncated to one
decimal; the objective is total distance and the number of vehicles is free (the file's fleet
size is only an upper bound). We store every distance and time x10 so the truncated values are
exact integers; ``Problem.distance_scale = 10`` converts back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from services.routing.solver.matrix import EuclideanProvider
from services.routing.solver.model import Location, Problem, Stop, TimeWindow, Vehicle

SCALE = 10


def parse_solomon(text: str, name: str = "") -> Problem:
    lines = [ln.strip() for ln in text.splitlines()]
    name = name or next((ln for ln in lines if ln), "")
    try:
        v_at = next(i for i, ln in enumerate(lines) if ln.upper().startswith("VEHICLE"))
        nums = next(ln for ln in lines[v_at + 1 :] if ln and ln[0].isdigit())
        n_vehicles, capacity = (int(x) for x in nums.split()[:2])
        c_at = next(i for i, ln in enumerate(lines) if ln.upper().startswith("CUSTOMER"))
    except StopIteration as exc:
        raise ValueError(f"{name}: not a Solomon-format instance") from exc
    rows = []
    for ln in lines[c_at + 1 :]:
        parts = ln.split()
        if len(parts) == 7 and all(p.lstrip("-").replace(".", "", 1).isdigit() for p in parts):
            rows.append([float(p) for p in parts])
    if not rows or int(rows[0][0]) != 0:
        raise ValueError(f"{name}: customer table must start with the depot (number 0)")

    locations = tuple(Location(r[1], r[2]) for r in rows)
    depot = rows[0]
    shift = TimeWindow(int(depot[4] * SCALE), int(depot[5] * SCALE))
    stops = tuple(
        Stop(
            id=str(int(r[0])),
            location=i,
            demand=(int(r[3]),),
            service_s=int(r[6] * SCALE),
            windows=(TimeWindow(int(r[4] * SCALE), int(r[5] * SCALE)),),
        )
        for i, r in enumerate(rows)
        if i > 0
    )
    vehicles = tuple(
        Vehicle(id=f"v{k + 1}", start=0, end=0, capacity=(capacity,), shift=shift)
        for k in range(n_vehicles)
    )
    matrix = EuclideanProvider(scale=SCALE, rounding="floor").build(locations)
    return Problem(
        locations=locations,
        stops=stops,
        vehicles=vehicles,
        matrix=matrix,
        name=name,
        distance_scale=SCALE,
        time_scale=SCALE,
    )


def load_solomon(path: str | Path) -> Problem:
    p = Path(path)
    return parse_solomon(p.read_text(), name=p.stem)


@dataclass(frozen=True)
class ReferenceSolution:
    routes: tuple[tuple[str, ...], ...]  # customer numbers as stop ids
    cost: float | None


_ROUTE = re.compile(r"^\s*Route\s*#?\s*\d+\s*:\s*(.*)$", re.IGNORECASE)
_COST = re.compile(r"^\s*Cost\s+([0-9.]+)", re.IGNORECASE)


def parse_solution(text: str) -> ReferenceSolution:
    """Parse ``Route #k: a b c`` / ``Cost N`` (CVRPLIB) and ``Route k : ...`` (SINTEF) files."""
    routes: list[tuple[str, ...]] = []
    cost: float | None = None
    for ln in text.splitlines():
        if m := _ROUTE.match(ln):
            seq = tuple(m.group(1).split())
            if seq:
                routes.append(seq)
        elif m := _COST.match(ln):
            cost = float(m.group(1))
    if not routes:
        raise ValueError("no routes in solution file")
    return ReferenceSolution(tuple(routes), cost)


def load_solution(path: str | Path) -> ReferenceSolution:
    return parse_solution(Path(path).read_text())
