"""Fixtures of the document service tests: a channel to the session's document service and
a stub bound to one caller identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from cartage.document.v1 import document_service_pb2_grpc


class Docs:
    """A DocumentService stub bound to one caller identity."""

    def __init__(self, channel: grpc.aio.Channel, client_id: str, token_id: str = "") -> None:
        self.stub = document_service_pb2_grpc.DocumentServiceStub(channel)
        self.client_id = client_id
        self.token_id = token_id

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.stub, method)

        async def invoke(request: Any) -> Any:
            metadata = [("x-cartage-client-id", self.client_id)]
            if self.token_id:
                metadata.append(("x-cartage-token-id", self.token_id))
            return await call(request, metadata=metadata, timeout=30)

        return invoke


@pytest.fixture
async def doc_channel(document_address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(document_address) as channel:
        yield channel


