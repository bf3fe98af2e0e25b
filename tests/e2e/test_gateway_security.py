"""Who gets in: tokens, scopes, IP allowlists, rate limits, key rotation, native gRPC."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import grpc
import httpx
import pytest
from joserfc import jwk, jwt

from cartage.order.v1 import order_service_pb2, order_service_pb2_grpc
from gateway.auth.clients import ClientRegistry
from tests.e2e.conftest import Partner
from tests.e2e.harness import EnvoyProcess, RunningAuth
from tests.support import eventually, sample_order

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]


def forge(auth: RunningAuth, key: jwk.RSAKey | None = None, **changes: Any) -> str:
    """A token like the server's, with `changes` to its claims, signed by `key` (default: the
    server's real signing key)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": auth.settings.issuer, "sub": "forger", "aud": auth.settings.audience,
        "client_id": "forger", "iat": now, "nbf": now, "exp": now + 300, "jti": "j",
        "scope": "orders.read orders.write", "tier": "standard"}
    claims.update(changes)
    real = auth.server.keys.signing_key
    signer = key or real
    header = {"alg": "RS256", "typ": "at+jwt", "kid": real.kid}
    return jwt.encode(header, claims, signer, algorithms=["RS256"])


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_bad_tokens_are_401_json(envoy: EnvoyProcess, gateway_auth: RunningAuth,
                                       partner: Partner) -> None:
    now = int(time.time())
    me = {"client_id": partner.client_id, "sub": partner.client_id}
    stranger = jwk.RSAKey.generate_key(2048, parameters={"kid": "x"})
    unsigned = (b64({"alg": "none", "typ": "at+jwt", "kid": gateway_auth.server.keys
                     .signing_key.kid})
                + "." + b64({"iss": gateway_auth.settings.issuer, "sub": "x",
                             "aud": gateway_auth.settings.audience, "exp": now + 300,
                             "scope": "orders.read"}) + ".")
    cases = {
        "missing": None,
        "garbage": "not-a-jwt",
        "expired": forge(gateway_auth, exp=now - 120, iat=now - 720, nbf=now - 720),
        "not yet valid": forge(gateway_auth, nbf=now + 600),
        "bad signature": forge(gateway_auth, key=stranger),
        "alg none": unsigned,
        "wrong issuer": forge(gateway_auth, iss="https://evil.example"),
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{envoy.port}") as http:
        for case, token in cases.items():
            headers = {"authorization": f"Bearer {token}"} if token else {}
            response = await http.get("/v1/orders", headers=headers)
            assert response.status_code == 401, (case, response.text)
            assert response.json()["code"] == 16, case
            assert response.headers["content-type"] == "application/json", case
            assert response.headers["www-authenticate"].startswith("Bearer"), case
        # A forged token that is valid in every way is accepted: the cases above fail for the
        # reason they name, not for something else.
        ok = await http.get("/v1/orders", headers={
            "authorization": f"Bearer {forge(gateway_auth, **me)}"})
        assert ok.status_code == 200, ok.text
        # A token for another audience is refused too (jwt_authn answers 403 for that).
        other = await http.get("/v1/orders", headers={
            "authorization": f"Bearer {forge(gateway_auth, aud='other-api', **me)}"})
        assert other.status_code == 403 and other.json()["code"] == 7


async def test_a_cached_token_is_still_refused_once_it_expires(
        envoy: EnvoyProcess, gateway_auth: RunningAuth, partner: Partner) -> None:
    # Envoy caches verified tokens (no signature check on a hit) but checks expiry on every
    # request: this token is inside the 30 s clock skew for a few more seconds only.
    now = int(time.time())
    token = forge(gateway_auth, client_id=partner.client_id, sub=partner.client_id,
                  exp=now - 25, iat=now - 625, nbf=now - 625, jti=f"short-{now}")
    headers = {"authorization": f"Bearer {token}"}
    hits_before = sum(envoy.counters("jwt_cache_hit").values())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{envoy.port}") as http:
        for _ in range(3):
            assert (await http.get("/v1/orders", headers=headers)).status_code == 200
        assert sum(envoy.counters("jwt_cache_hit").values()) >= hits_before + 2
        await asyncio.sleep(max(0.0, now + 5 + 1.2 - time.time()))
        expired = await http.get("/v1/orders", headers=headers)
        assert expired.status_code == 401, expired.text
        assert expired.json()["code"] == 16


async def test_ip_allowlist(partner_factory: Any) -> None:
    elsewhere = await partner_factory(ip_allow=("10.0.0.0/8", "192.168.1.7"))
    refused = await elsewhere.http.get("/v1/orders")
    assert refused.status_code == 403
    assert refused.json() == {"code": 7, "message": "client not allowed from this address",
                              "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                           "reason": "ADDRESS_NOT_ALLOWED",
                                           "domain": "cartage.io"}]}, refused.text
    here = await partner_factory(ip_allow=("10.0.0.0/8", "127.0.0.0/8"))
    assert (await here.http.get("/v1/orders")).status_code == 200


