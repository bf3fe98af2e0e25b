"""Positions refused with reasons, geofences with GPS jitter (no flapping), dwell and detention
on a fake clock (the positions' own times), and an ETA whose answer is known."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from services.tracking.domain.eta import PlannedStop, Speed, etas, late, moved
from services.tracking.domain.geofencing import (
    Fence,
    FenceIndex,
    Happening,
    circle,
    grown,
    polygon_from_geojson,
    step,
)
from services.tracking.domain.positions import (
    Fix,
    LastKnown,
    Refusal,
    haversine_m,
    sort_fixes,
)

T0 = datetime(2030, 1, 1, 8, tzinfo=UTC)
M_PER_DEG = 111_320.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_each_bad_fix_is_refused_with_its_reason() -> None:
    now = T0
    fixes = [Fix("a", at(0), 91, 0), Fix("a", at(1), math.nan, 0),
             Fix("a", at(400), 52, 13), Fix("a", at(2), 52, 13, accuracy=-1),
             Fix("a", at(3), 52, 13)]
    result = sort_fixes(list(enumerate(fixes)), now, {})
    assert [(r.index, r.reason) for r in result.refused] == [
        (0, Refusal.OUT_OF_RANGE), (1, Refusal.NOT_A_NUMBER), (2, Refusal.IN_THE_FUTURE),
        (3, Refusal.OUT_OF_RANGE)]
    assert [i for i, _ in result.accepted] == [4]


def test_a_jump_over_250_kmh_is_refused_and_late_fixes_do_not_move_the_last_known() -> None:
    last = {"a": LastKnown(at(600), 52.0, 13.0)}
    # 10 km in 60 s = 600 km/h from the last known position
    jump = Fix("a", at(660), 52.0 + 10_000 / M_PER_DEG, 13.0)
    fine = Fix("a", at(720), 52.0 + 1_000 / M_PER_DEG, 13.0)  # 1 km in 2 min
    late = Fix("a", at(300), 52.0 - 1_000 / M_PER_DEG, 13.0)
    dup = Fix("a", at(600), 52.0, 13.0)
    result = sort_fixes(list(enumerate([jump, fine, late, dup])), at(800), last)
    assert [(r.index, r.reason) for r in result.refused] == [(0, Refusal.IMPLAUSIBLE_SPEED)]
    assert [i for i, _ in result.accepted] == [2, 1]  # in time order
    assert result.late == 1 and result.duplicates == 1


def test_haversine_of_one_degree_of_latitude() -> None:
    assert abs(haversine_m(0, 0, 1, 0) - 111_195) < 1


FREE = timedelta(hours=2)


def fence(origin: int = 1, radius: float = 150.0, dwell: timedelta = timedelta(minutes=5)
          ) -> Fence:
    inner, outer = circle(52.5, 13.4, radius)
    return Fence("f", "c", inner, outer, dwell, origin, "o", "delivery", "truck")


def drive(f: Fence, distances_m: list[float], every_s: float = 30.0) -> list:
    """Positions due north of the fence's centre at these distances, one every `every_s`."""
    index = FenceIndex([f])
    presence, happened = None, []
    for i, d in enumerate(distances_m):
        lat, lng = 52.5 + d / M_PER_DEG, 13.4
        here = index.locate([lat], [lng])[0]
        result = step(presence, f, "truck", at(i * every_s), lat, lng, here.get("f", False),
                      "f" in here, FREE)
        presence = result.presence
        happened += result.occurrences
    return happened


def test_jitter_on_the_edge_does_not_flap() -> None:
    rng = random.Random(7)
    # approach, then 200 fixes jittering ±20 m around the 150 m edge, then leave
    path = [400, 300, 200, 140] + [150 + rng.uniform(-20, 20) for _ in range(200)] + [300, 500]
    happened = drive(fence(), path)
    kinds = [o.what for o in happened]
    assert kinds.count(Happening.ENTERED) == 1
    assert kinds.count(Happening.EXITED) == 1
    assert kinds[0] == Happening.ENTERED and kinds[-1] == Happening.EXITED


def test_without_the_margin_the_same_jitter_would_flap() -> None:
    """The test above can fail: with no hysteresis the same path enters many times."""
    f = fence()
    bare = Fence(f.id, f.client_id, f.inner, f.inner, f.dwell)
    rng = random.Random(7)
    path = [400, 140] + [150 + rng.uniform(-20, 20) for _ in range(200)]
    assert [o.what for o in drive(bare, path)].count(Happening.ENTERED) > 10


