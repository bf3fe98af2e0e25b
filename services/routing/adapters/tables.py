"""The routing schema's tables (the model the queries use; migrations spell out each version).

Every business row carries `client_id`: a client only ever sees its own rows. Contract content
is stored as protobuf bytes (`body`, `request`, ...) next to real columns for everything that
is queried or locked on, as in the order service.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from services.kit.db import KitTables

SCHEMA = "routing"

metadata = sa.MetaData(schema=SCHEMA)
kit = KitTables.for_schema(metadata)


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


vehicles = sa.Table(
    "vehicles",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("status", sa.SmallInteger, nullable=False),
    _time("create_time"),
    _time("update_time"),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

# The read model of the order service's orders, fed by its events.
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("mode", sa.SmallInteger, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    _time("update_time"),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

route_plans = sa.Table(
    "route_plans",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("domain", sa.SmallInteger, nullable=False),
    _time("create_time"),
    _time("update_time"),
    sa.Column("version", sa.Integer, nullable=False),
    _time("epoch"),
    sa.Column("previous_plan_id", sa.Text, nullable=False),
    sa.Column("decision_id", sa.Text, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("change", JSONB),
    sa.Column("request", sa.LargeBinary, nullable=False),
    sa.Column("fleet", sa.LargeBinary, nullable=False),
    sa.Column("trigger", sa.LargeBinary, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("ix_route_plans_client_created", "client_id", "create_time", "id"),
    # At most one active plan per fleet, whatever happens concurrently.
    sa.Index("uq_route_plans_one_active", "client_id", unique=True,
             postgresql_where=sa.text("state = 3")),
    # Start-up finds the plans left SOLVING.
    sa.Index("ix_route_plans_solving", "create_time", postgresql_where=sa.text("state = 1")),
)

operations = sa.Table(
    "operations",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("plan_id", sa.Text, nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    _time("create_time"),
    sa.Index("ix_operations_client_created", "client_id", "create_time", "id"),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("domain", sa.SmallInteger, nullable=False),
    sa.Column("level", sa.SmallInteger, nullable=False),
    sa.Column("plan_id", sa.Text, nullable=False),
    sa.Column("previous_plan_id", sa.Text, nullable=False),
    _time("create_time"),
    _time("decide_time", nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("ix_decisions_client_created", "client_id", "create_time", "id"),
)

policies = sa.Table(
    "autonomy_policies",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    _time("update_time"),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

incidents = sa.Table(
    "traffic_incidents",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    _time("create_time"),
    _time("start_time"),
    _time("end_time"),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("ix_traffic_incidents_client_created", "client_id", "create_time", "id"),
)

# The tracking service's milestones of the orders' stops (`milestone.recorded`): what really
# happened, which decides a stop's completion for a replan (`domain.tracking`). One row per
# stop and milestone type, with the earliest event time recorded for it.
milestones = sa.Table(
    "milestones",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("order_name", sa.Text, primary_key=True),
    sa.Column("stop_id", sa.Text, primary_key=True),  # the tracking stop: pickup / delivery
    sa.Column("type", sa.SmallInteger, primary_key=True),  # tracking's MilestoneType number
    _time("event_time"),
    _time("record_time"),
)
