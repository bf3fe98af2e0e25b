"""Who is calling: the client identity Envoy forwards as metadata after validating the JWT.

Envoy strips any client-supplied copies of these headers before setting them, so a service can
trust them; a service port must therefore never be exposed past the gateway.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.errors import Unauthenticated

CLIENT_ID_HEADER = "x-cartage-client-id"
SCOPES_HEADER = "x-cartage-scopes"
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
TOKEN_ID_HEADER = "x-cartage-token-id"  # the access token's `jti`, set by Envoy like the others


@dataclass(frozen=True, slots=True)
class Caller:
    """The API client on whose behalf a call runs. Resources are always scoped to it."""

    client_id: str
    scopes: frozenset[str]
    idempotency_key: str = ""
    token_id: str = ""

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Caller | None:
        client_id = metadata.get(CLIENT_ID_HEADER, "").strip()
        if not client_id:
            return None
        scopes = frozenset(metadata.get(SCOPES_HEADER, "").split())
        return cls(client_id, scopes, metadata.get(IDEMPOTENCY_KEY_HEADER, "").strip(),
                   metadata.get(TOKEN_ID_HEADER, "").strip())


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def set_caller(caller: Caller | None) -> contextvars.Token[Caller | None]:
    return _caller.set(caller)


def current_caller() -> Caller:
    """The caller of the RPC being served; UNAUTHENTICATED when no identity was forwarded."""
    caller = _caller.get()
    if caller is None:
        raise Unauthenticated(
            f"no client identity: calls must come through the gateway ({CLIENT_ID_HEADER})",
            reason="NO_CLIENT_IDENTITY",
        )
    return caller
