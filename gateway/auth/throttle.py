"""Bounds on client authentication, the authorization server's expensive step.

Every token, introspection and revocation request authenticates its client with an argon2
verification (tens of ms of CPU, on purpose). Without bounds, anyone who can reach the token
endpoint can guess secrets as fast as the CPU allows and starve the rest of the machine. So:

- successful authentications per client id (`client_rate`): a client that asks for tokens in
  a loop gets 429 before any hashing. Failures do not count here: if they did, anyone who
  knows a client id could lock that partner out by failing in its name;
- failed attempts per source address (`failure_rate`): guessing secrets (one client's or many
  clients') from one address is cut off; a legitimate client rarely fails at all. Guessing from
  many addresses is held to the verification slots below, and a generated secret (256 bits)
  is out of reach of guessing anyway;
- verifications in flight (`concurrent_verifications`): floods from many addresses wait for a
  slot instead of taking every core, and beyond `MAX_WAITING` queued attempts the next ones are
  turned away at once (429, retry in a second) rather than piling up.

Counters live in this process (the `limits` library's moving windows in memory), so each
replica counts on its own. The source address is the TCP peer, or the X-Forwarded-For address
when the peer is a proxy listed in AUTH_TRUSTED_PROXIES (none by default).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

T = TypeVar("T")
MAX_WAITING = 64


class Throttled(Exception):
    def __init__(self, retry_after: int, description: str) -> None:
        super().__init__(description)
        self.retry_after = retry_after
        self.description = description


class AuthThrottle:
    def __init__(self, client_rate: str, failure_rate: str, concurrent: int) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_client = parse(client_rate)
        self._failures = parse(failure_rate)
        self._slots = asyncio.Semaphore(max(1, concurrent))
        self._waiting = 0

    async def verify(self, client_id: str, address: str,
                     check: Callable[[], Awaitable[T | None]]) -> T | None:
        """Run `check` (the secret verification; None = failed) within the bounds, or raise
        Throttled with the seconds until the next attempt can succeed."""
        if not await self._limiter.test(self._failures, "failed", address):
            raise Throttled(await self._retry_after(self._failures, "failed", address),
                            "too many failed client authentications from this address")
        if not await self._limiter.test(self._per_client, "client", client_id):
            raise Throttled(await self._retry_after(self._per_client, "client", client_id),
                            "too many authentications for this client")
        if self._waiting >= MAX_WAITING:
            raise Throttled(1, "the authorization server is busy; retry shortly")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            outcome = await check()
        finally:
            self._slots.release()
        if outcome is None:
            await self._limiter.hit(self._failures, "failed", address)
        else:
            await self._limiter.hit(self._per_client, "client", client_id)
        return outcome

    async def _retry_after(self, item: object, *key: str) -> int:
        stats = await self._limiter.get_window_stats(item, *key)  # type: ignore[arg-type]
        return max(1, math.ceil(stats.reset_time - time.time()))
