"""Partner webhooks: endpoints, deliveries, dead letters, replays.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0002"
down_revision = "0001"


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade(schema: str) -> None:
    op.create_table(
        "webhook_endpoints",
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
        schema=schema,
    )
    op.create_index("webhook_endpoints_client", "webhook_endpoints",
                    ["client_id", "create_time"], schema=schema)
    op.create_table(
        "webhook_deliveries",
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
        schema=schema,
    )
    op.create_index("webhook_deliveries_due", "webhook_deliveries", ["next_attempt_time"],
                    schema=schema, postgresql_where=sa.text("state IN (1, 3)"))
    op.create_index("webhook_deliveries_endpoint", "webhook_deliveries",
                    ["endpoint_id", "create_time"], schema=schema)
    op.create_table(
        "webhook_dead_letters",
        sa.Column("delivery_id", sa.Text, primary_key=True),
        sa.Column("endpoint_id", sa.Text, nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        _time("create_time"),
        schema=schema,
    )
    op.create_table(
        "webhook_replays",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("endpoint_id", sa.Text, nullable=False),
        sa.Column("scheduled", sa.Integer, nullable=False),
        _time("create_time"),
        schema=schema,
    )
    op.create_index("webhook_replays_client", "webhook_replays", ["client_id", "create_time"],
                    schema=schema)


def downgrade(schema: str) -> None:
    op.drop_table("webhook_replays", schema=schema)
    op.drop_table("webhook_dead_letters", schema=schema)
    op.drop_table("webhook_deliveries", schema=schema)
    op.drop_table("webhook_endpoints", schema=schema)
