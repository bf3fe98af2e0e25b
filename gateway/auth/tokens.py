"""RFC 9068 JWT access tokens: issuing and (for introspection) verifying.

RFC 8725 hygiene: the algorithm is pinned to RS256 on both sides, `none` is never accepted, and
the `kid` header only selects among our own published keys.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from gateway.auth.keys import ALGORITHM, KeyRing


@dataclass(frozen=True)
class Issued:
    token: str
    expires_in: int
    scope: str
    jti: str


@dataclass
class TokenService:
    keys: KeyRing
    issuer: str
    audience: str
    ttl: int = 600
    clock: Callable[[], float] = time.time

    def issue(self, client_id: str, scopes: list[str], tier: str,
              ip_allow: list[str] | None = None) -> Issued:
        now = int(self.clock())
        jti = uuid.uuid4().hex
        scope = " ".join(sorted(scopes))
        key = self.keys.signing_key
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": client_id,
            "aud": self.audience,
            "client_id": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": jti,
            "scope": scope,
            # The rate-limit tier travels in the token so that Envoy can pick the bucket
            # without a lookup.
            "tier": tier,
        }
        if ip_allow:
            # Envoy checks the caller's address against it on every request (see
            # gateway.envoy_config), so a leaked token is useless from elsewhere.
            claims["ip_allow"] = list(ip_allow)
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": key.kid}
        return Issued(jwt.encode(header, claims, key, algorithms=[ALGORITHM]), self.ttl, scope,
                      jti)

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid token of ours, else None (RFC 7662: never say why)."""
        try:
            decoded = jwt.decode(token, self.keys.verification_keys(), algorithms=[ALGORITHM])
            if decoded.header.get("typ") != "at+jwt":
                return None
            JWTClaimsRegistry(
                now=int(self.clock()),
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError):
            return None
        return dict(decoded.claims)
