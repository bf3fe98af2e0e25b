"""Orders, plus the kit's outbox, inbox and idempotency tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from services.kit.db import create_kit_tables

revision = "0001"
down_revision = None


def upgrade(schema: str) -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("external_reference", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("mode", sa.SmallInteger, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("cancel_reason", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("client_id", "external_reference", name="uq_orders_client_reference"),
        schema=schema,
    )
    # Listing is always per client, in (create_time, id) order: the keyset index.
    op.create_index("ix_orders_client_created", "orders", ["client_id", "create_time", "id"],
                    schema=schema)
    create_kit_tables(op, schema)
