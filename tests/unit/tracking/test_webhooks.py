"""Partner webhooks' pure rules and the sender's SSRF guard (no network: a fake resolver and
httpx's MockTransport, which counts any request that would have left)."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from services.tracking.adapters.webhook_sender import Sender
from services.tracking.domain import webhooks as rules


def test_our_signature_verifies_with_the_reference_package() -> None:
    secret, body = rules.new_secret(), b'{"type":"order.created"}'
    assert len(rules.secret_key(secret)) == 32
    import time

    ts = int(time.time())
    header = rules.signature_header([rules.new_secret(), secret], "msg_1", ts, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": header}
    Webhook(secret).verify(body, headers)  # raises if no signature matches
    with pytest.raises(Exception):  # noqa: B017 - any verification error
        Webhook(rules.new_secret()).verify(body, headers)


@pytest.mark.parametrize(("patterns", "event_type", "expected"), [
    (["order.*"], "order.created", True), (["order.created"], "order.created", True),
    (["order.*"], "route.planned", False), (["order.created"], "order.updated", False),
    (["route.*", "order.*"], "order.cancelled", True), ([], "order.created", False),
])
def test_matching(patterns: list[str], event_type: str, expected: bool) -> None:
    assert rules.matches(patterns, event_type) is expected


def test_schedule_retry_after_and_exhaustion() -> None:
    assert [rules.delay_before(i, 1.0) for i in range(8)] == list(rules.SCHEDULE_S)
    assert rules.delay_before(8, 1.0) is None
    assert rules.delay_before(1, 1.0, retry_after=60) == 60  # postpones
    assert rules.delay_before(2, 1.0, retry_after=1) == 300  # never hurries
    assert rules.delay_before(1, 1.0, retry_after=10 ** 9) == rules.MAX_RETRY_AFTER_S


@pytest.mark.parametrize(("host", "address"), [
    ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("[::1]", "::1"), ("10.0.0.1", "10.0.0.1"),
    ("example.com", None),
])
def test_literal_forms(host: str, address: str | None) -> None:
    found = rules.literal_address(host)
    assert (None if found is None else str(found)) == address


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1",
                                     "100.64.0.1", "0.0.0.0", "fd00::1", "224.0.0.1",
                                     "127.0.0.1", "::1", "8.8.8.8"])
def test_production_refuses_everything_but_public(address: str) -> None:
    problem = rules.address_problem(ipaddress.ip_address(address), allow_loopback=False)
    assert (problem is None) is (address == "8.8.8.8")


def test_loopback_mode_allows_loopback_only() -> None:
    allowed = [a for a in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "8.8.8.8", "10.0.0.1")
               if rules.address_problem(ipaddress.ip_address(a), allow_loopback=True) is None]
    assert allowed == ["127.0.0.1", "::1", "::ffff:127.0.0.1"]


async def test_a_name_resolving_to_a_private_address_is_refused_before_connecting() -> None:
    sent: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"))

    async def resolver(host: str, port: int) -> list[str]:
        return {"partner.example": ["10.0.0.5"], "mixed.example": ["127.0.0.1", "169.254.1.1"],
                "ok.example": ["127.0.0.1"]}[host]

    sender = Sender(allow_loopback=True, resolver=resolver,
                    transport=httpx.MockTransport(transport))
    for host in ("partner.example", "mixed.example"):
        target, _ = rules.url_problem(f"http://{host}:8080/h", allow_http=True)
        answer = await sender.post(target, {}, b"{}")
        assert answer.status == 0 and answer.excerpt.startswith("refused:"), answer
    assert sent == []  # nothing left
    # A name that resolves to an allowed address is connected to AT that address.
    target, _ = rules.url_problem("http://ok.example:8080/h?x=1", allow_http=True)
    answer = await sender.post(target, {}, b"{}")
    assert answer.status == 200
    assert str(sent[0].url) == "http://127.0.0.1:8080/h?x=1"
    assert sent[0].headers["host"] == "ok.example:8080"
    await sender.close()


async def test_redirects_are_not_followed() -> None:
    sent: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(307, headers={"location": "http://169.254.169.254/"},
                              stream=httpx.ByteStream(b""))

    sender = Sender(allow_loopback=True, transport=httpx.MockTransport(transport))
    target, _ = rules.url_problem("http://127.0.0.1:9/h", allow_http=True)
    answer = await sender.post(target, {}, b"{}")
    assert answer.status == 307 and len(sent) == 1
    await sender.close()


def test_the_readmes_event_catalogue_is_the_contracts() -> None:
    import re
    from pathlib import Path

    from services.tracking.adapters.webhook_payloads import event_types

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = readme.split("<!-- webhook-event-types:start -->")[1].split(
        "<!-- webhook-event-types:end -->")[0]
    assert re.findall(r"`([a-z_.]+)`", block) == event_types()
