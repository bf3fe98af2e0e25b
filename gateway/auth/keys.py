"""Signing keys and their rotation.

A key goes through three states:

- **next**: published in the JWKS but not signing yet. Envoy caches the JWKS and does not refetch
  on an unknown `kid`, so a key must be visible for at least one cache period before it signs.
- **active**: signs new tokens (exactly one).
- **retired**: no longer signs, still published until the last token it signed has expired.

`rotate()` promotes next → active and active → retired, and generates a fresh next key. It
refuses to promote a key that has not been published for `publish_ahead` seconds, so a
too-eager rotation cannot produce tokens that Envoy rejects. Keys live only in memory and are
generated at run time (never committed); `export`/`restore` let the server keep them in its own
Postgres schema so that a restart does not swap keys under Envoy's JWKS cache.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from joserfc import jwk

ALGORITHM = "RS256"


class RotationTooEarly(RuntimeError):
    """The next key has not been published long enough for every JWKS cache to have it."""


@dataclass
class _Entry:
    key: jwk.RSAKey
    published_at: float
    retired_until: float | None = None  # set when the key retires

    @property
    def kid(self) -> str:
        return str(self.key.kid)


def _new_key() -> jwk.RSAKey:
    kid = uuid.uuid4().hex
    return jwk.RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM})


@dataclass
class KeyRing:
    """The authorization server's keys. `token_ttl` bounds how long a retired key stays."""

    token_ttl: float
    publish_ahead: float
    clock: Callable[[], float] = time.time
    _active: _Entry = field(init=False)
    _next: _Entry = field(init=False)
    _retired: list[_Entry] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        now = self.clock()
        # The first active key is published together with the JWKS itself: nothing can have
        # cached an older JWKS yet.
        self._active = _Entry(_new_key(), now - self.publish_ahead)
        self._next = _Entry(_new_key(), now)

    @property
    def signing_key(self) -> jwk.RSAKey:
        return self._active.key

    def rotate(self, *, force: bool = False) -> str:
        """Promote the next key; returns the new active kid."""
        now = self.clock()
        if not force and now - self._next.published_at < self.publish_ahead:
            raise RotationTooEarly(
                f"next key {self._next.kid} published {now - self._next.published_at:.0f}s ago,"
                f" needs {self.publish_ahead:.0f}s")
        # A token signed just before now may live token_ttl more; one second covers clock
        # rounding of iat/exp.
        self._active.retired_until = now + self.token_ttl + 1
        self._retired.append(self._active)
        self._active = self._next
        self._next = _Entry(_new_key(), now)
        return self._active.kid

    def _live_retired(self) -> list[_Entry]:
        now = self.clock()
        self._retired = [e for e in self._retired if (e.retired_until or 0) > now]
        return self._retired

    def published(self) -> list[jwk.RSAKey]:
        return [self._active.key, self._next.key, *(e.key for e in self._live_retired())]

    def jwks(self) -> dict[str, object]:
        """The public JWKS document (never private members)."""
        return {"keys": [k.as_dict(private=False) for k in self.published()]}

    def verification_keys(self) -> jwk.KeySet:
        """Keys that may have signed a still-valid token (next has signed nothing)."""
        return jwk.KeySet([self._active.key, *(e.key for e in self._live_retired())])

    def export(self) -> list[dict[str, object]]:
        """Rows for persistence (private keys included: the store must be protected)."""
        def row(entry: _Entry, state: str) -> dict[str, object]:
            return {"kid": entry.kid, "state": state,
                    "private_jwk": json.dumps(entry.key.as_dict(private=True)),
                    "published_at": entry.published_at, "retired_until": entry.retired_until}

        return [row(self._active, "active"), row(self._next, "next"),
                *(row(e, "retired") for e in self._live_retired())]

    @classmethod
    def restore(cls, rows: list[dict[str, object]], *, token_ttl: float, publish_ahead: float,
                clock: Callable[[], float] = time.time) -> KeyRing:
        ring = cls(token_ttl=token_ttl, publish_ahead=publish_ahead, clock=clock)
        entries = {str(r["state"]): [] for r in rows}  # type: dict[str, list[_Entry]]
        for r in rows:
            key = jwk.RSAKey.import_key(json.loads(str(r["private_jwk"])))
            retired = r.get("retired_until")
            entries[str(r["state"])].append(_Entry(
                key, float(str(r["published_at"])),
                float(str(retired)) if retired is not None else None))
        if not entries.get("active") or not entries.get("next"):
            return ring  # nothing usable stored: start fresh
        ring._active, ring._next = entries["active"][0], entries["next"][0]
        ring._retired = entries.get("retired", [])
        return ring

    def state(self) -> dict[str, object]:
        return {"active": self._active.kid, "next": self._next.kid,
                "retired": [e.kid for e in self._live_retired()]}
