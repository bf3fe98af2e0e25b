"""The sequence of EDI interchange control numbers (ISA13/GS06 of the 204s we send).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade(schema: str) -> None:
    op.execute(f'CREATE SEQUENCE "{schema}".edi_control_numbers '
               "START 1 MINVALUE 1 MAXVALUE 999999999 CYCLE")
