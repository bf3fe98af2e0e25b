"""The document schema's tables (the model the queries use; migrations spell out each version)."""

from __future__ import annotations

import sqlalchemy as sa

from services.kit.db import KitTables

SCHEMA = "documents"

metadata = sa.MetaData(schema=SCHEMA)
kit = KitTables.for_schema(metadata)

documents = sa.Table(
    "documents",
    metadata,
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
    # Listing is always per client, newest first, in (create_time, id) order: the keyset index.
    sa.Index("ix_documents_client_created", "client_id", "create_time", "id"),
    sa.Index("ix_documents_client_subject", "client_id", "subject"),
)

# Every document event of a client, in order: each record's hash covers the previous hash.
chain = sa.Table(
    "chain",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("record", sa.LargeBinary, nullable=False),  # canonical JSON (domain/chain.py)
    sa.Column("previous_hash", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
)

# The newest record of each client's chain, signed with the service's key: rewriting the
# whole chain (every hash recomputed) cannot produce this signature.
chain_heads = sa.Table(
    "chain_heads",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
)

# BatchGenerateDocuments: one row per long-running operation (`operations/document/{id}`).
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("token_id", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("completed", sa.Integer, nullable=False),
    sa.Column("request", sa.LargeBinary, nullable=False),  # the BatchGenerateDocumentsRequest
    sa.Column("documents", sa.Text, nullable=False),  # the ids made, comma-separated, in order
    sa.Index("ix_batches_client_created", "client_id", "create_time", "id"),
    sa.Index("ix_batches_running", "state", "create_time"),
)
