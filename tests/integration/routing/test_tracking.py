"""Routing follows the tracking service (real Postgres + NATS; the events are published on the
TRACKING stream as tracking's relay publishes them):

- a stop is completed when it has a recorded DEPARTED / PICKED_UP / DELIVERED milestone; the
  planned departure decides only while the plan has no tracking data at all;
- a LATE_RISK `exception.raised` for a stop of the active plan is a DELAY replan decided under
  the autonomy policy (L3 applies it, L1 waits); a redelivery makes no second one, other
  exceptions none.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2

from cartage.order.v1 import order_pb2
from cartage.order.v1 import order_service_pb2 as order_pb
from cartage.routing.v1 import decision_pb2, route_plan_pb2
from cartage.routing.v1 import routing_service_pb2 as pb
from cartage.tracking.v1 import events_pb2 as tracking_events
from cartage.tracking.v1 import tracking_pb2
from cartage.type.v1 import time_window_pb2
from services.kit.clock import set_timestamp
from services.kit.db import create_engine
from tests.integration.routing.conftest import RoutingClient
from tests.integration.routing.test_replanning import plan_orders, released
from tests.support import OrderClient, eventually, publish_events, sample_order, ts

D = decision_pb2
L1, L3 = D.AUTONOMY_LEVEL_L1, D.AUTONOMY_LEVEL_L3
Decision = D.Decision
PICKUP, DELIVERY = route_plan_pb2.RouteStop.KIND_PICKUP, route_plan_pb2.RouteStop.KIND_DELIVERY


@pytest.fixture
async def orders(order_address: str, routing: RoutingClient):
    async with grpc.aio.insecure_channel(order_address) as channel:
        yield OrderClient(channel, routing.client_id)


def _windowed(stop, start: int, end: int):
    stop.ClearField("time_windows")
    stop.time_windows.append(time_window_pb2.TimeWindow(start_time=ts(start),
                                                        end_time=ts(end)))
    return stop


def _order(pickup: tuple[int, int], delivery: tuple[int, int]) -> order_pb2.Order:
    order = sample_order()
    _windowed(order.pickup, *pickup)
    _windowed(order.delivery, *delivery)
    return order


def _milestone(client_id: str, order: str, stop_id: str, kind: int
               ) -> tracking_events.MilestoneRecordedEvent:
    event = tracking_events.MilestoneRecordedEvent(
        event_id=os.urandom(16).hex(), client_id=client_id, order=order,
        milestone=tracking_pb2.Milestone(
            name=f"{order}/milestones/{os.urandom(8).hex()}", stop_id=stop_id, type=kind,
            source=tracking_pb2.MILESTONE_SOURCE_DRIVER_APP))
    set_timestamp(event.milestone.event_time, datetime.now(UTC))
    set_timestamp(event.event_time, datetime.now(UTC))
    return event


def _exception(client_id: str, order: str, stop_id: str, reason: int
               ) -> tracking_events.ExceptionRaisedEvent:
    event = tracking_events.ExceptionRaisedEvent(
        event_id=os.urandom(16).hex(), client_id=client_id, order=order, stop_id=stop_id,
        reason=reason)
    now = int(time.time())
    event.eta.seconds, event.window_end_time.seconds = now + 7200, now + 3600
    return event


async def _recorded(database_url: str, client_id: str) -> int:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(
                "SELECT count(*) FROM routing.milestones WHERE client_id = :c"),
                {"c": client_id})).scalar_one()
    finally:
        await engine.dispose()


async def _decisions(routing: RoutingClient, domain: int) -> list[Decision]:
    listed = await routing.ListDecisions(pb.ListDecisionsRequest(
        filter=f"domain = {D.DecisionDomain.Name(domain)}"))
    return list(listed.decisions)


async def _replanned(routing: RoutingClient) -> route_plan_pb2.RoutePlan:
    operation = await routing.wait(await routing.ReplanRoutes(pb.ReplanRoutesRequest(
        reason="check", time_limit=duration_pb2.Duration(seconds=1))))
    assert operation.HasField("response"), operation.error
    plan = route_plan_pb2.RoutePlan()
    operation.response.Unpack(plan)
    return plan


def _fixed(plan: route_plan_pb2.RoutePlan) -> dict[tuple[str, int], bool]:
    return {(s.shipment, s.kind): s.fixed for r in plan.routes for s in r.stops}


async def test_milestones_decide_which_stops_are_completed(
        routing: RoutingClient, orders: OrderClient, stack) -> None:
    for domain in (D.DECISION_DOMAIN_INITIAL_PLAN, D.DECISION_DOMAIN_MANUAL_REPLAN):
        await routing.set_policy(domain, L3)
    now = int(time.time())
    await routing.vehicle("a", weight=2000, skills=("tail_lift",),
                          start=now - 3 * 3600, end=now + 8 * 3600)
    # A was due early in the shift (planned done by now), B later (planned in the future).
    a = await orders.create(_order((now - 9000, now - 7200), (now - 5400, now - 3600)))
    b = await orders.create(_order((now + 3600, now + 7200), (now + 3 * 3600, now + 6 * 3600)))
    names = [a.name, b.name]
    for name in names:
        await orders.ReleaseOrder(order_pb.ReleaseOrderRequest(name=name))
    plan = await plan_orders(routing, names)
    assert plan.state == route_plan_pb2.RoutePlan.STATE_ACTIVE and not plan.unassigned
    sequence = [(s.shipment, s.kind) for r in plan.routes for s in r.stops]
    assert sequence == [(a.name, PICKUP), (a.name, DELIVERY), (b.name, PICKUP),
                        (b.name, DELIVERY)]

    # No tracking data: the planned departures decide (A done, B's pickup pinned as next).
    old_rule = _fixed(await _replanned(routing))
    assert old_rule == {(a.name, PICKUP): True, (a.name, DELIVERY): True,
                        (b.name, PICKUP): True, (b.name, DELIVERY): False}

    # The truck is recorded at A's pickup, nothing more: A's delivery is open (and the truck
    # late), although its planned departure has passed.
    client = routing.client_id
    await publish_events(stack.nats_url, _milestone(client, a.name, "pickup",
                                              tracking_pb2.MILESTONE_TYPE_ARRIVED))
    await eventually(lambda: _recorded(stack.database_url, client), until=lambda n: n == 1)
    tracked = _fixed(await _replanned(routing))
    assert tracked[(a.name, PICKUP)] is True  # being served
    assert tracked.get((a.name, DELIVERY)) is not True
    assert tracked.get((b.name, PICKUP)) is not True

    # Picked up, delivered and B picked up early (before its planned time): all completed,
    # B's delivery is the next stop.
    await publish_events(stack.nats_url,
                   _milestone(client, a.name, "pickup", tracking_pb2.MILESTONE_TYPE_PICKED_UP),
                   _milestone(client, a.name, "delivery", tracking_pb2.MILESTONE_TYPE_DELIVERED),
                   _milestone(client, b.name, "pickup", tracking_pb2.MILESTONE_TYPE_PICKED_UP))
    await eventually(lambda: _recorded(stack.database_url, client), until=lambda n: n == 4)
    done = await _replanned(routing)
    # (A's delivery is in the plan only if the late truck still made its window above)
    assert {(b.name, PICKUP), (b.name, DELIVERY)} <= _fixed(done).keys()
    assert all(_fixed(done).values())
    b_pickup = next(s for r in done.routes for s in r.stops
                    if (s.shipment, s.kind) == (b.name, PICKUP))
    assert b_pickup.departure_time.seconds > now  # planned later, completed by its milestone


async def test_a_late_risk_replans_under_the_autonomy_policy(
        routing: RoutingClient, orders: OrderClient, stack) -> None:
    await routing.set_policy(D.DECISION_DOMAIN_INITIAL_PLAN, L3)
    await routing.set_policy(D.DECISION_DOMAIN_DELAY, L3)
    now = int(time.time())
    await routing.vehicle("a", weight=2000, skills=("tail_lift",),
                          start=now - 3600, end=now + 10 * 3600)
    first = await released(orders)
    late = await orders.create(_order((now + 3600, now + 7200), (now + 3 * 3600, now + 5 * 3600)))
    await orders.ReleaseOrder(order_pb.ReleaseOrderRequest(name=late.name))
    plan = await plan_orders(routing, [first.name, late.name])
    assert plan.state == route_plan_pb2.RoutePlan.STATE_ACTIVE

    client = routing.client_id
    # Another kind of exception, and a late risk of an order that is in no plan: no replan.
    await publish_events(stack.nats_url,
                   _exception(client, late.name, "delivery",
                              tracking_pb2.EXCEPTION_REASON_DAMAGED),
                   _exception(client, "orders/" + "0" * 32, "delivery",
                              tracking_pb2.EXCEPTION_REASON_LATE_RISK))
    risk = _exception(client, late.name, "delivery", tracking_pb2.EXCEPTION_REASON_LATE_RISK)
    await publish_events(stack.nats_url, risk)
    decisions = await eventually(lambda: _decisions(routing, D.DECISION_DOMAIN_DELAY),
                                 seconds=60, interval=0.3,
                                 until=lambda ds: ds and ds[0].state == Decision.STATE_APPLIED)
    decision = decisions[0]
    assert decision.decided_by == "autonomy/L3"
    assert decision.inputs.trigger == "exception.raised"
    assert decision.inputs.trigger_id == risk.event_id
    assert list(decision.inputs.subjects) == [late.name]
    assert "at risk of being late" in decision.inputs.summary
    active = await routing.ListRoutePlans(pb.ListRoutePlansRequest(filter="state = ACTIVE"))
    assert [p.name for p in active.route_plans] == [decision.proposed_plan]

    # The same event delivered again: the inbox drops it. Then, at L1,
    # a new late risk waits for approval.
    await publish_events(stack.nats_url, risk, redelivery=True)
    await routing.set_policy(D.DECISION_DOMAIN_DELAY, L1)
    second = _exception(client, late.name, "pickup", tracking_pb2.EXCEPTION_REASON_LATE_RISK)
    await publish_events(stack.nats_url, second)
    decisions = await eventually(lambda: _decisions(routing, D.DECISION_DOMAIN_DELAY),
                                 seconds=60, interval=0.3, until=lambda ds: len(ds) >= 2)
    pending = [d for d in decisions if d.inputs.trigger_id == second.event_id]
    assert [d.state for d in pending] == [Decision.STATE_PENDING]
    assert sorted(d.inputs.trigger_id for d in decisions) == sorted(
        [risk.event_id, second.event_id])
