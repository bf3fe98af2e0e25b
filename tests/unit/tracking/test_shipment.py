"""The shipment state is a function of the set of milestones: any permutation, interleaving
or duplication of the same milestones (and positions) ends in the same record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.tracking.domain.positions import Fix, newest, sort_fixes
from services.tracking.domain.shipment import (
    ALLOWED,
    DELIVERY,
    PICKUP,
    Milestone,
    State,
    Type,
    project,
)

T0 = datetime(2030, 1, 1, 8, tzinfo=UTC)


@st.composite
def milestones(draw: st.DrawFn) -> Milestone:
    stop = draw(st.sampled_from([PICKUP, DELIVERY]))
    kind = draw(st.sampled_from(sorted(ALLOWED[stop])))
    reason = draw(st.integers(1, 7)) if kind == Type.EXCEPTION else 0
    return Milestone(stop, kind, T0 + timedelta(minutes=draw(st.integers(0, 600))), reason,
                     draw(st.integers(1, 4)))


def by_time(items: list[Milestone]) -> list[Milestone]:
    unique = {m.key: m for m in items}
    return sorted(unique.values(), key=lambda m: (m.event_time, m.key))


@settings(max_examples=300)
@given(st.lists(milestones(), max_size=25), st.randoms(use_true_random=False),
       st.lists(st.integers(0, 24), max_size=10))
def test_any_order_and_duplication_gives_the_sorted_deduplicated_state(
        items: list[Milestone], rng: object, repeats: list[int]) -> None:
    shuffled = list(items) + [items[i % len(items)] for i in repeats] if items else []
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert project(shuffled) == project(by_time(items))


@settings(max_examples=200)
@given(st.lists(milestones(), min_size=1, max_size=25))
def test_the_state_never_moves_back_as_milestones_arrive(items: list[Milestone]) -> None:
    seen: list[Milestone] = []
    before = State.PENDING
    for m in items:
        seen.append(m)
        now = project(seen).state
        assert now >= before
        before = now


def test_the_states_follow_the_milestones() -> None:
    def at(minutes: int) -> datetime:
        return T0 + timedelta(minutes=minutes)

    assert project([]).state == State.PENDING
    arrived = Milestone(PICKUP, Type.ARRIVED, at(0))
    assert project([arrived]).state == State.AT_PICKUP
    picked = Milestone(PICKUP, Type.PICKED_UP, at(10))
    attempted = Milestone(DELIVERY, Type.DELIVERY_ATTEMPTED, at(60))
    delivered = Milestone(DELIVERY, Type.DELIVERED, at(120))
    view = project([delivered, picked, attempted, arrived])
    assert view.state == State.DELIVERED and view.state_time == at(120)
    assert project([picked, attempted]).state == State.DELIVERY_ATTEMPTED
    # an exception changes no state, but is listed
    damaged = Milestone(DELIVERY, Type.EXCEPTION, at(70), exception_reason=1)
    view = project([picked, damaged])
    assert view.state == State.IN_TRANSIT and view.exceptions == (1,)


@st.composite
def trajectories(draw: st.DrawFn) -> list[Fix]:
    """A plausible drive (≤ ~100 km/h) of one vehicle, one fix a minute."""
    count = draw(st.integers(1, 30))
    lat, lng, out = 52.0, 13.0, []
    for i in range(count):
        lat += draw(st.floats(-0.01, 0.01))
        lng += draw(st.floats(-0.01, 0.01))
        out.append(Fix("truck", T0 + timedelta(minutes=i), lat, lng))
    return out


@settings(max_examples=200)
@given(trajectories(), st.randoms(use_true_random=False), st.integers(1, 5))
def test_positions_in_any_order_and_batches_end_at_the_newest(
        fixes: list[Fix], rng: object, batches: int) -> None:
    sent = fixes + fixes[: len(fixes) // 2]  # duplicates
    rng.shuffle(sent)  # type: ignore[attr-defined]
    last: dict = {}
    stored: set = set()
    now = T0 + timedelta(days=1)
    for b in range(batches):
        chunk = sent[b::batches]
        result = sort_fixes(list(enumerate(chunk)), now, last)
        assert not result.refused
        new = [f for _, f in result.accepted if (f.vehicle, f.time) not in stored]
        stored |= {(f.vehicle, f.time) for f in new}
        last = newest(new, last)
    assert stored == {(f.vehicle, f.time) for f in fixes}
    assert last["truck"].time == fixes[-1].time
    assert (last["truck"].lat, last["truck"].lng) == (fixes[-1].lat, fixes[-1].lng)
