"""The signing keys in Postgres (schema `gateway`), loaded at start and saved on rotation.

With a key-encryption key (AUTH_KEY_ENCRYPTION_KEY, a Fernet key from the `cryptography`
library: AES-128-CBC + HMAC-SHA256) each private key is stored encrypted, so a dump or backup
of the database does not hand out the signing keys. `make run` generates one into its data
directory; in a cluster it comes from a secret. Without one, keys are stored in clear and the
server says so at start. Rows written in clear are read and rewritten encrypted once a key is
configured; encrypted rows without the key are refused with a clear message. To change the
key, start once with `NEW,OLD` (MultiFernet: the first key encrypts, any of them decrypts, and
the rows are rewritten with the first at start), then with `NEW` alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
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
_ENCRYPTED = "fernet:"
log = logging.getLogger("cartage.auth")


class KeyStoreError(Exception):
    """The stored keys cannot be read with the configured key-encryption key."""


_LOCK = sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended("gateway.keys", 0)))


class KeyStore:
    def __init__(self, engine: AsyncEngine, encryption_key: str = "") -> None:
        self._engine = engine
        keys = [k.strip() for k in encryption_key.split(",") if k.strip()]
        try:
            self._cipher = MultiFernet([Fernet(k) for k in keys]) if keys else None
        except ValueError:
            raise KeyStoreError("AUTH_KEY_ENCRYPTION_KEY must be Fernet keys (urlsafe base64 "
                                "of 32 bytes), comma-separated, the newest first") from None
        if self._cipher is None:
            log.warning("signing keys are stored unencrypted: set AUTH_KEY_ENCRYPTION_KEY")

    async def load_or_create(self, make: Callable[[list[dict[str, object]]], KeyRing]
                             ) -> KeyRing:
        """The stored ring (or a new one, stored), under a lock so replicas agree."""
        async with self._engine.begin() as conn:
            await conn.execute(_LOCK)
            rows = [self._readable(dict(r._mapping))
                    for r in await conn.execute(sa.select(signing_keys))]
            ring = make(rows)
            await self._replace(conn, ring)
        return ring

    async def save(self, ring: KeyRing) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(_LOCK)
            await self._replace(conn, ring)

    async def _replace(self, conn: sa.ext.asyncio.AsyncConnection, ring: KeyRing) -> None:
        rows = ring.export()
        if self._cipher is not None:
            for row in rows:
                secret = str(row["private_jwk"]).encode()
                row["private_jwk"] = _ENCRYPTED + self._cipher.encrypt(secret).decode()
        await conn.execute(sa.delete(signing_keys))
        await conn.execute(sa.insert(signing_keys), rows)

    def _readable(self, row: dict[str, object]) -> dict[str, object]:
        stored = str(row["private_jwk"])
        if not stored.startswith(_ENCRYPTED):
            return row
        if self._cipher is None:
            raise KeyStoreError("the stored signing keys are encrypted: set "
                                "AUTH_KEY_ENCRYPTION_KEY to the key they were written with")
        try:
            clear = self._cipher.decrypt(stored.removeprefix(_ENCRYPTED).encode())
        except InvalidToken:
            raise KeyStoreError("AUTH_KEY_ENCRYPTION_KEY does not decrypt the stored signing "
                                "keys (a different key wrote them)") from None
        return {**row, "private_jwk": clear.decode()}
