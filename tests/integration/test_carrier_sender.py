"""HttpTenderSender against the test carrier on 127.0.0.1, and refusing every address it must
never send to, before any connection. (These tests open loopback sockets; nothing else.)"""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from services.carrier.channels.http_api import MAX_BODY, answer_body
from services.carrier.channels.model import (
    CarrierUnavailable,
    ChannelError,
    TenderResponse,
    UnsafeDestination,
)
from services.carrier.channels.sender import HttpTenderSender
from tests.carrier_server import Behaviour, CallbackReceiver, TestCarrier
from tests.unit.carrier_channels.samples import DOCUMENT


def _tender(tender_id: str):
    return dataclasses.replace(DOCUMENT, tender_id=tender_id)


async def test_an_accepting_carrier_books_at_once() -> None:
    async with TestCarrier(scac="ABCD") as carrier:
        sender = HttpTenderSender(carrier.url, timeout_s=5)
        try:
            answer = await sender.offer(_tender("T-ACC"))
        finally:
            await sender.aclose()
    assert answer is not None and answer.accepted and answer.tender_id == "T-ACC"
    request = carrier.received[0]
    assert request.path == "/tenders"
    assert request.headers["idempotency-key"] == "T-ACC"
    assert request.headers["host"] == carrier.url.removeprefix("http://")
    assert request.json()["offer"] == {"amount": "1250.00", "currency": "EUR"}


async def test_a_rejecting_carrier_gives_its_reason() -> None:
    async with TestCarrier() as carrier:
        carrier.plan("T-REJ", Behaviour.REJECT, reason_code="RATE_TOO_LOW", reason="too cheap")
        sender = HttpTenderSender(carrier.url)
        answer = await sender.offer(_tender("T-REJ"))
        await sender.aclose()
    assert answer is not None and not answer.accepted
    assert (answer.reason_code, answer.reason) == ("RATE_TOO_LOW", "too cheap")


async def test_a_silent_carrier_is_no_answer_yet() -> None:
    async with TestCarrier(default=Behaviour.SILENT) as carrier:
        sender = HttpTenderSender(carrier.url)
        assert await sender.offer(_tender("T-SIL")) is None
        await sender.aclose()
    assert len(carrier.received) == 1


async def test_a_later_answer_arrives_by_callback() -> None:
    async with CallbackReceiver() as receiver, TestCarrier(default=Behaviour.LATER) as carrier:
        sender = HttpTenderSender(carrier.url)
        assert await sender.offer(_tender("T-LATER"), callback_url=receiver.url) is None
        await sender.aclose()
        assert carrier.received[0].json()["callback_url"] == receiver.url
        status = await carrier.send_callback("T-LATER", accepted=False,
                                             reason_code="LANE_NOT_SERVED")
        await receiver.wait()
    assert status == 204
    [answer] = receiver.answers
    assert (answer.tender_id, answer.accepted, answer.reason_code) == (
        "T-LATER", False, "LANE_NOT_SERVED")


async def test_a_failing_carrier_is_unavailable() -> None:
    async with TestCarrier(default=Behaviour.ERROR) as carrier:
        sender = HttpTenderSender(carrier.url)
        with pytest.raises(CarrierUnavailable, match="500"):
            await sender.offer(_tender("T-500"))
        await sender.aclose()


async def test_a_slow_carrier_times_out() -> None:
    async with TestCarrier(default=Behaviour.SLOW, slow_s=2.0) as carrier:
        sender = HttpTenderSender(carrier.url, timeout_s=0.3)
        with pytest.raises(CarrierUnavailable, match=r"no answer within 0\.3 s"):
            await sender.offer(_tender("T-SLOW"))
        await sender.aclose()


async def test_a_carrier_that_is_not_there_is_unavailable() -> None:
    async with TestCarrier() as carrier:
        url = carrier.url
    sender = HttpTenderSender(url)  # the port is closed now
    with pytest.raises(CarrierUnavailable, match="unreachable"):
        await sender.offer(_tender("T-GONE"))
    await sender.aclose()


# --- addresses we never send to -----------------------------------------------------------------


