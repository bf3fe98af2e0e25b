"""The HTTP surface of the authorization server (Starlette, served by uvicorn).

    POST /oauth/token                         client credentials grant (RFC 6749 §4.4)
    POST /oauth/introspect                    RFC 7662
    POST /oauth/revoke                        RFC 7009
    GET  /.well-known/jwks.json               public keys (next, active, retired)
    GET  /.well-known/oauth-authorization-server   RFC 8414 metadata
    GET  /healthz

Errors follow RFC 6749 §5.2: a JSON object with `error` (and `error_description`), 400, or 401
with `WWW-Authenticate` for `invalid_client`; too many authentication attempts are 429
`too_many_requests` with `Retry-After` (gateway.auth.throttle). Token responses are never
cached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.auth.clients import Client, ClientRegistry
from gateway.auth.keys import ALGORITHM, KeyRing, RotationTooEarly
from gateway.auth.throttle import AuthThrottle, Throttled
from gateway.auth.tokens import TokenService
from gateway.policy import all_scopes

log = logging.getLogger("cartage.auth")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM = "application/x-www-form-urlencoded"


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400,
                 retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.error == "invalid_client":
            headers["WWW-Authenticate"] = 'Basic realm="cartage", charset="UTF-8"'
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers=headers)


@dataclass
class AuthServer:
    registry: ClientRegistry
    tokens: TokenService
    keys: KeyRing
    throttle: AuthThrottle

    async def _form(self, request: Request) -> dict[str, str]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != FORM:
            raise OAuthError("invalid_request", f"the body must be {FORM}")
        pairs = parse_qsl((await request.body()).decode("utf-8", "replace"),
                          keep_blank_values=True)
        form: dict[str, str] = {}
        for name, value in pairs:
            if name in form:  # RFC 6749 §3.2: no parameter may repeat
                raise OAuthError("invalid_request", f"parameter {name} is repeated")
            form[name] = value
        return form

    async def _client(self, request: Request, form: dict[str, str]) -> Client:
        """RFC 6749 §2.3.1: HTTP Basic (id and secret form-encoded) or body parameters."""
        header = request.headers.get("authorization", "")
        in_body = "client_id" in form or "client_secret" in form
        if header.lower().startswith("basic "):
            if in_body and "client_secret" in form:
                raise OAuthError("invalid_request", "use one client authentication method")
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
                raw_id, raw_secret = decoded.split(":", 1)
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        elif form.get("client_id") and "client_secret" in form:
            client_id, secret = form["client_id"], form["client_secret"]
        else:
            raise OAuthError("invalid_client", "client authentication is required", 401)
        address = request.client.host if request.client else ""
        try:
            client = await self.throttle.verify(
                client_id, address, lambda: self.registry.authenticate(client_id, secret))
        except Throttled as error:
            # RFC 6749 defines no error code for this; 429 + Retry-After is RFC 6585's.
            raise OAuthError("too_many_requests", error.description, 429,
                             error.retry_after) from None
        if client is None:
            raise OAuthError("invalid_client", "client authentication failed", 401)
        return client

    async def token(self, request: Request) -> JSONResponse:
        try:
            form = await self._form(request)
            client = await self._client(request, form)
            grant = form.get("grant_type")
            if not grant:
                raise OAuthError("invalid_request", "grant_type is required")
            if grant != "client_credentials":
                raise OAuthError("unsupported_grant_type",
                                 "only client_credentials is supported")
            allowed = set(client.scopes)
            if "scope" in form:
                requested = set(form["scope"].split())
                granted = requested & allowed
                if not granted:
                    raise OAuthError("invalid_scope",
                                     "none of the requested scopes is allowed for this client")
            else:
                granted = allowed  # no scope asked: everything the client may have
            if not granted:
                raise OAuthError("invalid_scope", "this client has no scopes")
        except OAuthError as error:
            return error.response()
        issued = self.tokens.issue(client.client_id, sorted(granted), client.rate_tier,
                                   list(client.ip_allowlist))
        log.info("token issued", extra={"client_id": client.client_id, "jti": issued.jti,
                                        "scope": issued.scope})
        return JSONResponse({"access_token": issued.token, "token_type": "Bearer",
                             "expires_in": issued.expires_in, "scope": issued.scope},
                            headers=NO_STORE)

    async def _active_claims(self, token: str) -> dict[str, object] | None:
        claims = self.tokens.verify(token)
        if claims is None or await self.registry.is_revoked(str(claims["jti"])):
            return None
        return claims

    async def introspect(self, request: Request) -> JSONResponse:
        try:
            form = await self._form(request)
            await self._client(request, form)
            if "token" not in form:
                raise OAuthError("invalid_request", "token is required")
        except OAuthError as error:
            return error.response()
        claims = await self._active_claims(form["token"])
        if claims is None:
            return JSONResponse({"active": False}, headers=NO_STORE)
        return JSONResponse({"active": True, "token_type": "Bearer", **claims}, headers=NO_STORE)

    async def revoke(self, request: Request) -> JSONResponse:
        try:
            form = await self._form(request)
            client = await self._client(request, form)
            if "token" not in form:
                raise OAuthError("invalid_request", "token is required")
        except OAuthError as error:
            return error.response()
        claims = await self._active_claims(form["token"])
        # RFC 7009 §2.2: 200 whether or not the token was valid; only its owner can revoke it.
        if claims is not None and claims.get("client_id") == client.client_id:
            expires = dt.datetime.fromtimestamp(int(str(claims["exp"])), dt.UTC)
            await self.registry.revoke(str(claims["jti"]), expires)
        return JSONResponse({}, headers=NO_STORE)

    async def jwks(self, request: Request) -> JSONResponse:
        return JSONResponse(self.keys.jwks(), headers={"Cache-Control": "max-age=60"})

    async def metadata(self, request: Request) -> JSONResponse:
        issuer = self.tokens.issuer
        return JSONResponse({
            "issuer": issuer,
            "token_endpoint": f"{issuer}/oauth/token",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": all_scopes(),
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic",
                                                              "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic",
                                                           "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM],
            "response_types_supported": [],
        })

    async def access(self, request: Request) -> JSONResponse:
        """Envoy's check that a token's client is still enabled and the token not revoked
        (cached there for a few seconds; see gateway.envoy_config)."""
        client = await self.registry.get(request.query_params.get("client_id", ""))
        jti = request.query_params.get("jti", "")
        if client is None or not client.enabled or not jti:
            return JSONResponse({"allowed": False}, status_code=403)
        if await self.registry.is_revoked(jti):
            return JSONResponse({"allowed": False}, status_code=403)
        return JSONResponse({"allowed": True})

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})


async def rotate_periodically(keys: KeyRing, every: float,
                              on_rotate: Callable[[KeyRing], Awaitable[None]] | None) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            kid = keys.rotate()
            if on_rotate is not None:
                await on_rotate(keys)
            log.info("signing key rotated", extra={"kid": kid})
        except RotationTooEarly as error:  # only when every < jwks cache period
            log.warning(str(error))


def build_app(server: AuthServer, rotation_seconds: int = 0,
              on_rotate: Callable[[KeyRing], Awaitable[None]] | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = (asyncio.create_task(rotate_periodically(server.keys, rotation_seconds,
                                                       on_rotate))
                if rotation_seconds > 0 else None)
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(routes=[
        Route("/oauth/token", server.token, methods=["POST"]),
        Route("/oauth/introspect", server.introspect, methods=["POST"]),
        Route("/oauth/revoke", server.revoke, methods=["POST"]),
        Route("/.well-known/jwks.json", server.jwks, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", server.metadata, methods=["GET"]),
        Route("/healthz", server.health, methods=["GET"]),
        Route("/internal/access", server.access, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.server = server
    return app
