"""The tracking schema's tables (the model the queries use; migrations spell out each version).

Every row carries `client_id`: a client only ever sees its own. Read models fed by other
services' events: `vehicles` (routing's plans and status changes), `trackings` (one per order,
from the order service's events, with its derived shipment state) and `route_stops` (the
active plan's stops per vehicle, with their ETAs).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from services.kit.db import KitTables

SCHEMA = "tracking"

metadata = sa.MetaData(schema=SCHEMA)
kit = KitTables.for_schema(metadata)


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _double(name: str) -> sa.Column:
    return sa.Column(name, sa.Float(precision=53), nullable=False)


vehicles = sa.Table(
    "vehicles", metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("vehicle_id", sa.Text, primary_key=True),
    _time("known_since"),
)

# The last known position of each vehicle: only ever moves forward in time.
vehicle_state = sa.Table(
    "vehicle_state", metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("vehicle_id", sa.Text, primary_key=True),
    _time("time"),
    _double("lat"), _double("lng"), _double("accuracy"), _double("speed"), _double("heading"),
)

positions = sa.Table(
    "positions", metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("vehicle_id", sa.Text, primary_key=True),
    sa.Column("time", sa.DateTime(timezone=True), primary_key=True),
    _double("lat"), _double("lng"), _double("accuracy"), _double("speed"), _double("heading"),
    _time("record_time"),
)

trackings = sa.Table(
    "trackings", metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("order_id", sa.Text, primary_key=True),
    # The order's content (cartage.order.v1.Order) as its last event carried it.
    sa.Column("order_body", sa.LargeBinary, nullable=False),
    sa.Column("vehicle_id", sa.Text, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    _time("state_time", nullable=True),
    sa.Column("milestone_count", sa.Integer, nullable=False),
    sa.Column("exceptions", ARRAY(sa.SmallInteger), nullable=False),
    _time("update_time"),
    sa.Column("version", sa.Integer, nullable=False),
)

milestones = sa.Table(
    "milestones", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("stop_id", sa.Text, nullable=False),
    sa.Column("type", sa.SmallInteger, nullable=False),
    _time("event_time"),
    sa.Column("exception_reason", sa.SmallInteger, nullable=False),
    sa.Column("source", sa.SmallInteger, nullable=False),
    _time("record_time"),
    # The milestone as the contract's message (location, note, vehicle).
    sa.Column("body", sa.LargeBinary, nullable=False),
    # The same milestone twice is one milestone.
    sa.UniqueConstraint("client_id", "order_id", "stop_id", "type", "event_time",
                        "exception_reason", name="uq_milestones_natural"),
    sa.Index("ix_milestones_order_time", "client_id", "order_id", "event_time", "id"),
)

route_stops = sa.Table(
    "route_stops", metadata,
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
    sa.Index("ix_route_stops_order", "client_id", "order_id"),
)

geofences = sa.Table(
    "geofences", metadata,
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
    # The geofence as the contract's message.
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("ix_geofences_client_created", "client_id", "create_time", "id"),
)

# A vehicle inside a geofence (no row: outside).
presences = sa.Table(
    "presences", metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("vehicle_id", sa.Text, primary_key=True),
    sa.Column("fence_id", sa.Text, primary_key=True),
    _time("enter_time"),
    _time("last_time"),
    sa.Column("dwelled", sa.Boolean, nullable=False),
    sa.Column("detained", sa.Boolean, nullable=False),
)

tracking_links = sa.Table(
    "tracking_links", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    _time("expire_time"),
    sa.Column("revoked", sa.Boolean, nullable=False),
    _time("create_time"),
)

# Partner webhooks. Secrets are stored encrypted (Fernet, TRACKING_WEBHOOK_SECRET_KEY); the
# previous secret keeps signing until `previous_secret_until` after a rotation.
webhook_endpoints = sa.Table(
    "webhook_endpoints", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_types", ARRAY(sa.Text), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("disabled_reason", sa.Integer, nullable=False),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("previous_secret", sa.LargeBinary, nullable=True),
    _time("previous_secret_until", nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    _time("create_time"),
    _time("update_time"),
    sa.Index("webhook_endpoints_client", "client_id", "create_time"),
)

# One row per (endpoint, event): the body is fixed at creation, so every attempt sends the same
# bytes under the same webhook-id (the row's id). `next_attempt_time` is also the claim: the
# dispatcher pushes it past the attempt's longest duration when it takes the row, so a
# dispatcher killed mid-attempt leaves the row due again shortly after.
webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("endpoint_id", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.Integer, nullable=False),
    sa.Column("attempt_count", sa.Integer, nullable=False),
    _time("next_attempt_time", nullable=True),
    sa.Column("attempts", JSONB, nullable=False),
    _time("create_time"),
    sa.UniqueConstraint("endpoint_id", "event_id", name="webhook_deliveries_event"),
    sa.Index("webhook_deliveries_due", "next_attempt_time",
             postgresql_where=sa.text("state IN (1, 3)")),
    sa.Index("webhook_deliveries_endpoint", "endpoint_id", "create_time"),
)

# Deliveries that exhausted the schedule (or met a 410): kept for replay and inspection.
webhook_dead_letters = sa.Table(
    "webhook_dead_letters", metadata,
    sa.Column("delivery_id", sa.Text, primary_key=True),
    sa.Column("endpoint_id", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    _time("create_time"),
)

# ReplayWebhookEvents operations (`operations/tracking/{id}`): done once scheduled.
webhook_replays = sa.Table(
    "webhook_replays", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("endpoint_id", sa.Text, nullable=False),
    sa.Column("scheduled", sa.Integer, nullable=False),
    _time("create_time"),
    sa.Index("webhook_replays_client", "client_id", "create_time"),
)
