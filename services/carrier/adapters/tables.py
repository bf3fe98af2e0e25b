"""The carrier schema's tables (the model the queries use; migrations spell out each version)."""

from __future__ import annotations

import sqlalchemy as sa

from services.kit.db import KitTables

SCHEMA = "carrier"

metadata = sa.MetaData(schema=SCHEMA)
kit = KitTables.for_schema(metadata)

TIME = sa.DateTime(timezone=True)

carriers = sa.Table(
    "carriers", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("oauth_client_id", sa.Text, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("create_time", TIME, nullable=False),
    sa.Column("update_time", TIME, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # the contract's Carrier message
    sa.Index("ix_carriers_client_created", "client_id", "create_time", "id"),
)

rate_cards = sa.Table(
    "rate_cards", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("carrier_id", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("create_time", TIME, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # the contract's RateCard message
    sa.Index("ix_rate_cards_client_carrier", "client_id", "carrier_id", "create_time", "id"),
)

# One counter per client, bumped by every change to its carriers or cards: the quote path keeps
# compiled cards in memory and reloads them only when this moves (one indexed read per quote).
catalog_versions = sa.Table(
    "catalog_versions", metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)

shipments = sa.Table(
    "shipments", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("order_name", sa.Text, nullable=True),  # NULL for shipments created by API
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("create_time", TIME, nullable=False),
    sa.Column("update_time", TIME, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("carrier_id", sa.Text, nullable=False),
    sa.Column("current_tender_id", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("timeout_s", sa.Float, nullable=False),
    sa.Column("cancel_reason", sa.Text, nullable=False),
    sa.Column("waterfall", sa.LargeBinary, nullable=True),  # QuoteRatesResponse (ranked quotes)
    sa.Column("agreed_price", sa.LargeBinary, nullable=True),  # PriceBreakdown
    sa.Column("body", sa.LargeBinary, nullable=False),  # the contract's Shipment message
    sa.UniqueConstraint("client_id", "order_name", name="uq_shipments_client_order"),
    sa.Index("ix_shipments_client_created", "client_id", "create_time", "id"),
)

tenders = sa.Table(
    "tenders", metadata,
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
    sa.Column("quote", sa.LargeBinary, nullable=False),  # CarrierQuote: price, card, lane
    sa.Column("load", sa.LargeBinary, nullable=False),  # Shipment as offered
    # The deadline job's claim: open tenders by deadline.
    sa.Index("ix_tenders_state_deadline", "state", "deadline"),
    sa.Index("ix_tenders_client_offered", "client_id", "offer_time", "id"),
    sa.Index("ix_tenders_carrier_client_offered", "carrier_client_id", "offer_time", "id"),
    sa.Index("ix_tenders_capacity", "client_id", "pickup_day", "state"),
    sa.Index("ix_tenders_shipment", "shipment_id"),
)

# Pickups and deliveries as tracking reports them, for the on-time part of lane scorecards.
milestones = sa.Table(
    "milestones", metadata,
    sa.Column("shipment_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.SmallInteger, primary_key=True),  # 1 pickup, 2 delivery
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("carrier_id", sa.Text, nullable=False),
    sa.Column("lane_id", sa.Text, nullable=False),
    sa.Column("actual_time", TIME, nullable=False),
    sa.Column("on_time", sa.Boolean, nullable=False),
    sa.Column("record_time", TIME, nullable=False),
    sa.Index("ix_milestones_client_recorded", "client_id", "record_time"),
)

# Interchange control numbers of the EDI 204s we send (ISA13/GS06: nine digits), unique across
# processes and restarts; after 999,999,999 they start again at 1 (X12 allows reuse then).
edi_control_numbers = sa.Sequence("edi_control_numbers", metadata=metadata, start=1,
                                  minvalue=1, maxvalue=999_999_999, cycle=True)
