"""Signed anchors of the audit chain's head (gateway.audit): the collector signs (sequence
number, hash) with an Ed25519 key the database does not hold, so a consistent rewrite of the
chain, an insert that recomputes the hashes after it, or a cut-off tail no longer verifies.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade(schema: str) -> None:
    op.create_table(
        "audit_anchor",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),  # canonical JSON, exactly as signed
        sa.Column("signature", sa.LargeBinary, nullable=False),
        schema=schema,
    )
    # Append-only like the log (the signature, not this trigger, is what an administrator
    # cannot get around).
    op.execute(f"""
        CREATE TRIGGER audit_anchor_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
        ON "{schema}".audit_anchor
        FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".audit_log_append_only();
    """)
