"""The S3-compatible content store against a real S3 protocol server (moto's server mode,
started here on 127.0.0.1 with throw-away credentials)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.document.adapters.s3_store import S3ContentStore
from services.stack.components import free_port, wait_for_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.fail("moto_server is missing: install the dev dependencies (moto[server])")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30, process=process, what="moto_server")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture
def store(s3_endpoint: str) -> S3ContentStore:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    bucket = f"documents-{free_port()}"
    client.create_bucket(Bucket=bucket)
    return S3ContentStore(bucket, client)


async def test_identical_content_is_stored_once_and_read_back(store: S3ContentStore) -> None:
    first = await store.put(b"%PDF-1.4 same", "application/pdf")
    second = await store.put(b"%PDF-1.4 same", "application/pdf")
    other = await store.put(b"\x89PNG other", "image/png")
    assert first == second and first.sha256 == hashlib.sha256(b"%PDF-1.4 same").hexdigest()
    listed = store._s3.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(
        [store.key_of(first.sha256), store.key_of(other.sha256)])
    assert await store.get(first.sha256) == b"%PDF-1.4 same"
    head = store._s3.head_object(Bucket=store.bucket, Key=store.key_of(other.sha256))
    assert head["ContentType"] == "image/png"


async def test_a_missing_object_is_an_error_not_empty_content(store: S3ContentStore) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        await store.get("0" * 64)
