"""Signing keys, so that a restarted (or second) authorization server keeps the keys Envoy has
cached instead of minting ones Envoy will not know for a whole JWKS cache period.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade(schema: str) -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),  # next | active | retired
        sa.Column("private_jwk", sa.Text, nullable=False),
        sa.Column("published_at", sa.Float, nullable=False),
        sa.Column("retired_until", sa.Float),
        schema=schema,
    )
