"""Tiny hand-checkable routing instances: points on a plane, distance = time = rounded Euclid."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.routing.solver.matrix import EuclideanProvider
from services.routing.solver.model import Location, Problem, Stop, TimeWindow, Vehicle


def build(points: Sequence[tuple[float, float]], stops: Sequence[Stop],
          vehicles: Sequence[Vehicle], name: str = "tiny") -> Problem:
    locs = tuple(Location(x, y) for x, y in points)
    matrix = EuclideanProvider(scale=1, rounding="round").build(locs)
    return Problem(locs, tuple(stops), tuple(vehicles), matrix, name=name)


def tw(a: int, b: int) -> TimeWindow:
    return TimeWindow(a, b)


@pytest.fixture
def mk():
    return build


@pytest.fixture
def line4() -> Problem:
    """Depot at 0, stops A, B, C at x = 10, 20, 30; one vehicle of capacity 10."""
    return build(
        [(0, 0), (10, 0), (20, 0), (30, 0)],
        [Stop("A", 1, (3,)), Stop("B", 2, (3,)), Stop("C", 3, (3,))],
        [Vehicle("v1", 0, 0, (10,), shift=tw(0, 1000))],
    )
