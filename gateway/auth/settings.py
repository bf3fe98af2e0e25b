"""The authorization server's settings, read once in main()."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.kit.config import Env


@dataclass(frozen=True)
class AuthSettings:
    database_url: str
    issuer: str
    audience: str = "cartage-api"
    host: str = "127.0.0.1"
    port: int = 8090
    token_ttl: int = 600
    # How long Envoy may cache the JWKS; the next key is published at least this long before it
    # signs. Envoy's jwt_authn is configured with the same value (gateway.envoy_config).
    jwks_cache_seconds: int = 300
    # Automatic rotation period; 0 turns it off (rotate by restarting or from code).
    rotation_seconds: int = 86_400
    # Client authentication (token, introspection, revocation) costs an argon2 verification,
    # tens of ms of CPU: successful ones per client id, failed ones per source address, and how
    # many verifications run at once are bounded (`limits` notation, per process).
    client_rate: str = "120/minute"
    failure_rate: str = "30/minute"
    concurrent_verifications: int = 2
    # A Fernet key (urlsafe base64 of 32 bytes) that encrypts the stored signing keys; empty:
    # stored in clear (gateway.auth.keystore).
    key_encryption_key: str = field(default="", repr=False)
    # Proxies whose X-Forwarded-For names the client (comma-separated addresses or networks,
    # uvicorn's forwarded_allow_ips); empty: none, the TCP peer is the client's address. The
    # per-address limit above counts that address, so trusting a proxy that is not there would
    # let anyone pick their own address with the header.
    trusted_proxies: str = ""
    log_level: str = "INFO"
    migrate_on_start: bool = True
    metrics_port: int = 0  # Prometheus /metrics (gateway.metrics); 0: off

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AuthSettings:
        env = Env(environ)
        port = env.int("AUTH_HTTP_PORT", cls.port)
        return cls(
            database_url=env.str("DATABASE_URL"),
            issuer=env.str("AUTH_ISSUER", f"http://127.0.0.1:{port}"),
            audience=env.str("AUTH_AUDIENCE", cls.audience),
            host=env.str("AUTH_HTTP_HOST", cls.host),
            port=port,
            token_ttl=env.int("AUTH_TOKEN_TTL_SECONDS", cls.token_ttl),
            jwks_cache_seconds=env.int("AUTH_JWKS_CACHE_SECONDS", cls.jwks_cache_seconds),
            rotation_seconds=env.int("AUTH_ROTATION_SECONDS", cls.rotation_seconds),
            client_rate=env.str("AUTH_CLIENT_RATE", cls.client_rate),
            failure_rate=env.str("AUTH_FAILURE_RATE", cls.failure_rate),
            concurrent_verifications=env.int("AUTH_CONCURRENT_VERIFICATIONS",
                                             cls.concurrent_verifications),
            key_encryption_key=env.str("AUTH_KEY_ENCRYPTION_KEY", ""),
            trusted_proxies=env.str("AUTH_TRUSTED_PROXIES", cls.trusted_proxies),
            log_level=env.str("LOG_LEVEL", cls.log_level),
            migrate_on_start=env.bool("MIGRATE_ON_START", cls.migrate_on_start),
            metrics_port=env.int("AUTH_METRICS_PORT", cls.metrics_port),
        )
