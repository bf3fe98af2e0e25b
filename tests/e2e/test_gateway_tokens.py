"""Bad tokens, one by one: every malformed, forged, misplaced or out-of-policy token is refused
with a JSON 401 (403 for a token meant for another audience) and reaches no service.

Keys are generated here at test time (none are committed); "the real key" is the authorization
server's current signing key, so a case fails for the one reason it names, not for a bad
signature. A token valid in every way is accepted alongside, and so are the header shapes RFC
6750/7235 allow (`bearer`, several spaces).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwk, jwt

from gateway.audit import AuditStore
from services.kit.db import create_engine
from tests.conftest import Stack
from tests.e2e.conftest import Partner
from tests.e2e.harness import EnvoyProcess, RunningAuth
from tests.e2e.test_gateway_journeys import order_json
from tests.support import eventually

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

DROP = object()  # a claim or header parameter left out


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


class Forger:
    """Tokens like the authorization server's, with one thing changed."""

    def __init__(self, auth: RunningAuth, client_id: str) -> None:
        self.auth = auth
        self.client_id = client_id
        self.key = auth.server.keys.signing_key

    def parts(self, header: dict[str, Any], claims: dict[str, Any]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        now = int(time.time())
        h: dict[str, Any] = {"alg": "RS256", "typ": "at+jwt", "kid": self.key.kid}
        c: dict[str, Any] = {
            "iss": self.auth.settings.issuer, "sub": self.client_id,
            "aud": self.auth.settings.audience, "client_id": self.client_id, "iat": now,
            "nbf": now, "exp": now + 300, "jti": uuid.uuid4().hex,
            "scope": "orders.read orders.write", "tier": "standard"}
        h.update(header)
        c.update(claims)
        return ({k: v for k, v in h.items() if v is not DROP},
                {k: v for k, v in c.items() if v is not DROP})

    def token(self, key: jwk.RSAKey | None = None, header: dict[str, Any] | None = None,
              **claims: Any) -> str:
        h, c = self.parts(header or {}, claims)
        key = key or self.key
        if h["alg"] != "RS256":  # the same RSA key, without the `alg` that pins it to RS256
            key = jwk.RSAKey.import_key(
                {k: v for k, v in key.as_dict(private=True).items() if k != "alg"})
        return jwt.encode(h, c, key, algorithms=[h["alg"]])

    def hs256_with_public_key(self) -> str:
        """The algorithm-confusion attack: HMAC keyed with the RSA public key (PEM), which
        anyone can fetch from the JWKS."""
        h, c = self.parts({"alg": "HS256"}, {})
        public = self.key.public_key.public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        signing_input = f"{segment(h)}.{segment(c)}"
        mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    def unsigned(self) -> str:
        h, c = self.parts({"alg": "none"}, {})
        return f"{segment(h)}.{segment(c)}."


def bad_cases(forger: Forger) -> dict[str, tuple[dict[str, Any], int]]:
    """case → (request options, expected status). Each case is one request to GET /v1/orders."""
    now = int(time.time())
    ttl = forger.auth.settings.token_ttl
    stranger = jwk.RSAKey.generate_key(2048, parameters={"kid": forger.key.kid})
    unknown = jwk.RSAKey.generate_key(2048, parameters={"kid": "no-such-kid"})
    valid = forger.token()
    signed_input = valid.rsplit(".", 1)[0]
    header_segment, payload_segment, signature = valid.split(".")

    def bearer(token: str) -> dict[str, Any]:
        return {"headers": {"authorization": f"Bearer {token}"}}

    def signed(header: dict[str, Any] | None = None, **claims: Any) -> dict[str, Any]:
        return bearer(forger.token(header=header, **claims))

    unauthenticated: dict[str, dict[str, Any]] = {
        # Where the token is (or is not)
        "no Authorization header": {},
        "bearer without a token": {"headers": {"authorization": "Bearer"}},
        "token in the query string only": {"params": {"access_token": valid}},
        "another scheme (Basic)": {"headers": {"authorization": "Basic " + b64(b"a:b")}},
        "a scheme that merely ends in Bearer": {"headers": {
            "authorization": f"xyzBearer {valid}"}},
        "no scheme": {"headers": {"authorization": valid}},
        "two tokens in one header": {"headers": {
            "authorization": f"Bearer {valid} Bearer {valid}"}},
        "two Authorization headers": {"headers": [
            ("authorization", "Bearer garbage"), ("authorization", f"Bearer {valid}")]},
        "a token followed by a parameter": bearer(f"{valid};foo=bar"),
        # Shape
        "garbage": bearer("not-a-jwt"),
        "one dot": bearer(signed_input),
        "two dots, nothing else": bearer(".."),
        "four segments": bearer(f"{valid}.{signature}"),
        "five segments (JWE shape)": bearer(f"{header_segment}.{payload_segment}.a.b.c"),
        "header not base64url": bearer(f"++//{header_segment[4:]}.{payload_segment}."
                                       f"{signature}"),
        "payload not base64url": bearer(f"{header_segment}.{payload_segment}+/+."
                                        f"{signature}"),
        "payload not JSON": bearer(f"{header_segment}.{b64(b'not json')}.{signature}"),
        "20 KB token": bearer(forger.token(stranger, padding="x" * 20_000)),
        # Signature and key
        "bad signature": bearer(f"{signed_input}.{b64(b'x' * 256)}"),
        "signed by another key under our kid": bearer(forger.token(stranger)),
        "unknown kid": bearer(forger.token(unknown, header={"kid": "no-such-kid"})),
        "no kid, another key": bearer(forger.token(stranger, header={"kid": DROP})),
        "alg none": bearer(forger.unsigned()),
        "HS256 keyed with our public key": bearer(forger.hs256_with_public_key()),
        "RS512 with our key": signed({"alg": "RS512"}),
        "jku pointing elsewhere, another key": bearer(forger.token(
            unknown, header={"kid": "no-such-kid", "jku": "http://127.0.0.1:1/jwks.json"})),
        # Claims
        "expired": signed(exp=now - 120, iat=now - 420, nbf=now - 420),
        "not yet valid": signed(nbf=now + 600, iat=now + 600, exp=now + 900),
        "wrong issuer": signed(iss="https://evil.example"),
        "issuer with a trailing slash": signed(iss=forger.auth.settings.issuer + "/"),
        "no exp": signed(exp=DROP),
        "exp as a string": signed(exp=str(now + 300)),
        "exp a year away (beyond the issuer's lifetime)": signed(exp=now + 365 * 86400),
        "lifetime one minute over the issuer's": signed(exp=now + ttl + 60),
        "no iat": signed(iat=DROP),
        "no iat, exp a year away": signed(iat=DROP, nbf=DROP, exp=now + 365 * 86400),
        "issued in the past, lifetime over the issuer's": signed(
            iat=now - 3600, nbf=now - 3600, exp=now + 300),
        # The token type (RFC 9068 §4)
        "typ JWT": signed({"typ": "JWT"}),
        "no typ": signed({"typ": DROP}),
    }
    forbidden: dict[str, dict[str, Any]] = {
        "wrong audience": signed(aud="other-api"),
        "audience list without ours": signed(aud=["other-api", "billing-api"]),
    }
    return ({case: (options, 401) for case, options in unauthenticated.items()}
            | {case: (options, 403) for case, options in forbidden.items()})


async def test_bad_tokens_are_refused_with_json(
        envoy: EnvoyProcess, gateway_auth: RunningAuth, partner: Partner) -> None:
    forger = Forger(gateway_auth, partner.client_id)
    cases = bad_cases(forger)
    assert len(cases) >= 25
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{envoy.port}") as http:
        for case, (options, expected) in cases.items():
            response = await http.get("/v1/orders", **options)
            body = response.json() if response.headers.get("content-type") == (
                "application/json") else None
            code = {401: 16, 403: 7}[expected]
            if (response.status_code != expected or body is None or body.get("code") != code
                    or "orders" in body
                    or (expected == 401
                        and not response.headers.get("www-authenticate", "").startswith(
                            "Bearer"))):
                wrong.append(f"{case}: {response.status_code} {response.text[:120]}")
    assert wrong == [], "\n".join(wrong)


async def test_the_header_shapes_the_rfcs_allow_are_accepted(
        envoy: EnvoyProcess, gateway_auth: RunningAuth, partner: Partner) -> None:
    # RFC 7235 §2.1: the auth scheme is case-insensitive; RFC 6750 §2.1: `Bearer 1*SP b64token`.
    # The gateway normalises the scheme before jwt_authn, which would match `Bearer ` only.
    forger = Forger(gateway_auth, partner.client_id)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{envoy.port}") as http:
        for header in ("Bearer {}", "bearer {}", "BEARER {}", "Bearer   {}"):
            response = await http.get("/v1/orders", headers={
                "authorization": header.format(forger.token())})
            assert response.status_code == 200, (header, response.text)
        # The audience may be a list that includes ours (RFC 7519 §4.1.3).
        listed = await http.get("/v1/orders", headers={"authorization": "Bearer " + forger.token(
            aud=["billing-api", gateway_auth.settings.audience])})
        assert listed.status_code == 200, listed.text


async def test_a_token_in_the_url_is_not_served(partner: Partner, stack: Stack) -> None:
    # The query-string token is ignored outright: with no Authorization header the request is
    # 401, and with one the parameter is an unknown query parameter (the transcoder's 400), so
    # no URL-borne token is ever honoured.
    anonymous = httpx.AsyncClient(base_url=str(partner.http.base_url))
    async with anonymous:
        alone = await anonymous.get("/v1/orders", params={"access_token": partner.token})
    assert alone.status_code == 401 and alone.json()["code"] == 16, alone.text
    assert alone.json()["details"][0]["reason"] == "TOKEN_MISSING", alone.text
    both = await partner.http.get("/v1/orders", params={"access_token": partner.token})
    assert both.status_code == 400, both.text
    # The audit trail, which can never be edited, does not keep the token either.
    ids = {alone.headers["x-request-id"], both.headers["x-request-id"]}
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        store = AuditStore(engine)

        async def recorded() -> list[dict[str, Any]]:
            return [r for r in await store.records() if r.get("request_id") in ids]

        records = await eventually(recorded, until=lambda found: len(found) == 2)
    finally:
        await engine.dispose()
    assert {r["path"] for r in records} == {"/v1/orders?access_token=REDACTED"}


async def test_injected_identity_headers_do_not_change_who_calls(partner_factory: Any) -> None:
    # The identity the services see comes from the verified token only: a caller's own
    # x-cartage-* headers are stripped before jwt_authn sets them.
    reader: Partner = await partner_factory(("orders.read",))
    victim: Partner = await partner_factory()
    forged = {"x-cartage-scopes": "orders.read orders.write", "x-cartage-client-id":
              victim.client_id, "x-cartage-tier": "internal"}
    elevated = await reader.http.post("/v1/orders", json=order_json(), headers=forged)
    assert elevated.status_code == 403 and elevated.json()["code"] == 7, elevated.text
    theirs = (await victim.http.post("/v1/orders", json=order_json())).json()["name"]
    as_victim = await reader.http.get(f"/v1/{theirs}", headers=forged)
    assert as_victim.status_code == 404, as_victim.text
