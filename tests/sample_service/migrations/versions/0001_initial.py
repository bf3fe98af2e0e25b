"""The kit's outbox, inbox and idempotency tables.

Revision ID: 0001
Revises:
"""

from alembic import op

from services.kit.db import create_kit_tables

revision = "0001"
down_revision = None


def upgrade(schema: str) -> None:
    create_kit_tables(op, schema)
