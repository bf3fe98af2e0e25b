"""A test carrier on 127.0.0.1: answers each tender as the test tells it, records every request,
and can POST the callback a real carrier would send later.

    async with TestCarrier(scac="ABCD") as carrier:
        carrier.plan("TND1", Behaviour.REJECT, reason_code="NO_CAPACITY")
        sender = HttpTenderSender(carrier.url)
        ...
        await carrier.send_callback("TND2", accepted=True)   # a tender it answered 202 to

Behaviours: ACCEPT / REJECT answer at once (200); LATER answers 202 and waits for
`send_callback`; SILENT answers 202 and never calls back; ERROR answers 500; SLOW waits
`slow_s` before accepting (longer than the sender's timeout in the timeout test).
"""

from __future__ import annotations

import asyncio
import enum
import json
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.carrier.channels import http_api
from services.carrier.channels.model import ChannelError, TenderResponse


class Behaviour(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    LATER = "later"
    SILENT = "silent"
    ERROR = "error"
    SLOW = "slow"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Plan:
    behaviour: Behaviour
    reason_code: str | None = None
    reason: str | None = None


@dataclass
class _Server:
    app: Starlette
    sock: socket.socket = field(init=False)
    server: uvicorn.Server = field(init=False)
    task: asyncio.Task[None] = field(init=False)

    async def start(self) -> int:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(self.app, lifespan="off", log_level="warning",
                                access_log=False, timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        for _ in range(1000):  # up to 10 s on a busy machine
            if self.server.started:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("test server did not start")
        return int(self.sock.getsockname()[1])

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)
        self.sock.close()


class TestCarrier:
    __test__ = False  # not a pytest test class

    def __init__(self, *, scac: str = "ABCD", default: Behaviour = Behaviour.ACCEPT,
                 slow_s: float = 2.0) -> None:
        self.scac, self.default, self.slow_s = scac, default, slow_s
        self.received: list[Received] = []
        self._plans: dict[str, _Plan] = {}
        self._callbacks: dict[str, str] = {}  # tender id -> callback_url from the offer
        self._server = _Server(Starlette(routes=[
            Route(http_api.OFFER_PATH, self._offer, methods=["POST"]),
        ]))
        self.url = ""

    def plan(self, tender_id: str, behaviour: Behaviour, *, reason_code: str | None = None,
             reason: str | None = None) -> None:
        self._plans[tender_id] = _Plan(behaviour, reason_code, reason)

    async def __aenter__(self) -> TestCarrier:
        self.url = f"http://127.0.0.1:{await self._server.start()}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.stop()

    def _answer(self, tender_id: str, accepted: bool, plan: _Plan) -> TenderResponse:
        return TenderResponse(tender_id, self.scac, accepted,
                              None if accepted else plan.reason_code or "NO_CAPACITY",
                              None if accepted else plan.reason,
                              datetime.now(UTC).replace(microsecond=0))

    async def _offer(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Received(request.url.path, dict(request.headers), body))
        offer = json.loads(body)
        tender_id = offer["tender_id"]
        if offer.get("callback_url"):
            self._callbacks[tender_id] = offer["callback_url"]
        plan = self._plans.get(tender_id, _Plan(self.default))
        match plan.behaviour:
            case Behaviour.ERROR:
                return JSONResponse({"error": "internal"}, status_code=500)
            case Behaviour.LATER | Behaviour.SILENT:
                return Response(status_code=202)
            case Behaviour.SLOW:
                await asyncio.sleep(self.slow_s)
        answer = self._answer(tender_id, plan.behaviour is not Behaviour.REJECT, plan)
        return Response(http_api.answer_body(answer), media_type="application/json")

    async def send_callback(self, tender_id: str, *, accepted: bool,
                            reason_code: str | None = None, reason: str | None = None,
                            url: str | None = None) -> int:
        """POST the answer to the offer's callback_url (or `url`); returns the HTTP status."""
        target = url or self._callbacks[tender_id]
        answer = self._answer(tender_id, accepted, _Plan(Behaviour.LATER, reason_code, reason))
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.post(target, content=http_api.answer_body(answer),
                                         headers={"content-type": "application/json"})
        return response.status_code


class CallbackReceiver:
    """Stands in for the carrier service's callback endpoint: parses what arrives, strictly."""

    __test__ = False

    def __init__(self) -> None:
        self.answers: list[TenderResponse] = []
        self.errors: list[str] = []
        self._arrived = asyncio.Event()
        self._server = _Server(Starlette(routes=[
            Route("/callbacks/tenders", self._callback, methods=["POST"]),
        ]))
        self.url = ""

    async def __aenter__(self) -> CallbackReceiver:
        port = await self._server.start()
        self.url = f"http://127.0.0.1:{port}/callbacks/tenders"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.stop()

    async def _callback(self, request: Request) -> Response:
        try:
            self.answers.append(http_api.parse_callback(await request.body()))
        except ChannelError as error:
            self.errors.append(str(error))
            return JSONResponse({"error": str(error)}, status_code=400)
        finally:
            self._arrived.set()
        return Response(status_code=204)

    async def wait(self, timeout_s: float = 5.0) -> None:
        await asyncio.wait_for(self._arrived.wait(), timeout_s)
