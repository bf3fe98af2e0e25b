"""Partner webhooks, the pure rules: Standard Webhooks 1.0 signing, event-type matching, the
retry schedule, and the SSRF guard's address and URL checks (no I/O here; resolving a host is
the sender's job, `adapters/webhook_sender.py`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# Seconds before each attempt: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; after the
# last one fails the delivery is FAILED (and a dead-letter record is kept).
SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
# A receiver's Retry-After is honoured up to this (it can postpone, never hurry, the schedule).
MAX_RETRY_AFTER_S = 6 * 3600.0
RESPONSE_EXCERPT = 1024
TEST_EVENT_TYPE = "webhook.test"

# Delivery states (WebhookDelivery.State).
PENDING, DELIVERED, RETRYING, FAILED = 1, 2, 3, 4
# Why an endpoint is disabled (WebhookEndpoint.DisabledReason).
BY_PARTNER, GONE = 1, 2


@dataclass(frozen=True, slots=True)
class Public:
    """A domain event as partners see it: its type, id, tenant and the body to send."""

    event_type: str
    event_id: str
    client_id: str
    body: bytes


def body(event_type: str, when: datetime, data: dict) -> bytes:
    """`{"type", "timestamp", "data"}`, compact JSON."""
    return json.dumps({"type": event_type, "timestamp": when.isoformat().replace("+00:00", "Z"),
                       "data": data}, separators=(",", ":")).encode()


_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
_WILDCARD = re.compile(r"^[a-z][a-z_]*\.\*$")

# Cloud metadata services (AWS/GCP/Azure/OpenStack 169.254.169.254 is link-local anyway;
# these are the ones that are not).
_METADATA = frozenset({ipaddress.ip_address("fd00:ec2::254"),
                       ipaddress.ip_address("100.100.100.200")})


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` signature."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Space-separated signatures, one per secret that signs now (two during a rotation)."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def type_problem(pattern: str) -> str | None:
    """Why `pattern` is not an event type (`order.created`) or wildcard (`order.*`), or None."""
    if _TYPE.match(pattern) or _WILDCARD.match(pattern):
        return None
    return "must be an event type such as order.created, or a wildcard such as order.*"


def matches(patterns: Iterable[str], event_type: str) -> bool:
    for pattern in patterns:
        if pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def delay_before(attempt: int, scale: float, retry_after: float | None = None) -> float | None:
    """Seconds to wait before attempt number `attempt` (0-based), None when the schedule is
    exhausted. `scale` compresses the schedule (tests); Retry-After can only postpone it."""
    if attempt >= len(SCHEDULE_S):
        return None
    delay = SCHEDULE_S[attempt] * scale
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, MAX_RETRY_AFTER_S)
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form; an HTTP date is ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: its scheme, host, port and path-with-query."""

    scheme: str
    host: str
    port: int
    path: str


def url_problem(url: str, *, allow_http: bool) -> tuple[Target | None, str | None]:
    """The URL's parts, or why it cannot be an endpoint (scheme, credentials, shape)."""
    if len(url) > 2048:
        return None, "must be at most 2048 characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, "is not a valid URL"
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        return None, f"must be an {' or '.join(schemes)} URL"
    if not parts.hostname:
        return None, "must name a host"
    if parts.username or parts.password:
        return None, "must not carry credentials"
    if parts.fragment:
        return None, "must not have a fragment"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80),
                  path), None


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host spells, in any form a resolver would accept (`2130706433`,
    `0x7f.1`, `0177.0.0.1`, `[::1]`), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    # inet_aton's forms: 1-4 parts, each decimal, octal (leading 0) or hex (0x).
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    try:
        numbers = [int(p, 0) if not re.fullmatch(r"0[0-7]+", p) else int(p, 8) for p in parts]
    except ValueError:
        return None
    *head, last = numbers
    if any(n > 255 or n < 0 for n in head) or last < 0 or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value) if value < 2 ** 32 else None


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *,
                    allow_loopback: bool) -> str | None:
    """Why a receiver may not live at `address` (SSRF), or None when it may. With
    `allow_loopback` (tests, `make run`) ONLY loopback is allowed: a development stack has no
    business reaching other hosts."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return address_problem(mapped, allow_loopback=allow_loopback)
        if address.teredo is not None:
            return "is a Teredo address"
    if address.is_loopback:
        return None if allow_loopback else "is a loopback address"
    problem = _problem(address)
    if problem is None and allow_loopback:
        return "is not loopback (loopback-only mode, WEBHOOK_ALLOW_LOOPBACK)"
    return problem


def _problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if address in _METADATA:
        return "is a cloud metadata address"
    if address.is_link_local:
        return "is a link-local address (cloud metadata lives there)"
    if address.is_unspecified:
        return "is the unspecified address"
    if address.is_multicast:
        return "is a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "is a carrier-grade NAT address"
    if address.is_private or address.is_reserved or not address.is_global:
        return "is a private or reserved address"
    return None


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
