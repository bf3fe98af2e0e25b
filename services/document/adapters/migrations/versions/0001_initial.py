"""Documents, their hash chain and its signed heads, batch operations, plus the kit's outbox,
inbox and idempotency tables.

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
        "documents",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("created_by_token_id", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("void_reason", sa.Text, nullable=False),
        sa.Column("attachments", sa.Text, nullable=False),  # ids, comma-separated
        sa.Column("chain_hash", sa.Text, nullable=False),
        sa.Column("previous_chain_hash", sa.Text, nullable=False),
        schema=schema,
    )
    op.create_index("ix_documents_client_created", "documents",
                    ["client_id", "create_time", "id"], schema=schema)
    op.create_index("ix_documents_client_subject", "documents", ["client_id", "subject"],
                    schema=schema)
    op.create_table(
        "chain",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("record", sa.LargeBinary, nullable=False),
        sa.Column("previous_hash", sa.Text, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        schema=schema,
    )
    op.create_table(
        "chain_heads",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        schema=schema,
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("token_id", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("completed", sa.Integer, nullable=False),
        sa.Column("request", sa.LargeBinary, nullable=False),
        sa.Column("documents", sa.Text, nullable=False),
        schema=schema,
    )
    op.create_index("ix_batches_client_created", "batches", ["client_id", "create_time", "id"],
                    schema=schema)
    op.create_index("ix_batches_running", "batches", ["state", "create_time"], schema=schema)
    create_kit_tables(op, schema)
