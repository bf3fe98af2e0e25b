"""Idempotent operations (AIP-155 `request_id`, the gateway's `Idempotency-Key`).

`idempotent()` runs an operation at most once per idempotency key, in one of two ways:

- `reads=True` (read-modify-write verbs such as cancel): BEGIN; `claim` takes a
  transaction-scoped advisory lock on the key (ABORTED if another transaction holds it) and
  looks for a stored response; the work; the folded write with the key row; COMMIT.
- `reads=False` (pure inserts such as CreateOrder): the work runs first (it only builds rows),
  then ONE autocommit statement takes the lock, looks for a stored response and performs the
  inserts only if the lock was free and no response was stored. One round trip instead of five,
  sent straight on asyncpg (`db.DirectStatements`: SQLAlchemy's per-statement machinery
  costs more CPU than the insert).

Either way a repeat returns the stored response, a different payload under the same key is
refused, and an overlapping repeat gets ABORTED. The key row is written in the same statement
as the work, and its primary key is the last line of defence: a repeat that slips between
another's snapshot and commit fails on it and is retried once, which then finds the response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError

from services.kit.db import constraint_name
from services.kit.errors import Aborted, FieldViolation, InvalidArgument
from services.kit.metrics import IDEMPOTENCY_REPLAYS

if TYPE_CHECKING:  # the unit of work imports this module for the key and its errors
    from services.kit.uow import Transaction, UnitOfWork

T = TypeVar("T")
IDEMPOTENCY_PK = "idempotency_keys_pkey"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's request key (AIP-155 `request_id` / `Idempotency-Key`) for one method.

    `fingerprint` identifies the request's content, so the same key with a different payload
    can be refused rather than silently answered with the first response."""

    scope: str
    key: str
    fingerprint: bytes

    @classmethod
    def of(cls, client_id: str, method: str, key: str, payload: bytes) -> IdempotencyKey:
        if len(key) > 100:
            raise InvalidArgument.single("request_id", "must be at most 100 characters")
        return cls(f"{client_id}/{method}", key, hashlib.sha256(payload).digest())

    @property
    def lock_id(self) -> str:
        return f"{self.scope}/{self.key}"


class IdempotencyConflict(InvalidArgument):
    default_reason = "IDEMPOTENCY_KEY_REUSED"


class RequestInFlight(Aborted):
    default_reason = "REQUEST_IN_FLIGHT"


def conflict() -> IdempotencyConflict:
    return IdempotencyConflict(
        "this request_id was already used with a different request",
        violations=[FieldViolation("request_id",
                                   "was already used with a different request; use a new key",
                                   "IDEMPOTENCY_KEY_REUSED")],
    )


def in_flight() -> RequestInFlight:
    return RequestInFlight("a request with this request_id is still being processed; "
                           "retry shortly")


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    """How an idempotent operation's result is stored and replayed (usually protobuf bytes)."""

    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]


async def idempotent(
    uow: UnitOfWork,
    key: IdempotencyKey | None,
    codec: Codec[T],
    work: Callable[[Transaction], Awaitable[T]],
    *,
    request_id: str = "",
    reads: bool = True,
) -> T:
    """Run `work` in a transaction at most once per key: a repeat gets the stored result.
    `reads=False` promises that `work` only queues single-row inserts and events, which allows
    the one-statement path described in the module docstring."""
    if reads:
        async with uow.transaction(request_id) as tx:
            if key is not None:
                stored = await tx.claim(key)
                if stored is not None:
                    _replayed(key)
                    return codec.decode(stored)
            result = await work(tx)
            if key is not None:
                tx.remember(key, codec.encode(result))
        return result
    for attempt in (1, 2):
        try:
            async with uow.transaction(request_id, single_statement=True) as tx:
                result = await work(tx)
                if key is not None:
                    tx.remember(key, codec.encode(result))
                    tx.gate_on(key)
        except IntegrityError as error:
            if attempt == 1 and constraint_name(error) == IDEMPOTENCY_PK:
                continue  # an identical request committed under our feet: replay it
            raise
        guard = tx.guard
        if not guard.got_lock:
            raise in_flight()
        if guard.prior_hash is not None:
            if key is None or bytes(guard.prior_hash) != key.fingerprint:
                raise conflict()
            _replayed(key)
            return codec.decode(bytes(guard.prior_response or b""))
        return result
    raise AssertionError("unreachable")


def _replayed(key: IdempotencyKey) -> None:
    IDEMPOTENCY_REPLAYS.labels(key.scope.split("/", 1)[-1]).inc()


def request_key(client_id: str, idempotency_header: str, method: str, request: Any
                ) -> IdempotencyKey | None:
    """The key of a request message: its `request_id` field (AIP-155), else the
    Idempotency-Key header the gateway forwards. The fingerprint is the request without its
    key, serialized deterministically."""
    key = getattr(request, "request_id", "") or idempotency_header
    if not key:
        return None
    fingerprint = type(request)()
    fingerprint.CopyFrom(request)
    if "request_id" in request.DESCRIPTOR.fields_by_name:
        fingerprint.request_id = ""
    return IdempotencyKey.of(client_id, method, key,
                             fingerprint.SerializeToString(deterministic=True))