def test_dwell_once_and_detention_with_its_billable_time() -> None:
    f = fence(origin=2)
    # enter at t=30 s, stay 3 h (every 30 s), leave
    inside = [0.0] * (3 * 120)
    happened = drive(f, [400, *inside, 1000])
    kinds = [o.what for o in happened]
    assert kinds == [Happening.ENTERED, Happening.DWELLED, Happening.DETENTION_STARTED,
                     Happening.EXITED, Happening.DETENTION_ENDED]
    entered, dwelled, started, exited, ended = happened
    assert entered.time == at(30)
    assert dwelled.time - entered.time == timedelta(minutes=5)
    assert started.time == entered.time + FREE
    inside_for = exited.time - entered.time
    assert exited.duration == inside_for
    assert ended.duration == inside_for - FREE
    # a manual fence has no detention
    assert Happening.DETENTION_STARTED not in [o.what for o in drive(fence(), [400, *inside])]


def test_late_fixes_never_replay_a_visit() -> None:
    f = fence()
    index = FenceIndex([f])
    entered = step(None, f, "truck", at(100), 52.5, 13.4, True, True, FREE).presence
    assert entered is not None
    lat = 52.5 + 1000 / M_PER_DEG
    here = index.locate([lat], [13.4])[0]
    result = step(entered, f, "truck", at(50), lat, 13.4, False, "f" in here, FREE)
    assert result.presence == entered and not result.occurrences


def test_geojson_polygons_are_validated() -> None:
    square = [[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1], [13.0, 52.0]]
    polygon, problems = polygon_from_geojson({"type": "Polygon", "coordinates": [square]}, 100)
    assert polygon is not None and not problems
    bowtie = [[13.0, 52.0], [13.1, 52.1], [13.1, 52.0], [13.0, 52.1], [13.0, 52.0]]
    _, problems = polygon_from_geojson({"type": "Polygon", "coordinates": [bowtie]}, 100)
    assert "Self-intersection" in problems[0][1]
    _, problems = polygon_from_geojson({"type": "Polygon", "coordinates": [square[:-1]]}, 100)
    assert "not closed" in problems[0][1]
    _, problems = polygon_from_geojson({"type": "Polygon", "coordinates": [square * 30]}, 100)
    assert "at most 100" in problems[0][1]
    _, problems = polygon_from_geojson({"type": "Point", "coordinates": [13, 52]}, 100)
    assert problems == [("type", 'must be "Polygon"')]
    # the margin is about 30 m on every side
    grown_square = grown(polygon)
    width = (grown_square.bounds[2] - grown_square.bounds[0]) - 0.1
    assert abs(width * M_PER_DEG * math.cos(math.radians(52.05)) - 60) < 3


def test_the_index_finds_the_right_fence_among_ten_thousand() -> None:
    fences = []
    for i in range(10_000):
        lat, lng = 50 + (i // 100) * 0.01, 10 + (i % 100) * 0.01
        inner, outer = circle(lat, lng, 150)
        fences.append(Fence(f"f{i}", "c", inner, outer, timedelta(minutes=5)))
    index = FenceIndex(fences)
    found = index.locate([50 + 42 * 0.01, 51.5], [10 + 17 * 0.01, 20.0])
    assert found == [{"f4217": True}, {}]


def test_eta_against_a_plan_with_a_known_answer() -> None:
    speed = Speed(metres_per_second=10.0, road_factor=1.0)
    here = LastKnown(T0, 0.0, 0.0)
    km = 1 / 111.195  # degrees of latitude per km
    first = PlannedStop("o1", "pickup", 10 * km, 0.0, timedelta(minutes=15))
    # the second stop's window opens late: the vehicle waits for it
    second = PlannedStop("o1", "delivery", 16 * km, 0.0, timedelta(minutes=10),
                         window_start=T0 + timedelta(hours=1),
                         window_end=T0 + timedelta(minutes=70))
    third = PlannedStop("o2", "delivery", 22 * km, 0.0, timedelta(0),
                        window_end=T0 + timedelta(minutes=79))
    got = etas(here, [first, second, third], speed)
    # 10 km at 10 m/s = 1000 s; + 15 min service; + 600 s to the second stop
    assert abs((got[0] - T0).total_seconds() - 1000) < 1
    assert abs((got[1] - T0).total_seconds() - (1000 + 900 + 600)) < 1
    # service starts at the window (3600 s), 10 min, then 600 s: 4800 s = 80 min
    assert abs((got[2] - T0).total_seconds() - 4800) < 1
    assert not late(got[1], second.window_end)
    assert late(got[2], third.window_end)  # 80 min against a window ending at 79
    # done and arrived stops get no ETA; the route continues after the current stop's service
    arrived = PlannedStop("o1", "pickup", 10 * km, 0.0, timedelta(minutes=15), arrived=T0)
    got = etas(here, [arrived, PlannedStop("o1", "delivery", 16 * km, 0, timedelta(0))], speed)
    assert got[0] is None
    assert abs((got[1] - T0).total_seconds() - (900 + 600)) < 1
    assert moved(None, T0) and not moved(T0, T0 + timedelta(minutes=5))
    assert moved(T0, T0 + timedelta(minutes=5, seconds=1))
