"""A rotated client secret may stay valid for a while next to the new one, so a partner can
roll the new secret out to its systems without a window of failed token requests.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade(schema: str) -> None:
    op.add_column("clients", sa.Column("previous_secret_hash", sa.Text), schema=schema)
    op.add_column("clients", sa.Column("previous_secret_expires_at",
                                       sa.DateTime(timezone=True)), schema=schema)
