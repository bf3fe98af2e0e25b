"""The content store on an S3-compatible service, behind the same port as the local one.

Objects are named `objects/ab/cdef…` by their SHA-256, as on disk. A PUT of S3 is atomic (an
object is visible whole or not at all), so no temporary object is needed; a HEAD first skips
content that is already there, so identical content is stored once. boto3 is synchronous: its
calls run in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from services.document.domain.model import StoredContent


class S3ContentStore:
    def __init__(self, bucket: str, client: Any) -> None:
        """`client`: a boto3 S3 client (endpoint, region and credentials are the caller's)."""
        self.bucket = bucket
        self._s3 = client

    @staticmethod
    def key_of(sha256: str) -> str:
        return f"objects/{sha256[:2]}/{sha256[2:]}"

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def put_sync(self, data: bytes, content_type: str) -> StoredContent:
        digest = hashlib.sha256(data).hexdigest()
        key = self.key_of(digest)
        if not self._exists(key):
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data,
                                ContentType=content_type,
                                ChecksumSHA256=_b64(bytes.fromhex(digest)))
        return StoredContent(digest, len(data), content_type)

    def get_sync(self, sha256: str) -> bytes:
        body = self._s3.get_object(Bucket=self.bucket, Key=self.key_of(sha256))["Body"]
        data: bytes = body.read()
        return data

    async def put(self, data: bytes, content_type: str) -> StoredContent:
        return await asyncio.to_thread(self.put_sync, data, content_type)

    async def get(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.get_sync, sha256)


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def from_settings(endpoint: str, bucket: str, region: str) -> S3ContentStore:
    """A store on `endpoint` (credentials from the usual AWS_* environment / config chain)."""
    import boto3

    return S3ContentStore(bucket, boto3.client("s3", endpoint_url=endpoint or None,
                                               region_name=region))
