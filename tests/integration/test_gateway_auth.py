"""The authorization server over real HTTP and a real Postgres client registry."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt

from gateway.auth.clients import ClientRegistry
from gateway.auth.keys import KeyRing, RotationTooEarly
from gateway.clients import main as clients_cli
from services.kit.db import create_engine
from tests.conftest import Stack
from tests.e2e.harness import RunningAuth, start_auth

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def auth(stack: Stack) -> AsyncIterator[RunningAuth]:
    running = await start_auth(stack.database_url)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def registry(stack: Stack, auth: RunningAuth) -> AsyncIterator[ClientRegistry]:
    engine = create_engine(stack.database_url, pool_size=2)
    yield ClientRegistry(engine)
    await engine.dispose()


async def new_client(registry: ClientRegistry, scopes: list[str] | None = None
                     ) -> tuple[str, str]:
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    secret = await registry.create(client_id, scopes or ["orders.read", "orders.write"])
    return client_id, secret


async def test_client_credentials_with_a_standard_client_issue_rfc9068_tokens(
        auth: RunningAuth, registry: ClientRegistry) -> None:
    client_id, secret = await new_client(registry)
    for method in ("client_secret_basic", "client_secret_post"):
        async with AsyncOAuth2Client(client_id, secret, token_endpoint_auth_method=method,
                                     scope="orders.read") as oauth:
            token = await oauth.fetch_token(auth.token_url, grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["scope"] == "orders.read"
        assert token["expires_in"] == 600
        async with httpx.AsyncClient() as http:
            jwks = (await http.get(auth.url + "/.well-known/jwks.json")).json()
        assert all("d" not in key for key in jwks["keys"])  # never private members
        from joserfc.jwk import KeySet
        decoded = jwt.decode(token["access_token"], KeySet.import_key_set(jwks),
                             algorithms=["RS256"])
        assert decoded.header["typ"] == "at+jwt"
        claims = decoded.claims
        assert claims["iss"] == auth.settings.issuer and claims["aud"] == "cartage-api"
        assert claims["sub"] == claims["client_id"] == client_id
        assert claims["exp"] - claims["iat"] == 600 and claims["jti"]


async def test_scopes_are_narrowed_to_the_allowed_ones(
        auth: RunningAuth, registry: ClientRegistry) -> None:
    client_id, secret = await new_client(registry, ["orders.read"])
    async with httpx.AsyncClient(auth=(client_id, secret)) as http:
        narrowed = await http.post(auth.token_url, data={
            "grant_type": "client_credentials", "scope": "orders.read orders.write"})
        assert narrowed.json()["scope"] == "orders.read"
        everything = await http.post(auth.token_url, data={"grant_type": "client_credentials"})
        assert everything.json()["scope"] == "orders.read"
        refused = await http.post(auth.token_url, data={
            "grant_type": "client_credentials", "scope": "orders.write"})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"


async def test_errors_follow_rfc6749_section_5_2(
        auth: RunningAuth, registry: ClientRegistry) -> None:
    client_id, secret = await new_client(registry)
    grant = {"grant_type": "client_credentials"}
    async with httpx.AsyncClient() as http:
        wrong = await http.post(auth.token_url, data=grant, auth=(client_id, "nope"))
        unknown = await http.post(auth.token_url, data={
            **grant, "client_id": "nobody", "client_secret": "x"})
        anonymous = await http.post(auth.token_url, data=grant)
        for response in (wrong, unknown, anonymous):
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "invalid_client"
            assert response.headers["www-authenticate"].startswith("Basic")
        grant_type = await http.post(auth.token_url, data={"grant_type": "password"},
                                     auth=(client_id, secret))
        assert grant_type.status_code == 400
        assert grant_type.json()["error"] == "unsupported_grant_type"
        missing = await http.post(auth.token_url, data={}, auth=(client_id, secret))
        assert missing.json()["error"] == "invalid_request"
        repeated = await http.post(
            auth.token_url, content="grant_type=client_credentials&grant_type=x",
            headers={"content-type": "application/x-www-form-urlencoded",
                     "authorization": "Basic " + base64.b64encode(
                         f"{client_id}:{secret}".encode()).decode()})
        assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"
        as_json = await http.post(auth.token_url, json=grant, auth=(client_id, secret))
        assert as_json.json()["error"] == "invalid_request"
    assert wrong.headers["cache-control"] == "no-store"


async def test_disabled_client_and_rotated_secret(
        auth: RunningAuth, registry: ClientRegistry, stack: Stack,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    client_id, secret = await new_client(registry)
    grant = {"grant_type": "client_credentials"}
    new_secret = await registry.rotate_secret(client_id)
    async with httpx.AsyncClient() as http:
        assert (await http.post(auth.token_url, data=grant,
                                auth=(client_id, secret))).status_code == 401
        assert (await http.post(auth.token_url, data=grant,
                                auth=(client_id, new_secret))).status_code == 200
        await registry.set_enabled(client_id, False)
        assert (await http.post(auth.token_url, data=grant,
                                auth=(client_id, new_secret))).status_code == 401


async def test_a_rotated_secret_can_overlap_with_the_new_one_for_a_grace_period(
        auth: RunningAuth, registry: ClientRegistry, stack: Stack) -> None:
    import datetime as dt

    import sqlalchemy as sa

    from gateway.auth.clients import clients

    client_id, first = await new_client(registry)
    grant = {"grant_type": "client_credentials"}

    async def status(secret: str) -> int:
        async with httpx.AsyncClient() as http:
            return (await http.post(auth.token_url, data=grant,
                                    auth=(client_id, secret))).status_code

    second = await registry.rotate_secret(client_id, keep_previous_for=dt.timedelta(hours=1))
    assert (await status(first), await status(second)) == (200, 200)
    # The grace period ends: only the new secret works.
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.update(clients).where(clients.c.client_id == client_id)
                               .values(previous_secret_expires_at=sa.func.now()
                                       - dt.timedelta(seconds=1)))
    finally:
        await engine.dispose()
    assert (await status(first), await status(second)) == (401, 200)
    # A rotation without grace (a leak) ends the replaced secret at once, and an overlap
    # only ever covers the secret just replaced.
    third = await registry.rotate_secret(client_id, keep_previous_for=dt.timedelta(hours=1))
    fourth = await registry.rotate_secret(client_id)
    assert [await status(s) for s in (first, second, third, fourth)] == [401, 401, 401, 200]


async def test_introspection_and_revocation(
        auth: RunningAuth, registry: ClientRegistry) -> None:
    client_id, secret = await new_client(registry)
    other_id, other_secret = await new_client(registry)
    async with httpx.AsyncClient(auth=(client_id, secret)) as http:
        token = (await http.post(auth.token_url, data={
            "grant_type": "client_credentials"})).json()["access_token"]
        url = auth.url + "/oauth/introspect"
        active = (await http.post(url, data={"token": token})).json()
        assert active["active"] is True and active["client_id"] == client_id
        assert active["scope"] == "orders.read orders.write"
        assert (await http.post(url, data={"token": "garbage"})).json() == {"active": False}
        # Someone else's revocation is ignored (and still answered with 200).
        foreign = await http.post(auth.url + "/oauth/revoke", data={"token": token},
                                  auth=(other_id, other_secret))
        assert foreign.status_code == 200
        assert (await http.post(url, data={"token": token})).json()["active"] is True
        revoked = await http.post(auth.url + "/oauth/revoke", data={"token": token})
        assert revoked.status_code == 200
        assert (await http.post(url, data={"token": token})).json() == {"active": False}
        assert (await http.post(auth.url + "/oauth/revoke",
                                data={"token": "unknown"})).status_code == 200
        anonymous = await http.post(url, data={"token": token}, auth=None)
        assert anonymous.status_code == 401


async def test_metadata_document(auth: RunningAuth) -> None:
    async with httpx.AsyncClient() as http:
        meta = (await http.get(auth.url + "/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == auth.settings.issuer
    assert meta["token_endpoint"] == auth.token_url
    assert meta["grant_types_supported"] == ["client_credentials"]


def test_key_rotation_publishes_ahead_and_keeps_retired_keys_until_tokens_expire() -> None:
    now = [1_000_000.0]
    ring = KeyRing(token_ttl=600, publish_ahead=300, clock=lambda: now[0])
    first, upcoming = ring.state()["active"], ring.state()["next"]
    published = {k["kid"] for k in ring.jwks()["keys"]}  # type: ignore[index, union-attr]
    assert published == {first, upcoming}
    with pytest.raises(RotationTooEarly):
        ring.rotate()  # the next key has not been visible for a JWKS cache period yet
    now[0] += 300
    assert ring.rotate() == upcoming
    assert ring.signing_key.kid == upcoming
    state = ring.state()
    assert state["retired"] == [first]
    # The retired key still verifies the tokens it signed until they can have expired ...
    now[0] += 600
    assert first in {k.kid for k in ring.verification_keys().keys}
    assert first in {k["kid"] for k in ring.jwks()["keys"]}  # type: ignore[index, union-attr]
    # ... and disappears after that.
    now[0] += 2
    assert ring.state()["retired"] == []
    assert first not in {k["kid"] for k in ring.jwks()["keys"]}  # type: ignore[index, union-attr]


def test_clients_cli(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    import json

    monkeypatch.setenv("DATABASE_URL", stack.database_url)
    client_id = f"cli-{uuid.uuid4().hex[:8]}"
    assert clients_cli(["create", client_id, "--scope", "orders.read",
                        "--allow-ip", "10.0.0.0/8"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["client_id"] == client_id and len(created["client_secret"]) >= 40
    assert clients_cli(["rotate-secret", client_id, "--grace-hours", "24"]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["client_secret"] != created["client_secret"]
    assert rotated["previous_secret_valid_for_hours"] == 24
    assert clients_cli(["disable", client_id]) == 0
    capsys.readouterr()
    assert clients_cli(["list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mine = next(c for c in listed if c["client_id"] == client_id)
    assert mine == {"client_id": client_id, "scopes": ["orders.read"], "tier": "standard",
                    "ip_allowlist": ["10.0.0.0/8"], "enabled": False}
    assert clients_cli(["disable", "nobody-at-all"]) == 2
    assert "secret_hash" not in json.dumps(listed) and time.time() > 0


async def test_a_restarted_server_keeps_its_signing_keys(
        auth: RunningAuth, registry: ClientRegistry, stack: Stack) -> None:
    client_id, secret = await new_client(registry)
    async with httpx.AsyncClient(auth=(client_id, secret)) as http:
        token = (await http.post(auth.token_url, data={
            "grant_type": "client_credentials"})).json()["access_token"]
    # A second server on the same database (a restart, or a replica) uses the same keys, so
    # tokens and Envoy's cached JWKS stay valid.
    again = await start_auth(stack.database_url, issuer=auth.settings.issuer)
    try:
        assert again.server.keys.state() == auth.server.keys.state()
        assert again.server.tokens.verify(token) is not None
    finally:
        await again.stop()


async def test_signing_keys_are_stored_encrypted_and_unreadable_without_the_key(
        auth: RunningAuth, stack: Stack) -> None:
    from cryptography.fernet import Fernet

    from gateway.auth.keystore import KeyStoreError, signing_keys

    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            stored = [r.private_jwk for r in await conn.execute(sa.select(signing_keys))]
    finally:
        await engine.dispose()
    assert stored and all(s.startswith("fernet:") for s in stored)
    assert not any('"d"' in s or "RSA" in s for s in stored)  # no private key material in clear
    for wrong in ("", Fernet.generate_key().decode(), "not-a-key"):
        with pytest.raises(KeyStoreError):
            await start_auth(stack.database_url, key_encryption_key=wrong)


async def test_the_key_encryption_key_can_be_changed(auth: RunningAuth, stack: Stack) -> None:
    from cryptography.fernet import Fernet

    from gateway.auth.keystore import KeyStoreError
    from tests.e2e.harness import SESSION_KEY_ENCRYPTION_KEY as old

    new = Fernet.generate_key().decode()
    both = await start_auth(stack.database_url, key_encryption_key=f"{new},{old}")
    try:
        assert both.server.keys.state() == auth.server.keys.state()
    finally:
        await both.stop()
    only_new = await start_auth(stack.database_url, key_encryption_key=new)
    try:
        assert only_new.server.keys.state() == auth.server.keys.state()
    finally:
        await only_new.stop()
    with pytest.raises(KeyStoreError):  # the rows were rewritten with the new key
        await start_auth(stack.database_url, key_encryption_key=old)
    # Put the session's key back for the tests after this one.
    restored = await start_auth(stack.database_url, key_encryption_key=f"{old},{new}")
    await restored.stop()


async def test_authentication_attempts_are_throttled_with_retry_after(
        stack: Stack, registry: ClientRegistry) -> None:
    strict = await start_auth(stack.database_url, client_rate="3/minute",
                              failure_rate="2/minute")
    try:
        busy_id, busy_secret = await new_client(registry)
        other_id, other_secret = await new_client(registry)
        grant = {"grant_type": "client_credentials"}
        async with httpx.AsyncClient() as http:
            statuses = [(await http.post(strict.token_url, data=grant,
                                         auth=(busy_id, busy_secret))).status_code
                        for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            limited = await http.post(strict.token_url, data=grant, auth=(busy_id, busy_secret))
            assert limited.status_code == 429
            assert limited.json()["error"] == "too_many_requests"
            assert 1 <= int(limited.headers["Retry-After"]) <= 60
            # Another client is unaffected by the first one's budget.
            fine = await http.post(strict.token_url, data=grant, auth=(other_id, other_secret))
            assert fine.status_code == 200
            # Guessing secrets: two failures from this address, then every attempt from it
            # is refused before any hashing, even with a right secret for a fresh client.
            for guess in ("wrong-1", "wrong-2"):
                failed = await http.post(strict.token_url, data=grant, auth=(other_id, guess))
                assert failed.status_code == 401 and failed.json()["error"] == "invalid_client"
            third_id, third_secret = await new_client(registry)
            cut_off = await http.post(strict.token_url, data=grant, auth=(third_id, third_secret))
            assert cut_off.status_code == 429 and "Retry-After" in cut_off.headers
    finally:
        await strict.stop()


async def test_a_forwarded_address_counts_only_from_a_trusted_proxy(
        stack: Stack, registry: ClientRegistry) -> None:
    direct = await start_auth(stack.database_url, failure_rate="2/minute")
    proxied = await start_auth(stack.database_url, failure_rate="2/minute",
                               trusted_proxies="127.0.0.1")
    try:
        client_id, secret = await new_client(registry)
        async with httpx.AsyncClient() as http:
            async def attempt(server: RunningAuth, guess: str, forwarded: str) -> int:
                response = await http.post(server.token_url,
                                           data={"grant_type": "client_credentials"},
                                           auth=(client_id, guess),
                                           headers={"x-forwarded-for": forwarded})
                return response.status_code

            # By default the header is not believed: a made-up address per attempt does not
            # escape the per-address limit.
            assert [await attempt(direct, "wrong", f"203.0.113.{i}") for i in range(3)] == [
                401, 401, 429]
            # Behind a trusted proxy each forwarded address is counted on its own.
            assert [await attempt(proxied, "wrong", "203.0.113.7") for _ in range(3)] == [
                401, 401, 429]
            assert await attempt(proxied, secret, "203.0.113.8") == 200
    finally:
        await direct.stop()
        await proxied.stop()
