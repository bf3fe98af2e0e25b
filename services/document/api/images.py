"""Images sent with a proof of delivery are checked before anything is stored: the claimed
type, the magic bytes, the size, and a full decode with Pillow (so a truncated JPEG, a PDF
named .png or a decompression bomb is refused with a field violation, never stored).

SVG is refused outright rather than sanitised: a signature is a picture, PNG and JPEG carry it
fully, and an SVG can hold script and external references that a viewer would run or fetch.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from cartage.document.v1 import content_pb2
from services.kit.validation import Violations

MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Pillow's own bomb guard warns above MAX_IMAGE_PIXELS and fails above twice that; a POD photo
# needs far less than either, so we refuse above this before decoding a single pixel.
MAX_IMAGE_PIXELS = 40_000_000
MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
}
PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG"}


def _sniff(data: bytes) -> str:
    for content_type, prefixes in MAGIC.items():
        if any(data.startswith(p) for p in prefixes):
            return content_type
    head = data[:256].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "application/pdf"
    if head.startswith(b"<?xml") or head.startswith(b"<svg") or b"<svg" in head:
        return "image/svg+xml"
    return "unknown"


def check_image(image: content_pb2.Image, field: str, v: Violations) -> None:
    claimed = image.content_type.strip().lower()
    data = image.data
    if not data:
        v.add(f"{field}.data", "is required", "REQUIRED")
        return
    if len(data) > MAX_IMAGE_BYTES:
        v.add(f"{field}.data", f"must be at most {MAX_IMAGE_BYTES} bytes (got {len(data)})",
              "TOO_LARGE")
        return
    actual = _sniff(data)
    if claimed == "image/svg+xml" or actual == "image/svg+xml":
        v.add(field, "SVG is not accepted; send the signature as PNG or JPEG", "UNSUPPORTED_TYPE")
        return
    if claimed not in MAGIC:
        v.add(f"{field}.content_type", "must be image/jpeg or image/png", "UNSUPPORTED_TYPE")
        return
    if actual != claimed:
        v.add(f"{field}.data", f"is not {claimed} (its bytes look like {actual})",
              "CONTENT_MISMATCH")
        return
    problem = _decode_problem(data, PIL_FORMAT[claimed])
    if problem:
        v.add(f"{field}.data", problem, "UNREADABLE_IMAGE")


def _decode_problem(data: bytes, expected_format: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[expected_format]) as im:
                width, height = im.size
                if width * height > MAX_IMAGE_PIXELS:
                    return (f"has {width} x {height} pixels; at most {MAX_IMAGE_PIXELS} are "
                            "accepted")
                im.load()  # decodes every pixel: a truncated file fails here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "has too many pixels (a decompression bomb?)"
    except (OSError, SyntaxError, ValueError) as error:
        return f"cannot be decoded ({type(error).__name__}: truncated or corrupt)"
    return ""
