"""Opaque keyset page tokens (AIP-158).

A token carries the sort key of the last row returned and a fingerprint of the query it belongs
to (filter, order, caller). Keyset pagination keeps pages stable while rows are inserted and
costs the same on page 1,000 as on page 1; the fingerprint stops a token being replayed against
a different query, which would silently skip or repeat rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.kit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def clamp_page_size(page_size: int, *, default: int = DEFAULT_PAGE_SIZE,
                    maximum: int = MAX_PAGE_SIZE) -> int:
    if page_size < 0:
        raise InvalidArgument.single("page_size", "must not be negative")
    if page_size == 0:
        return default
    return min(page_size, maximum)


@dataclass(frozen=True, slots=True)
class PageToken:
    """The position after which the next page starts."""

    after: tuple[Any, ...]
    query: str

    def encode(self) -> str:
        raw = json.dumps({"a": list(self.after), "q": self.query}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, *, query: str) -> PageToken:
        """Parse a token produced for the same `query`; anything else is INVALID_ARGUMENT."""
        try:
            padded = token + "=" * (-len(token) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            after = tuple(data["a"])
            token_query = str(data["q"])
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument.single(
                "page_token", "is not a token this API issued"
            ) from None
        if token_query != query:
            raise InvalidArgument.single(
                "page_token", "belongs to a different filter or order_by; start from page one"
            )
        return cls(after, token_query)


def query_fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Keyset:
    """One page of a list request (`page_size`, `page_token`): its size, the sort key it starts
    after, and the fingerprint its next token carries. Ask the store for `fetch` rows: the one
    past `limit` says whether another page exists."""

    limit: int
    after: tuple[Any, ...] | None
    fingerprint: str

    @classmethod
    def of(cls, request: Any, *query: str, arity: int = 2,
           parse: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None) -> Keyset:
        """`query`: what the token is bound to (caller, filter, order). `parse` turns the
        token's JSON values back into the sort key's types (ValueError: not our token)."""
        limit = clamp_page_size(request.page_size)
        fingerprint = query_fingerprint(*query)
        after = None
        if request.page_token:
            after = PageToken.decode(request.page_token, query=fingerprint).after
            try:
                if len(after) != arity:
                    raise ValueError("wrong arity")
                if parse is not None:
                    after = parse(after)
            except (ValueError, TypeError, IndexError):
                raise InvalidArgument.single("page_token", "is not a token this API issued"
                                             ) from None
        return cls(limit, after, fingerprint)

    @property
    def fetch(self) -> int:
        return self.limit + 1

    def next_token(self, rows: Sequence[Any], key: Callable[[Any], tuple[Any, ...]]) -> str:
        """The token of the page after `rows` (as fetched), or "" on the last page."""
        if len(rows) <= self.limit:
            return ""
        return PageToken(key(rows[self.limit - 1]), self.fingerprint).encode()


def newest_key(row: Any) -> tuple[str, str]:
    """The usual sort key: create time, then id (as the token stores them)."""
    return (row.create_time.isoformat(), row.id)


def time_and_id(after: tuple[Any, ...]) -> tuple[datetime, str]:
    """`parse` for a `newest_key` token."""
    return (datetime.fromisoformat(str(after[0])), str(after[1]))
