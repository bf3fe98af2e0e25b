"""The order aggregate's lifecycle rules and the content validation, without I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from cartage.order.v1 import order_pb2
from services.kit.errors import Aborted, FailedPrecondition
from services.kit.validation import Violations
from services.order.api.validation import check_order
from services.order.conversion import content_from_proto, order_from_proto, order_to_proto
from services.order.domain.model import TRANSITIONS, Order, State
from tests.support import sample_order, ts

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def new_order() -> Order:
    return Order.create("client", content_from_proto(sample_order("R-1")), NOW)


def test_release_then_cancel_bumps_version_and_records_reason() -> None:
    order = new_order().release(NOW).cancel("customer called", NOW)
    assert (order.state, order.version, order.cancel_reason) == (
        State.CANCELLED, 3, "customer called")


def in_state(order: Order, state: State) -> Order:
    return dataclasses.replace(order, state=state)


def test_no_cancel_after_delivery_and_no_edit_once_in_transit() -> None:
    order = new_order()
    with pytest.raises(FailedPrecondition):
        in_state(order, State.DELIVERED).cancel("too late", NOW)
    with pytest.raises(FailedPrecondition):
        in_state(order, State.IN_TRANSIT).update_content(order.content, NOW)
    # A planned order may still change: the routing service replans on order.updated.
    assert in_state(order, State.PLANNED).update_content(order.content, NOW).version == 2


def test_the_active_plan_moves_orders_between_released_and_planned() -> None:
    released = new_order().release(NOW)
    planned = released.follow_plan(True, NOW)
    assert planned is not None and planned.state is State.PLANNED
    assert planned.follow_plan(True, NOW) is None  # already planned: nothing to do
    back = planned.follow_plan(False, NOW)
    assert back is not None and back.state is State.RELEASED  # left out of the new plan
    assert released.follow_plan(False, NOW) is None
    for final in (State.CANCELLED, State.IN_TRANSIT, State.DELIVERED, State.CREATED):
        assert in_state(released, final).follow_plan(True, NOW) is None
        assert in_state(released, final).follow_plan(False, NOW) is None


def test_external_reference_never_changes() -> None:
    order = new_order()
    renamed = content_from_proto(sample_order("R-OTHER"))
    with pytest.raises(FailedPrecondition):
        order.update_content(renamed, NOW)


def test_every_final_state_has_no_way_out() -> None:
    assert TRANSITIONS[State.DELIVERED] == frozenset()
    assert TRANSITIONS[State.CANCELLED] == frozenset()
    assert State.CANCELLED not in TRANSITIONS[State.IN_TRANSIT]


def test_stale_etag_is_aborted() -> None:
    order = new_order()
    order.check_etag("")
    order.check_etag("v1")
    with pytest.raises(Aborted):
        order.check_etag("v7")


def test_converters_round_trip_and_apply_defaults() -> None:
    raw = sample_order("R-2")
    raw.ClearField("priority")
    raw.state = order_pb2.Order.STATE_DELIVERED  # output-only: ignored on input
    content = content_from_proto(raw)
    assert content.priority == order_pb2.PRIORITY_NORMAL and content.state == 0
    order = Order.create("c", content, NOW)
    message = order_to_proto(order)
    assert message.name == f"orders/{order.id}" and message.etag == "v1"
    assert order_from_proto(message) == order


def test_validation_catches_overlapping_windows_and_delivery_before_pickup() -> None:
    order = sample_order()
    order.pickup.time_windows.add(start_time=ts(order.pickup.time_windows[0].start_time.seconds
                                                + 60),
                                  end_time=ts(order.pickup.time_windows[0].end_time.seconds
                                              + 3600))
    order.delivery.time_windows[0].start_time.CopyFrom(ts(1_000))
    order.delivery.time_windows[0].end_time.CopyFrom(ts(2_000))
    v = Violations()
    check_order(order, v)
    fields = {x.field: x.reason for x in v.items}
    assert fields["order.pickup.time_windows[1]"] == "OVERLAPPING_WINDOWS"
    assert fields["order.delivery.time_windows"] == "DELIVERY_BEFORE_PICKUP"


def test_a_valid_sample_has_no_violations() -> None:
    v = Violations()
    check_order(sample_order(), v)
    assert not v
