"""A partner's webhook receiver on 127.0.0.1 for tests: it verifies every request with the
reference `standardwebhooks` package (not our signing code) and answers as told (2xx, 500, 410,
slow, Retry-After), recording what it received."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    path: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


# What to answer: (status, extra headers, delay in seconds).
Answer = tuple[int, dict[str, str], float]


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    answer: Callable[[Received], Answer] = lambda _r: (200, {}, 0.0)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def verify(self, headers: dict[str, str], body: bytes, secret: str) -> bool:
        try:
            Webhook(secret).verify(body, headers)
            return True
        except WebhookVerificationError:
            return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                _method, path, _version = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                verified = bool(self.secrets) and all(
                    self.verify(headers, body, s) for s in self.secrets)
                item = Received(headers, body, verified, path)
                self.received.append(item)
                status, extra, delay = self.answer(item)
                if delay:
                    await asyncio.sleep(delay)
                reply = b'{"ok":true}'
                head = [f"HTTP/1.1 {status} X", f"content-length: {len(reply)}",
                        *(f"{k}: {v}" for k, v in extra.items())]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
