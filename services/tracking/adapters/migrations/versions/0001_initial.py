"""Vehicles, positions, trackings, milestones, route stops, geofences, presences, tracking
links, plus the kit's outbox, inbox and idempotency tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from services.kit.db import create_kit_tables

revision = "0001"
down_revision = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _double(name: str) -> sa.Column:
    return sa.Column(name, sa.Float(precision=53), nullable=False)


def upgrade(schema: str) -> None:
    op.create_table(
        "vehicles",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("vehicle_id", sa.Text, primary_key=True),
        _time("known_since"),
        schema=schema,
    )
    op.create_table(
        "vehicle_state",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("vehicle_id", sa.Text, primary_key=True),
        _time("time"),
        _double("lat"), _double("lng"), _double("accuracy"), _double("speed"), _double("heading"),
        schema=schema,
    )
    op.create_table(
        "positions",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("vehicle_id", sa.Text, primary_key=True),
        sa.Column("time", sa.DateTime(timezone=True), primary_key=True),
        _double("lat"), _double("lng"), _double("accuracy"), _double("speed"), _double("heading"),
        _time("record_time"),
        schema=schema,
    )
    op.create_table(
        "trackings",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("order_body", sa.LargeBinary, nullable=False),
        sa.Column("vehicle_id", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        _time("state_time", nullable=True),
        sa.Column("milestone_count", sa.Integer, nullable=False),
        sa.Column("exceptions", ARRAY(sa.SmallInteger), nullable=False),
        _time("update_time"),
        sa.Column("version", sa.Integer, nullable=False),
        schema=schema,
    )
    op.create_table(
        "milestones",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("stop_id", sa.Text, nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        _time("event_time"),
        sa.Column("exception_reason", sa.SmallInteger, nullable=False),
        sa.Column("source", sa.SmallInteger, nullable=False),
        _time("record_time"),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("client_id", "order_id", "stop_id", "type", "event_time",
                            "exception_reason", name="uq_milestones_natural"),
        schema=schema,
    )
    op.create_table(
        "route_stops",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("vehicle_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("stop_id", sa.Text, nullable=False),
        _double("lat"), _double("lng"),
        sa.Column("service_s", sa.Float(precision=53), nullable=False),
        _time("window_start", nullable=True),
        _time("window_end", nullable=True),
        _time("eta", nullable=True),
        _time("published_eta", nullable=True),
        sa.Column("late_risk", sa.Boolean, nullable=False),
        schema=schema,
    )
    op.create_table(
        "geofences",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("origin", sa.SmallInteger, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("stop_id", sa.Text, nullable=False),
        sa.Column("vehicle_id", sa.Text, nullable=False),
        sa.Column("dwell_s", sa.Float(precision=53), nullable=False),
        sa.Column("inner_wkb", sa.LargeBinary, nullable=False),
        sa.Column("outer_wkb", sa.LargeBinary, nullable=False),
        _time("create_time"),
        sa.Column("body", sa.LargeBinary, nullable=False),
        schema=schema,
    )
    op.create_table(
        "presences",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("vehicle_id", sa.Text, primary_key=True),
        sa.Column("fence_id", sa.Text, primary_key=True),
        _time("enter_time"),
        _time("last_time"),
        sa.Column("dwelled", sa.Boolean, nullable=False),
        sa.Column("detained", sa.Boolean, nullable=False),
        schema=schema,
    )
    op.create_table(
        "tracking_links",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        _time("expire_time"),
        sa.Column("revoked", sa.Boolean, nullable=False),
        _time("create_time"),
        schema=schema,
    )
    op.create_index("ix_milestones_order_time", "milestones",
                    ["client_id", "order_id", "event_time", "id"], schema=schema)
    op.create_index("ix_route_stops_order", "route_stops", ["client_id", "order_id"], schema=schema)
    op.create_index("ix_geofences_client_created", "geofences",
                    ["client_id", "create_time", "id"], schema=schema)
    create_kit_tables(op, schema)
