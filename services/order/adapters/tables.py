"""The order schema's tables (the model the queries use; migrations spell out each version)."""

from __future__ import annotations

import sqlalchemy as sa

from services.kit.db import KitTables

SCHEMA = "orders"

metadata = sa.MetaData(schema=SCHEMA)
kit = KitTables.for_schema(metadata)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("external_reference", sa.Text, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("mode", sa.SmallInteger, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("cancel_reason", sa.Text, nullable=False),
    # The order's content as the contract's Order message (see domain/model.py).
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("client_id", "external_reference", name="uq_orders_client_reference"),
    # Listing is always per client, in (create_time, id) order: the keyset index.
    sa.Index("ix_orders_client_created", "client_id", "create_time", "id"),
)
