"""Partner webhooks' outbound I/O: secrets at rest (Fernet), resolving and checking a
receiver's address (the SSRF guard), and the HTTP POST itself.

The guard resolves the host once, refuses the request if ANY address it resolves to is not
allowed (`domain.webhooks.address_problem`), and then connects to the checked address itself
(the URL's host becomes the address; `Host` and, for https, SNI and certificate checks keep the
name), so a second lookup answered differently (DNS rebinding) cannot slip past. Redirects are
never followed.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.tracking.domain.webhooks import Target, address_problem, literal_address

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
TOTAL_TIMEOUT_S = 15.0
MAX_RESPONSE_BYTES = 64 * 1024


class Cipher:
    """Encrypts signing secrets for the database (Fernet: AES-128-CBC + HMAC-SHA256)."""

    def __init__(self, key: str) -> None:
        # The setting is any high-entropy string (a deployment secret); HKDF makes the Fernet
        # key from it, so a rotation of the setting is a new key, never a weaker one.
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=b"cartage webhook secrets v1").derive(key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(sealed)).decode()
        except InvalidToken:
            raise RuntimeError("a webhook secret does not decrypt with "
                               "TRACKING_WEBHOOK_SECRET_KEY (was the key changed?)") from None


class Refused(ValueError):
    """The receiver's address is not allowed; nothing was sent."""


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


async def resolve_checked(target: Target, *, allow_loopback: bool,
                          resolver: Resolver = system_resolver) -> str:
    """The address to connect to, after checking every address the host resolves to."""
    literal = literal_address(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = await resolver(target.host, target.port)
        except socket.gaierror as exc:
            raise Refused(f"{target.host} does not resolve: {exc.strerror}") from None
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
        if not addresses:
            raise Refused(f"{target.host} does not resolve")
    for address in addresses:
        problem = address_problem(address, allow_loopback=allow_loopback)
        if problem is not None:
            raise Refused(f"{target.host} resolves to {address}, which {problem}")
    return str(addresses[0])


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: no HTTP answer
    latency_s: float
    excerpt: str
    retry_after: str | None = None


class Sender:
    def __init__(self, *, allow_loopback: bool, resolver: Resolver = system_resolver,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._allow_loopback = allow_loopback
        self._resolver = resolver
        self._client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, transport=transport,
            timeout=httpx.Timeout(TOTAL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, target: Target, headers: dict[str, str], body: bytes) -> Answer:
        started = time.monotonic()
        try:
            address = await resolve_checked(target, allow_loopback=self._allow_loopback,
                                            resolver=self._resolver)
        except Refused as exc:
            return Answer(0, time.monotonic() - started, f"refused: {exc}")
        host = f"[{address}]" if ":" in address else address
        default = 443 if target.scheme == "https" else 80
        netloc = target.host if target.port == default else f"{target.host}:{target.port}"
        url = f"{target.scheme}://{host}:{target.port}{target.path}"
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self._client.build_request(
            "POST", url, content=body, extensions=extensions,
            headers={**headers, "host": netloc, "content-type": "application/json",
                     "user-agent": "Cartage-Webhooks/1"})
        try:
            async with asyncio.timeout(TOTAL_TIMEOUT_S):
                response = await self._client.send(request, stream=True)
                try:
                    data = bytearray()
                    async for chunk in response.aiter_raw():
                        data += chunk
                        if len(data) >= MAX_RESPONSE_BYTES:
                            break
                finally:
                    await response.aclose()
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return Answer(0, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:1024])
        return Answer(response.status_code, time.monotonic() - started,
                      bytes(data[:1024]).decode("utf-8", "replace"),
                      response.headers.get("retry-after"))
