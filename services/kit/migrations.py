"""Alembic migrations per service schema, run at start-up or by `python -m services.<svc> migrate`.

Each service keeps an Alembic script directory (`services/<svc>/adapters/migrations`) whose
`env.py` is just `run_env()`. Migrations run under an advisory lock, so replicas starting
together do not race, and record their version in `<schema>.alembic_version`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy.engine import Connection

from services.kit.db import create_engine


def upgrade(database_url: str, schema: str, script_location: Path, revision: str = "head"
            ) -> None:
    """Bring `schema` to `revision`. Blocking: call it in a thread from async code."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    command.upgrade(config, revision)


async def upgrade_async(database_url: str, schema: str, script_location: Path) -> None:
    await asyncio.to_thread(upgrade, database_url, schema, script_location)


def run_env() -> None:
    """The body of every service's Alembic env.py (online mode only)."""
    config = context.config
    url: str = config.attributes["database_url"]
    schema: str = config.attributes["schema"]

    def migrate(connection: Connection) -> None:
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(
            sa.func.hashtextextended(f"migrate:{schema}", 0))))
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            version_table_schema=schema,
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            context.run_migrations(schema=schema)

    async def main() -> None:
        engine = create_engine(url, pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(migrate)
        finally:
            await engine.dispose()

    asyncio.run(main())
