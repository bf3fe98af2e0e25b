"""The tracking service's milestones of the orders' stops (routing's read model of them).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade(schema: str) -> None:
    op.create_table(
        "milestones",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("order_name", sa.Text, primary_key=True),
        sa.Column("stop_id", sa.Text, primary_key=True),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record_time", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )
