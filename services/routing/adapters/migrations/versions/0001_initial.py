"""Vehicles, the order read model, route plans, operations, decisions, autonomy policies and
traffic incidents, plus the kit's outbox, inbox and idempotency tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from services.kit.db import create_kit_tables

revision = "0001"
down_revision = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade(schema: str) -> None:
    op.create_table(
        "vehicles",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("status", sa.SmallInteger, nullable=False),
        _time("create_time"),
        _time("update_time"),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        schema=schema,
    )
    op.create_table(
        "orders",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("mode", sa.SmallInteger, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        _time("update_time"),
        sa.Column("body", sa.LargeBinary, nullable=False),
        schema=schema,
    )
    op.create_table(
        "route_plans",
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
        schema=schema,
    )
    # Lists are per client, newest first: the keyset index.
    op.create_index("ix_route_plans_client_created", "route_plans",
                    ["client_id", "create_time", "id"], schema=schema)
    # At most one active plan per fleet, whatever happens concurrently.
    op.create_index("uq_route_plans_one_active", "route_plans", ["client_id"], unique=True,
                    schema=schema, postgresql_where=sa.text("state = 3"))
    # Start-up finds the plans left SOLVING.
    op.create_index("ix_route_plans_solving", "route_plans", ["create_time"], schema=schema,
                    postgresql_where=sa.text("state = 1"))
    op.create_table(
        "operations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("plan_id", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        _time("create_time"),
        schema=schema,
    )
    op.create_index("ix_operations_client_created", "operations",
                    ["client_id", "create_time", "id"], schema=schema)
    op.create_table(
        "decisions",
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
        schema=schema,
    )
    op.create_index("ix_decisions_client_created", "decisions",
                    ["client_id", "create_time", "id"], schema=schema)
    op.create_table(
        "autonomy_policies",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        _time("update_time"),
        sa.Column("body", sa.LargeBinary, nullable=False),
        schema=schema,
    )
    op.create_table(
        "traffic_incidents",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        _time("create_time"),
        _time("start_time"),
        _time("end_time"),
        sa.Column("body", sa.LargeBinary, nullable=False),
        schema=schema,
    )
    op.create_index("ix_traffic_incidents_client_created", "traffic_incidents",
                    ["client_id", "create_time", "id"], schema=schema)
    create_kit_tables(op, schema)
