"""Each schema's migrations, run on an empty database, give exactly the tables the code uses.

The SQLAlchemy tables are what the queries are built from; the migrations are what production
runs. Alembic's autogenerate comparison finds any column, type, index or constraint that one
has and the other lacks.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.kit.db import create_engine


def _service(module: str) -> tuple[Any, Any]:
    definition = importlib.import_module(module).DEFINITION
    return definition, definition.tables.metadata


def _auth() -> tuple[Any, Any]:
    from gateway import audit  # noqa: F401  (the collector's table is in the same schema)
    from gateway.auth import clients, keystore  # noqa: F401  (keystore adds its tables)

    class Auth:
        async def migrate(self, settings: Any) -> None:
            from services.kit.migrations import upgrade_async

            await upgrade_async(settings.database_url, clients.SCHEMA, clients.MIGRATIONS)

    return Auth(), clients.metadata


SCHEMAS = {
    "order": lambda: _service("services.order.app"),
    "routing": lambda: _service("services.routing.app"),
    "carrier": lambda: _service("services.carrier.app"),
    "tracking": lambda: _service("services.tracking.app"),
    "document": lambda: _service("services.document.app"),
    "gateway": _auth,
}


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
async def test_migrations_match_the_tables(schema: str, stack, fresh_database) -> None:
    from services.order.settings import Settings

    owner, metadata = SCHEMAS[schema]()
    await owner.migrate(Settings(database_url=fresh_database, nats_url=stack.nats_url))
    engine = create_engine(fresh_database, pool_size=1)

    def differences(connection: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={
            "include_schemas": True,
            "include_name": lambda name, type_, parent: (
                type_ != "schema" or name == metadata.schema),
            "compare_type": True,
            "compare_server_default": False,
        })
        diff = compare_metadata(context, metadata)
        return [d for d in diff if "alembic_version" not in repr(d)]

    try:
        async with engine.connect() as connection:
            found = await connection.run_sync(differences)
    finally:
        await engine.dispose()
    assert found == [], "\n".join(map(repr, found))
