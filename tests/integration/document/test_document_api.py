"""The document service over gRPC on real Postgres, NATS and a content store on disk."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2

from cartage.document.v1 import content_pb2, document_pb2, events_pb2
from cartage.document.v1 import document_service_pb2 as ds
from services.kit.db import create_engine
from tests import document_samples as samples
from tests.integration.document.conftest import Docs
from tests.support import eventually, raises_rpc, stream_events, violations

pytestmark = pytest.mark.integration


def _client() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"


async def test_generate_a_bol_then_get_list_and_content(doc_channel, stack) -> None:
    docs = Docs(doc_channel, _client(), "jti-123")
    subject = f"orders/{uuid.uuid4().hex}"
    created = await docs.GenerateDocument(samples.generate(subject))
    assert created.name.startswith("documents/")
    assert created.type == document_pb2.DOCUMENT_TYPE_BILL_OF_LADING
    assert (created.content_type, created.created_by_client_id, created.created_by_token_id) \
        == ("application/pdf", docs.client_id, "jti-123")
    assert created.state == document_pb2.Document.STATE_ACTIVE and len(created.sha256) == 64
    assert created.chain_hash and created.previous_chain_hash == ""

    again = await docs.GenerateDocument(samples.generate(subject))
    assert again.sha256 == created.sha256 and again.name != created.name  # same bytes, new record
    assert again.previous_chain_hash == created.chain_hash

    content = await docs.GetDocumentContent(ds.GetDocumentContentRequest(name=created.name))
    assert content.content_type == "application/pdf" and content.data.startswith(b"%PDF-")
    assert len(content.data) == created.size_bytes
    assert (await docs.GetDocument(ds.GetDocumentRequest(name=created.name))) == created

    label = await docs.GenerateDocument(samples.generate(subject, shipping_label=samples.label()))
    listed = await docs.ListDocuments(ds.ListDocumentsRequest(filter=f'subject = "{subject}"'))
    assert [d.name for d in listed.documents] == [label.name, again.name, created.name]
    bols = await docs.ListDocuments(ds.ListDocumentsRequest(
        filter=f'subject = "{subject}" AND type = BILL_OF_LADING', page_size=1))
    assert [d.name for d in bols.documents] == [again.name] and bols.next_page_token
    rest = await docs.ListDocuments(ds.ListDocumentsRequest(
        filter=f'subject = "{subject}" AND type = BILL_OF_LADING', page_size=1,
        page_token=bols.next_page_token))
    assert [d.name for d in rest.documents] == [created.name]

    async def generated() -> list[Any]:
        return [e for _, e, _ in await stream_events(stack.nats_url, "DOCUMENT")
                if isinstance(e, events_pb2.DocumentGeneratedEvent)
                and e.client_id == docs.client_id]
    events = await eventually(generated, until=lambda found: len(found) == 3)
    assert {e.document.name for e in events} == {created.name, again.name, label.name}


async def test_a_request_id_makes_generation_idempotent(doc_channel) -> None:
    docs = Docs(doc_channel, _client())
    first = await docs.GenerateDocument(samples.generate(request_id="rq-1"))
    assert (await docs.GenerateDocument(samples.generate(request_id="rq-1"))) == first
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await docs.GenerateDocument(samples.generate("orders/other", request_id="rq-1"))
    assert "request_id" in violations(caught[0])


async def test_bad_input_is_invalid_argument_with_field_violations(doc_channel) -> None:
    docs = Docs(doc_channel, _client())
    invoice = samples.invoice()
    invoice.incoterm = "XYZ"
    invoice.lines[0].hs_code = "12"
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await docs.GenerateDocument(samples.generate(commercial_invoice=invoice))
    assert set(violations(caught[0])) == {"commercial_invoice.incoterm",
                                          "commercial_invoice.lines[0].hs_code"}
    bad_photo = content_pb2.Image(data=b"%PDF-1.7\n...", content_type="image/png")
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await docs.CaptureProofOfDelivery(ds.CaptureProofOfDeliveryRequest(
            subject="orders/a", proof_of_delivery=samples.pod(photos=[bad_photo])))
    assert "proof_of_delivery.photos[0].data" in violations(caught[0])
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT):
        await docs.GetDocument(ds.GetDocumentRequest(name="documents/nope"))


async def test_capture_a_pod_with_exceptions_originals_and_event(doc_channel, stack) -> None:
    docs = Docs(doc_channel, _client())
    request = ds.CaptureProofOfDeliveryRequest(
        subject="orders/pod-1", request_id="pod-rq",
        proof_of_delivery=samples.pod(photos=[samples.jpeg(), samples.jpeg((640, 480))]))
    result = await docs.CaptureProofOfDelivery(request)
    assert result.document.type == document_pb2.DOCUMENT_TYPE_PROOF_OF_DELIVERY
    assert [o.content_type for o in result.originals] == ["image/png", "image/jpeg",
                                                          "image/jpeg"]
    assert list(result.document.attachments) == [o.name for o in result.originals]
    kinds = [(e.kind, e.code) for e in result.exceptions]
    assert kinds == [(content_pb2.DeliveryException.KIND_SHORTAGE, "SKU-1"),
                     (content_pb2.DeliveryException.KIND_DAMAGED, "SKU-2"),
                     (content_pb2.DeliveryException.KIND_OVERAGE, "SKU-9")]
    photo = await docs.GetDocumentContent(ds.GetDocumentContentRequest(
        name=result.originals[2].name))
    assert photo.data == request.proof_of_delivery.photos[1].data
    assert (await docs.CaptureProofOfDelivery(request)) == result  # idempotent

    async def captured() -> list[Any]:
        return [e for _, e, _ in await stream_events(stack.nats_url, "DOCUMENT")
                if isinstance(e, events_pb2.PodCapturedEvent) and e.client_id == docs.client_id]
    [event] = await eventually(captured)
    assert event.document.name == result.document.name
    assert len(event.exceptions) == 3
    assert event.delivered_to == content_pb2.DELIVERED_TO_NEIGHBOUR


async def test_void_and_tenant_isolation(doc_channel) -> None:
    owner, other = Docs(doc_channel, _client()), Docs(doc_channel, _client())
    created = await owner.GenerateDocument(samples.generate())
    for call, request in [
        (other.GetDocument, ds.GetDocumentRequest(name=created.name)),
        (other.GetDocumentContent, ds.GetDocumentContentRequest(name=created.name)),
        (other.VoidDocument, ds.VoidDocumentRequest(name=created.name, reason="mine now")),
        (other.CreateDownloadLink, ds.CreateDownloadLinkRequest(name=created.name)),
    ]:
        with raises_rpc(grpc.StatusCode.NOT_FOUND):
            await call(request)
    voided = await owner.VoidDocument(ds.VoidDocumentRequest(name=created.name,
                                                             reason="wrong weight"))
    assert (voided.state, voided.void_reason) == (document_pb2.Document.STATE_VOIDED,
                                                  "wrong weight")
    with raises_rpc(grpc.StatusCode.FAILED_PRECONDITION):
        await owner.VoidDocument(ds.VoidDocumentRequest(name=created.name, reason="again"))
    with raises_rpc(grpc.StatusCode.INVALID_ARGUMENT) as caught:
        await owner.VoidDocument(ds.VoidDocumentRequest(name=created.name))
    assert "reason" in violations(caught[0])


async def test_download_links_work_until_altered_or_expired(doc_channel) -> None:
    owner = Docs(doc_channel, _client())
    anonymous = Docs(doc_channel, "")  # DownloadDocument needs no identity
    created = await owner.GenerateDocument(samples.generate())
    link = await owner.CreateDownloadLink(ds.CreateDownloadLinkRequest(name=created.name))
    assert link.url == f"/v1/downloads/{link.token}"
    assert 890 <= link.expire_time.seconds - created.create_time.seconds <= 905
    body = await anonymous.DownloadDocument(ds.DownloadDocumentRequest(token=link.token))
    assert body.content_type == "application/pdf" and len(body.data) == created.size_bytes
    altered = link.token[:-3] + ("xyz" if not link.token.endswith("xyz") else "abc")
    with raises_rpc(grpc.StatusCode.PERMISSION_DENIED):
        await anonymous.DownloadDocument(ds.DownloadDocumentRequest(token=altered))
    short = await owner.CreateDownloadLink(ds.CreateDownloadLinkRequest(
        name=created.name, ttl=duration_pb2.Duration(seconds=1)))


    await asyncio.sleep(2.1)
    with raises_rpc(grpc.StatusCode.PERMISSION_DENIED) as caught:
        await anonymous.DownloadDocument(ds.DownloadDocumentRequest(token=short.token))
    assert "expired" in (caught[0].details() or "")
    verdict = await owner.VerifyDocumentChain(ds.VerifyDocumentChainRequest())
    assert verdict.valid and verdict.records_checked == 2  # generated + downloaded


async def test_the_chain_names_an_edited_row(doc_channel, stack) -> None:
    docs = Docs(doc_channel, _client())
    made = [await docs.GenerateDocument(samples.generate(f"orders/{i}")) for i in range(3)]
    await docs.VoidDocument(ds.VoidDocumentRequest(name=made[0].name, reason="dup"))
    verdict = await docs.VerifyDocumentChain(ds.VerifyDocumentChainRequest())
    assert (verdict.valid, verdict.records_checked) == (True, 4)
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(
                "UPDATE documents.documents SET sha256 = repeat('0', 64) WHERE id = :id"),
                {"id": made[1].name.removeprefix("documents/")})
        verdict = await docs.VerifyDocumentChain(ds.VerifyDocumentChainRequest())
        assert (verdict.valid, verdict.first_broken_sequence) == (False, 2)
        assert "edited" in verdict.problem
        async with engine.begin() as connection:  # a chain record edited in place
            await connection.execute(sa.text(
                "UPDATE documents.documents SET sha256 = :h WHERE id = :id"),
                {"h": made[1].sha256, "id": made[1].name.removeprefix("documents/")})
            await connection.execute(sa.text(
                "UPDATE documents.chain SET record = convert_to(replace(convert_from(record, "
                "'UTF8'), 'voided', 'generated'), 'UTF8') WHERE client_id = :c AND seq = 4"),
                {"c": docs.client_id})
        verdict = await docs.VerifyDocumentChain(ds.VerifyDocumentChainRequest())
        assert (verdict.valid, verdict.first_broken_sequence) == (False, 4)
    finally:
        await engine.dispose()


async def test_the_verify_command_names_the_broken_chain(doc_channel, stack) -> None:
    """`python -m services.document.verify CLIENT`, as an operator runs it: exit 0 on an
    intact chain, 1 with the first broken record after a row is edited."""
    import json
    import os
    import subprocess
    import sys

    docs = Docs(doc_channel, _client())
    made = await docs.GenerateDocument(samples.generate())
    await docs.GenerateDocument(samples.generate("orders/second"))
    from tests.conftest import DOCUMENT_TEST_KEY

    env = {**os.environ, "DATABASE_URL": stack.database_url, "NATS_URL": stack.nats_url,
           "DOCUMENT_SIGNING_KEY": DOCUMENT_TEST_KEY}

    def run() -> tuple[int, dict[str, Any]]:
        done = subprocess.run([sys.executable, "-m", "services.document.verify",
                               docs.client_id], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        return done.returncode, json.loads(done.stdout.splitlines()[-1])

    code, result = await asyncio.to_thread(run)
    assert (code, result["valid"], result["records_checked"]) == (0, True, 2)
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(
                "UPDATE documents.documents SET subject = 'x', sha256 = repeat('1', 64) "
                "WHERE id = :id"), {"id": made.name.removeprefix("documents/")})
    finally:
        await engine.dispose()
    code, result = await asyncio.to_thread(run)
    assert (code, result["valid"], result["first_broken_sequence"]) == (1, False, 1)


async def test_a_pod_with_ten_photos_of_nearly_10_mb_is_taken(doc_channel) -> None:
    """The largest POD the contract allows (~100 MB) fits the service's message limit."""
    import io
    import os as _os

    from PIL import Image

    noise = Image.frombytes("RGB", (2800, 2800), _os.urandom(2800 * 2800 * 3))
    out = io.BytesIO()
    noise.save(out, format="JPEG", quality=93)
    data = out.getvalue()
    assert 8_000_000 < len(data) <= 10 * 1024 * 1024, len(data)
    photo = content_pb2.Image(data=data, content_type="image/jpeg")
    docs = Docs(doc_channel, _client())
    result = await docs.CaptureProofOfDelivery(ds.CaptureProofOfDeliveryRequest(
        subject="orders/big", proof_of_delivery=samples.pod(photos=[photo] * 10)))
    assert len(result.originals) == 11
    assert len({o.sha256 for o in result.originals[1:]}) == 1  # the same bytes, stored once
