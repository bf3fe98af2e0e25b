"""The signing keys in Postgres (schema `gateway`), loaded at start and saved on rotation.

Private keys are stored in clear in the gateway's own schema, which only the authorization
server's role should be able to read; encrypting them with a KMS key is the production step.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clients import metadata
from gateway.auth.keys import KeyRing

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("private_jwk", sa.Text, nullable=False),
    sa.Column("published_at", sa.Float, nullable=False),
    sa.Column("retired_until", sa.Float),
)
_LOCK = sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended("gateway.keys", 0)))


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def load_or_create(self, make: Callable[[list[dict[str, object]]], KeyRing]
                             ) -> KeyRing:
        """The stored ring (or a new one, stored), under a lock so replicas agree."""
        async with self._engine.begin() as conn:
            await conn.execute(_LOCK)
            rows = [dict(r._mapping) for r in await conn.execute(sa.select(signing_keys))]
            ring = make(rows)
            await self._replace(conn, ring)
        return ring

    async def save(self, ring: KeyRing) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(_LOCK)
            await self._replace(conn, ring)

    @staticmethod
    async def _replace(conn: sa.ext.asyncio.AsyncConnection, ring: KeyRing) -> None:
        await conn.execute(sa.delete(signing_keys))
        await conn.execute(sa.insert(signing_keys), ring.export())
