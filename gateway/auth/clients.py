"""The client registry in Postgres (schema `gateway`), with secrets as argon2id hashes.

A secret is shown once, when it is created or rotated; only its salted argon2id hash is stored.
Hashing is deliberately slow (tens of ms), so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.migrations import upgrade_async

SCHEMA = "gateway"
MIGRATIONS = Path(__file__).parent / "migrations"
TIERS = ("standard", "premium", "internal")

metadata = sa.MetaData(schema=SCHEMA)
clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("secret_hash", sa.Text, nullable=False),
    # After a rotation with a grace period, the old secret works until this time.
    sa.Column("previous_secret_hash", sa.Text),
    sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True)),
    sa.Column("scopes", postgresql.ARRAY(sa.Text), nullable=False),
    sa.Column("rate_tier", sa.Text, nullable=False),
    sa.Column("ip_allowlist", postgresql.ARRAY(sa.Text), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
)
revoked = sa.Table(
    "revoked_tokens",
    metadata,
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

_hasher = PasswordHasher()
# Verified against when the client id is unknown, so that a wrong id and a wrong secret take the
# same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Client:
    client_id: str
    scopes: tuple[str, ...]
    rate_tier: str
    ip_allowlist: tuple[str, ...]
    enabled: bool


class ClientError(ValueError):
    """A registry command was given something it cannot store."""


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _check(scopes: list[str], tier: str, ip_allowlist: list[str]) -> None:
    if tier not in TIERS:
        raise ClientError(f"rate tier must be one of {', '.join(TIERS)}")
    for scope in scopes:
        if not scope or any(c.isspace() or c in '"\\' for c in scope):
            raise ClientError(f"bad scope {scope!r}")
    for net in ip_allowlist:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ClientError(f"bad IP network {net!r}") from None


def _client(row: sa.Row) -> Client:
    return Client(row.client_id, tuple(row.scopes), row.rate_tier, tuple(row.ip_allowlist),
                  row.enabled)


class ClientRegistry:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @staticmethod
    async def migrate(database_url: str) -> None:
        await upgrade_async(database_url, SCHEMA, MIGRATIONS)

    async def create(self, client_id: str, scopes: list[str], *, tier: str = "standard",
                     ip_allowlist: list[str] | None = None, secret: str | None = None) -> str:
        """Register a client; returns its secret (shown once)."""
        allow = list(ip_allowlist or [])
        _check(scopes, tier, allow)
        secret = secret or new_secret()
        hashed = await asyncio.to_thread(_hasher.hash, secret)
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(clients).values(
                client_id=client_id, secret_hash=hashed, scopes=sorted(set(scopes)),
                rate_tier=tier, ip_allowlist=allow, enabled=True))
        return secret

    async def get(self, client_id: str) -> Client | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                sa.select(clients).where(clients.c.client_id == client_id))).first()
        return _client(row) if row else None

    async def list(self) -> list[Client]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(clients).order_by(clients.c.client_id))
            return [_client(r) for r in rows]

    async def rotate_secret(self, client_id: str,
                            keep_previous_for: dt.timedelta = dt.timedelta(0)) -> str:
        """A new secret, shown once. With `keep_previous_for`, the secret it replaces keeps
        working that long (a partner rolls the new one out without failed requests); without,
        it stops at once (the answer to a leaked secret)."""
        secret = new_secret()
        hashed = await asyncio.to_thread(_hasher.hash, secret)
        async with self._engine.begin() as conn:
            row = (await conn.execute(sa.select(clients.c.secret_hash).where(
                clients.c.client_id == client_id).with_for_update())).first()
            if row is None:
                raise ClientError(f"no client {client_id!r}")
            keep = keep_previous_for > dt.timedelta(0)
            await conn.execute(sa.update(clients).where(clients.c.client_id == client_id).values(
                secret_hash=hashed, update_time=sa.func.now(),
                previous_secret_hash=row.secret_hash if keep else None,
                previous_secret_expires_at=sa.func.now() + keep_previous_for if keep else None))
        return secret

    async def set_scopes(self, client_id: str, scopes: list[str]) -> None:
        """Replace the scopes a client may ask for (tokens already issued keep theirs)."""
        client = await self.get(client_id)
        _check(scopes, client.rate_tier if client else "standard", [])
        await self._update(client_id, scopes=sorted(set(scopes)))

    async def set_enabled(self, client_id: str, enabled: bool) -> None:
        await self._update(client_id, enabled=enabled)

    async def _update(self, client_id: str, **values: object) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(clients).where(clients.c.client_id == client_id)
                .values(update_time=sa.func.now(), **values))
        if result.rowcount == 0:
            raise ClientError(f"no client {client_id!r}")

    async def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The enabled client with this id and secret, else None (same cost either way)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                sa.select(clients).where(clients.c.client_id == client_id))).first()
        candidates = [row.secret_hash if row else _DUMMY_HASH]
        if row is not None and row.previous_secret_hash and row.previous_secret_expires_at \
                and row.previous_secret_expires_at > dt.datetime.now(dt.UTC):
            candidates.append(row.previous_secret_hash)
        for stored in candidates:
            try:
                await asyncio.to_thread(_hasher.verify, stored, secret)
                break
            except (VerificationError, InvalidHashError):
                continue
        else:
            return None
        if row is None or not row.enabled:
            return None
        return _client(row)

    async def revoke(self, jti: str, expires_at: dt.datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(postgresql.insert(revoked).values(jti=jti, expires_at=expires_at)
                               .on_conflict_do_nothing())
            await conn.execute(sa.delete(revoked).where(revoked.c.expires_at < sa.func.now()))

    async def is_revoked(self, jti: str) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.scalar(sa.select(revoked.c.jti).where(revoked.c.jti == jti))
        return found is not None
