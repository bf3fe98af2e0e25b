"""Fixtures for journeys through the real edge: Envoy + the authorization server + the order and
routing services + Postgres + NATS, all started once per test session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import start_collector
from gateway.auth.clients import ClientRegistry
from gateway.envoy_config import GatewayConfig, build
from gateway.policy import READ, TIERS, WRITE, Bucket
from services import registry as service_registry
from services.kit.db import create_engine
from services.stack.components import free_port
from tests.conftest import Stack
from tests.e2e.harness import EnvoyProcess, RunningAuth, start_auth

# Short JWKS cache so that the key-rotation journey runs in seconds, not minutes.
JWKS_CACHE_SECONDS = 2
STATUS_CACHE_SECONDS = 1
RATE_TEST_BUCKET = Bucket(tokens=3, seconds=60)


@pytest.fixture(scope="session")
async def gateway_auth(stack: Stack) -> AsyncIterator[RunningAuth]:
    running = await start_auth(stack.database_url, jwks_cache_seconds=JWKS_CACHE_SECONDS,
                               rotation_seconds=0)
    yield running
    await running.stop()


@pytest.fixture(scope="session")
async def registry(stack: Stack, gateway_auth: RunningAuth) -> AsyncIterator[ClientRegistry]:
    engine = create_engine(stack.database_url, pool_size=2)
    yield ClientRegistry(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def audit_address(stack: Stack, gateway_auth: RunningAuth) -> AsyncIterator[str]:
    """The audit collector in this process (the auth fixture has migrated its schema)."""
    engine = create_engine(stack.database_url, pool_size=2)
    server, port = await start_collector(engine, "127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(1)
    await engine.dispose()


@pytest.fixture(scope="session")
def upstreams(request: pytest.FixtureRequest) -> dict[str, str]:
    """Every registered service, from its `<name>_address` fixture (tests/conftest.py): a
    service added to services.registry gets its upstream here by providing that fixture."""
    return {entry.name: request.getfixturevalue(f"{entry.name}_address")
            for entry in service_registry.SERVICES}


def gateway_config(stack: Stack, gateway_auth: RunningAuth, upstreams: dict[str, str],
                   audit_address: str | None, **overrides: Any) -> GatewayConfig:
    port = free_port()
    return replace(GatewayConfig(
        listen_port=port, admin_port=free_port(),
        auth_address=f"127.0.0.1:{gateway_auth.settings.port}",
        issuer=gateway_auth.settings.issuer,
        upstreams=upstreams,
        jwks_cache_seconds=JWKS_CACHE_SECONDS, audit_address=audit_address,
        status_cache_seconds=STATUS_CACHE_SECONDS,
        access_log_path=str(stack.tmp / f"envoy-access-{port}.log")), **overrides)


@pytest.fixture(scope="session")
def envoy(stack: Stack, gateway_auth: RunningAuth, upstreams: dict[str, str],
          audit_address: str) -> Iterator[EnvoyProcess]:
    config = gateway_config(
        stack, gateway_auth, upstreams, audit_address,
        # "premium" gets a tiny bucket here so that the 429 journey needs a handful of calls.
        tiers={**TIERS, "premium": {READ: RATE_TEST_BUCKET, WRITE: RATE_TEST_BUCKET}})
    process = EnvoyProcess(build(config), stack.tmp, config.listen_port).start()
    yield process
    process.stop()


@dataclass
class Partner:
    client_id: str
    secret: str
    token: str
    http: httpx.AsyncClient


@pytest.fixture
async def partner_factory(envoy: EnvoyProcess, gateway_auth: RunningAuth,
                          registry: ClientRegistry) -> AsyncIterator[object]:
    opened: list[httpx.AsyncClient] = []

    async def make(scopes: tuple[str, ...] = ("orders.read", "orders.write"), *,
                   tier: str = "standard", ip_allow: tuple[str, ...] = ()) -> Partner:
        client_id = f"partner-{uuid.uuid4().hex[:8]}"
        secret = await registry.create(client_id, list(scopes), tier=tier,
                                       ip_allowlist=list(ip_allow))
        # A standard OAuth2 client library, as a partner would use.
        async with AsyncOAuth2Client(client_id, secret,
                                     token_endpoint_auth_method="client_secret_basic") as oauth:
            token = await oauth.fetch_token(gateway_auth.token_url,
                                            grant_type="client_credentials")
        http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{envoy.port}", timeout=30,
            headers={"authorization": f"Bearer {token['access_token']}"})
        opened.append(http)
        return Partner(client_id, secret, token["access_token"], http)

    yield make
    for http in opened:
        await http.aclose()


@pytest.fixture
async def partner(partner_factory: object) -> Partner:
    return await partner_factory()  # type: ignore[operator, no-any-return]


@pytest.fixture
async def engine(stack: Stack) -> AsyncIterator[AsyncEngine]:
    """An engine on the session's database (the audit tests read the gateway schema)."""
    engine = create_engine(stack.database_url, pool_size=2)
    yield engine
    await engine.dispose()
