"""Carriers, rate cards, the catalog versions, shipments, tenders and milestones, plus the kit's
outbox, inbox and idempotency tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from services.kit.db import create_kit_tables

revision = "0001"
down_revision = None

TIME = sa.DateTime(timezone=True)


def upgrade(schema: str) -> None:
    op.create_table(
        "carriers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("oauth_client_id", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("create_time", TIME, nullable=False),
        sa.Column("update_time", TIME, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        schema=schema)
    op.create_index("ix_carriers_client_created", "carriers",
                    ["client_id", "create_time", "id"], schema=schema)
    op.create_table(
        "rate_cards",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("carrier_id", sa.Text, nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("create_time", TIME, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        schema=schema)
    op.create_index("ix_rate_cards_client_carrier", "rate_cards",
                    ["client_id", "carrier_id", "create_time", "id"], schema=schema)
    op.create_table(
        "catalog_versions",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        schema=schema)
    op.create_table(
        "shipments",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("order_name", sa.Text, nullable=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("create_time", TIME, nullable=False),
        sa.Column("update_time", TIME, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("carrier_id", sa.Text, nullable=False),
        sa.Column("current_tender_id", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=False),
        sa.Column("cancel_reason", sa.Text, nullable=False),
        sa.Column("waterfall", sa.LargeBinary, nullable=True),
        sa.Column("agreed_price", sa.LargeBinary, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("client_id", "order_name", name="uq_shipments_client_order"),
        schema=schema)
    op.create_index("ix_shipments_client_created", "shipments",
                    ["client_id", "create_time", "id"], schema=schema)
    op.create_table(
        "tenders",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("shipment_id", sa.Text, nullable=False),
        sa.Column("carrier_id", sa.Text, nullable=False),
        sa.Column("carrier_client_id", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("lane_id", sa.Text, nullable=False),
        sa.Column("pickup_day", sa.Date, nullable=False),
        sa.Column("offer_time", TIME, nullable=False),
        sa.Column("deadline", TIME, nullable=False),
        sa.Column("respond_time", TIME, nullable=True),
        sa.Column("reject_reason", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("quote", sa.LargeBinary, nullable=False),
        sa.Column("load", sa.LargeBinary, nullable=False),
        schema=schema)
    for name, columns in (
            ("ix_tenders_state_deadline", ["state", "deadline"]),
            ("ix_tenders_client_offered", ["client_id", "offer_time", "id"]),
            ("ix_tenders_carrier_client_offered", ["carrier_client_id", "offer_time", "id"]),
            ("ix_tenders_capacity", ["client_id", "pickup_day", "state"]),
            ("ix_tenders_shipment", ["shipment_id"])):
        op.create_index(name, "tenders", columns, schema=schema)
    op.create_table(
        "milestones",
        sa.Column("shipment_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.SmallInteger, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("carrier_id", sa.Text, nullable=False),
        sa.Column("lane_id", sa.Text, nullable=False),
        sa.Column("actual_time", TIME, nullable=False),
        sa.Column("on_time", sa.Boolean, nullable=False),
        sa.Column("record_time", TIME, nullable=False),
        schema=schema)
    op.create_index("ix_milestones_client_recorded", "milestones",
                    ["client_id", "record_time"], schema=schema)
    create_kit_tables(op, schema)
