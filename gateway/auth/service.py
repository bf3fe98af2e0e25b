"""The composition root of the authorization server."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn

from gateway.auth.app import AuthServer, build_app
from gateway.auth.clients import ClientRegistry
from gateway.auth.keys import KeyRing
from gateway.auth.keystore import KeyStore
from gateway.auth.settings import AuthSettings
from gateway.auth.throttle import AuthThrottle
from gateway.auth.tokens import TokenService
from gateway.metrics import HttpMetrics
from services.kit.db import create_engine
from services.kit.metrics import MetricsServer


def build(settings: AuthSettings, registry: ClientRegistry, keys: KeyRing | None = None
          ) -> AuthServer:
    keys = keys or KeyRing(token_ttl=settings.token_ttl,
                           publish_ahead=settings.jwks_cache_seconds)
    tokens = TokenService(keys, settings.issuer, settings.audience, settings.token_ttl)
    throttle = AuthThrottle(settings.client_rate, settings.failure_rate,
                            settings.concurrent_verifications)
    return AuthServer(registry, tokens, keys, throttle)


async def serve(settings: AuthSettings, *,
                on_ready: Callable[[AuthServer, uvicorn.Server], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `server.should_exit` when run from tests)."""
    if settings.migrate_on_start:
        await ClientRegistry.migrate(settings.database_url)
    engine = create_engine(settings.database_url, pool_size=5, max_overflow=5)
    metrics = (MetricsServer(settings.metrics_port, settings.host)
               if settings.metrics_port else None)
    try:
        store = KeyStore(engine, settings.key_encryption_key)
        keys = await store.load_or_create(lambda rows: KeyRing.restore(
            rows, token_ttl=settings.token_ttl, publish_ahead=settings.jwks_cache_seconds))
        auth = build(settings, ClientRegistry(engine), keys)
        app = build_app(auth, settings.rotation_seconds, on_rotate=store.save)
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: only from the
        # proxies configured here (none by default).
        routes = {route.path for route in app.routes}
        server = uvicorn.Server(uvicorn.Config(
            HttpMetrics(app, routes), host=settings.host, port=settings.port, log_config=None,
            access_log=False,
            lifespan="on", loop="none", proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or None))
        if on_ready is not None:
            on_ready(auth, server)
        await server.serve()
    finally:
        if metrics is not None:
            metrics.close()
        await engine.dispose()