class _NoNetwork:
    """A transport and a resolver that record any use; the refusal tests assert none."""

    def __init__(self, addresses: list[str] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.lookups: list[str] = []
        self.addresses = addresses or []
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(202)

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.addresses


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/api", "http://172.16.5.4", "http://192.168.1.10:8080",
    "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/", "http://[fd00::1]/",
    "http://0.0.0.0:80", "http://224.0.0.1", "http://[::ffff:10.0.0.1]/",
    "http://100.64.0.1", "http://8.8.8.8",  # public: refused unless allow_public
])
async def test_a_non_loopback_address_is_refused_without_a_connection(url: str) -> None:
    network = _NoNetwork()
    sender = HttpTenderSender(url, client=network.client, resolver=network.resolve)
    with pytest.raises(UnsafeDestination):
        await sender.offer(_tender("T-X"))
    assert network.requests == []


@pytest.mark.parametrize("addresses", [
    ["10.1.2.3"], ["169.254.169.254"], ["127.0.0.1", "10.0.0.5"], ["::1", "fe80::1%eth0"],
])
async def test_a_hostname_resolving_elsewhere_is_refused(addresses: list[str]) -> None:
    network = _NoNetwork(addresses)
    sender = HttpTenderSender("https://carrier.example:8443", client=network.client,
                              resolver=network.resolve)
    with pytest.raises(UnsafeDestination, match=r"carrier\.example resolves to"):
        await sender.offer(_tender("T-DNS"))
    assert network.lookups == ["carrier.example"]
    assert network.requests == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://10.0.0.1", "http://[::1]:1"])
async def test_allow_public_still_refuses_loopback_and_private(url: str) -> None:
    network = _NoNetwork()
    sender = HttpTenderSender(url, client=network.client, allow_public=True)
    with pytest.raises(UnsafeDestination):
        await sender.offer(_tender("T-PUB"))
    assert network.requests == []


async def test_the_connection_goes_to_the_checked_address_under_the_original_name() -> None:
    """No second lookup can swap the address: the request URL holds the checked IP."""
    network = _NoNetwork(["127.0.0.1"])
    sender = HttpTenderSender("http://carrier.test:8081/api/", client=network.client,
                              resolver=network.resolve)
    assert await sender.offer(_tender("T-PIN")) is None
    [request] = network.requests
    assert str(request.url) == "http://127.0.0.1:8081/api/tenders"
    assert request.headers["host"] == "carrier.test:8081"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/", "http://u:p@127.0.0.1/",
                                 "127.0.0.1:8080"])
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        HttpTenderSender(url)


async def test_allow_public_lets_a_global_address_through() -> None:
    """(The mock transport answers; nothing leaves the machine.)"""
    network = _NoNetwork(["203.0.113.10", "8.8.4.4"])
    sender = HttpTenderSender("https://carrier.example", client=network.client,
                              resolver=network.resolve, allow_public=True)
    with pytest.raises(UnsafeDestination, match=r"203\.0\.113\.10"):  # TEST-NET-3: not global
        await sender.offer(_tender("T-PUB"))
    network.addresses = ["8.8.4.4"]
    assert await sender.offer(_tender("T-PUB")) is None
    [request] = network.requests
    assert request.url.host == "8.8.4.4" and request.headers["host"] == "carrier.example"
    assert request.extensions["sni_hostname"] == "carrier.example"


def _answering(body: bytes, status: int = 200) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(
        lambda request: httpx.Response(status, content=body)))


async def test_an_answer_for_another_tender_is_refused() -> None:
    other = TenderResponse("T-OTHER", "ABCD", True, None, None, None)
    sender = HttpTenderSender("http://127.0.0.1:9", client=_answering(answer_body(other)))
    with pytest.raises(ChannelError, match="another tender"):
        await sender.offer(_tender("T-MINE"))


async def test_an_endless_answer_is_cut_off() -> None:
    sender = HttpTenderSender("http://127.0.0.1:9",
                              client=_answering(b"{" + b" " * (2 * MAX_BODY) + b"}"))
    with pytest.raises(ChannelError, match="larger than"):
        await sender.offer(_tender("T-BIG"))


async def test_a_redirect_is_not_followed() -> None:
    sender = HttpTenderSender("http://127.0.0.1:9", client=httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(
            307, headers={"location": "http://169.254.169.254/"}))))
    with pytest.raises(ChannelError, match="redirected the offer"):
        await sender.offer(_tender("T-REDIR"))
