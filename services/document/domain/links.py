"""Signed download links: `{document id}.{expiry unix seconds}.{HMAC-SHA256}`, base64url.

The token names one document of one client and when it stops working; the HMAC under the
service's key covers all three, so an altered or expired token is refused. Pure functions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from services.kit.errors import PermissionDenied

_PURPOSE = b"cartage-document-link"


@dataclass(frozen=True, slots=True)
class Link:
    client_id: str
    document_id: str
    expires: int  # unix seconds


def _mac(key: bytes, link: Link) -> str:
    message = b"\x1f".join([_PURPOSE, link.client_id.encode(), link.document_id.encode(),
                            str(link.expires).encode()])
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()
                                    ).decode().rstrip("=")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def sign(key: bytes, link: Link) -> str:
    return ".".join([_b64(link.client_id), link.document_id, str(link.expires), _mac(key, link)])


def _refused(why: str) -> PermissionDenied:
    return PermissionDenied(f"this download link is not valid: {why}",
                            reason="DOWNLOAD_LINK_INVALID")


def verify(key: bytes, token: str, now: int) -> Link:
    """The link a token carries; PERMISSION_DENIED when it is altered, malformed or expired."""
    parts = token.split(".")
    if len(parts) != 4:
        raise _refused("malformed")
    try:
        link = Link(_unb64(parts[0]), parts[1], int(parts[2]))
    except (ValueError, UnicodeDecodeError):
        raise _refused("malformed") from None
    if not hmac.compare_digest(_mac(key, link), parts[3]):
        raise _refused("bad signature")
    if now >= link.expires:
        raise _refused("expired")
    return link