async def test_disabled_clients_and_revoked_tokens_are_403_within_seconds(
        partner_factory: Any, registry: ClientRegistry, gateway_auth: RunningAuth) -> None:
    doomed, revoker, bystander = (await partner_factory(), await partner_factory(),
                                  await partner_factory())
    for p in (doomed, revoker, bystander):
        assert (await p.http.get("/v1/orders")).status_code == 200
    await registry.set_enabled(doomed.client_id, False)
    async with httpx.AsyncClient(auth=(revoker.client_id, revoker.secret)) as oauth:
        revoked = await oauth.post(gateway_auth.url + "/oauth/revoke",
                                   data={"token": revoker.token})
        assert revoked.status_code == 200

    async def both_refused() -> bool:
        statuses = [(await p.http.get("/v1/orders")).status_code for p in (doomed, revoker)]
        return statuses == [403, 403]

    assert await eventually(both_refused, seconds=10, interval=0.3)
    refused = await doomed.http.get("/v1/orders")
    assert refused.json() == {"code": 7, "message": "client disabled or token revoked",
                              "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                           "reason": "ACCESS_REVOKED",
                                           "domain": "cartage.io"}]}
    assert (await bystander.http.get("/v1/orders")).status_code == 200


async def test_rate_limit_is_per_client_with_retry_after(partner_factory: Any) -> None:
    busy = await partner_factory(tier="premium")  # 3 calls a minute in the test config
    calm = await partner_factory(tier="premium")
    statuses = [(await busy.http.get("/v1/orders")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = await busy.http.get("/v1/orders")
    assert limited.status_code == 429, limited.text
    assert limited.json()["code"] == 8
    assert int(limited.headers["retry-after"]) >= 1
    assert (await calm.http.get("/v1/orders")).status_code == 200


async def test_native_grpc_on_the_same_listener_under_the_same_policy(
        envoy: EnvoyProcess, partner_factory: Any) -> None:
    writer = await partner_factory()
    reader = await partner_factory(("orders.read",))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{envoy.port}") as channel:
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        created = await stub.CreateOrder(
            order_service_pb2.CreateOrderRequest(order=sample_order()),
            metadata=(("authorization", f"Bearer {writer.token}"),
                      ("x-cartage-client-id", "someone-else")), timeout=10)
        fetched = await writer.http.get(f"/v1/{created.name}")
        assert fetched.status_code == 200  # created under the writer's own identity
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateOrder(
                order_service_pb2.CreateOrderRequest(order=sample_order()),
                metadata=(("authorization", f"Bearer {reader.token}"),), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.GetOrder(order_service_pb2.GetOrderRequest(name=created.name),
                                timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_key_rotation_under_continuous_requests_has_zero_failures(
        envoy: EnvoyProcess, gateway_auth: RunningAuth, partner: Partner) -> None:
    keys = gateway_auth.server.keys
    failures: list[str] = []
    done = asyncio.Event()
    calls = 0

    async def traffic() -> None:
        nonlocal calls
        async with httpx.AsyncClient(auth=(partner.client_id, partner.secret)) as oauth:
            while not done.is_set():
                token = (await oauth.post(gateway_auth.token_url, data={
                    "grant_type": "client_credentials"})).json()["access_token"]
                response = await partner.http.get(
                    "/v1/orders", headers={"authorization": f"Bearer {token}"})
                calls += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")

    worker = asyncio.create_task(traffic())
    kids = [keys.state()["active"]]
    for _ in range(2):
        # Rotation is allowed only once the next key has been published for a cache period
        # (2 s here); the extra second covers Envoy's refetch and our scheduling.
        await asyncio.sleep(3.0)
        kids.append(keys.rotate())
    await asyncio.sleep(1.0)
    done.set()
    await worker
    assert len(set(kids)) == 3
    assert calls > 10 and failures == [], failures[:3]
    # A token signed by the first key (now retired) is still honoured until it expires.
    assert kids[0] in keys.state()["retired"]
    assert (await partner.http.get("/v1/orders")).status_code == 200


