"""The document service through the real edge: a partner generates a bill of lading and gets it
as a real application/pdf, captures a proof of delivery with a photo (base64 in JSON), hands a
signed link to a browser (no token), and bad input gets the gateway's JSON 400."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import pytest
from google.protobuf import json_format

from tests import document_samples as samples
from tests.e2e.conftest import Partner

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

SCOPES = ("documents.read", "documents.write")


def as_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def _jti(token: str) -> str:
    import json

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]


async def test_generate_a_bol_and_get_it_as_a_pdf(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(SCOPES)
    created = await partner.http.post("/v1/documents:generate", json={
        "subject": "orders/e2e-1", "billOfLading": as_json(samples.bill_of_lading())},
        headers={"idempotency-key": "bol-e2e-1"})
    assert created.status_code == 200, created.text
    document = created.json()
    assert document["type"] == "DOCUMENT_TYPE_BILL_OF_LADING"
    assert document["createdByClientId"] == partner.client_id
    assert document["createdByTokenId"] == _jti(partner.token)

    content = await partner.http.get(f"/v1/{document['name']}:content")
    assert content.status_code == 200, content.text
    assert content.headers["content-type"] == "application/pdf"
    assert content.content.startswith(b"%PDF-")
    assert hashlib.sha256(content.content).hexdigest() == document["sha256"]

    again = await partner.http.post("/v1/documents:generate", json={
        "subject": "orders/e2e-1", "billOfLading": as_json(samples.bill_of_lading())},
        headers={"idempotency-key": "bol-e2e-1"})
    assert again.json() == document

    listed = await partner.http.get("/v1/documents", params={
        "filter": 'subject = "orders/e2e-1" AND type = BILL_OF_LADING'})
    assert [d["name"] for d in listed.json()["documents"]] == [document["name"]]
    verdict = await partner.http.post("/v1/documents:verifyChain", json={})
    assert verdict.json()["valid"] is True


async def test_capture_a_pod_with_a_photo(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(SCOPES)
    pod = as_json(samples.pod())
    assert pod["photos"][0]["data"] == base64.b64encode(samples.pod().photos[0].data).decode()
    captured = await partner.http.post("/v1/documents:captureProofOfDelivery", json={
        "subject": "orders/e2e-pod", "proofOfDelivery": pod})
    assert captured.status_code == 200, captured.text
    result = captured.json()
    assert result["document"]["type"] == "DOCUMENT_TYPE_PROOF_OF_DELIVERY"
    assert [e["kind"] for e in result["exceptions"]] == ["KIND_SHORTAGE", "KIND_DAMAGED",
                                                         "KIND_OVERAGE"]
    photo = await partner.http.get(f"/v1/{result['originals'][1]['name']}:content")
    assert photo.headers["content-type"] == "image/jpeg"
    assert photo.content == samples.pod().photos[0].data


async def test_bad_input_is_a_400_with_field_violations(partner_factory: Any) -> None:
    partner: Partner = await partner_factory(SCOPES)
    invoice = as_json(samples.invoice())
    invoice["lines"][0]["hsCode"] = "12AB"
    invoice["incoterm"] = "FOB2"
    response = await partner.http.post("/v1/documents:generate", json={
        "subject": "orders/e2e-bad", "commercialInvoice": invoice})
    assert response.status_code == 400, response.text
    fields = {v["field"] for d in response.json()["details"]
              for v in d.get("fieldViolations", [])}
    assert fields == {"commercial_invoice.incoterm", "commercial_invoice.lines[0].hs_code"}
    pod = as_json(samples.pod())
    pod["signature"] = {"data": base64.b64encode(b"%PDF-1.4 pretending").decode(),
                        "contentType": "image/png"}
    response = await partner.http.post("/v1/documents:captureProofOfDelivery", json={
        "subject": "orders/e2e-bad", "proofOfDelivery": pod})
    assert response.status_code == 400, response.text
    assert "proof_of_delivery.signature.data" in response.text


async def test_a_signed_link_works_without_a_token_and_refuses_alteration(
        partner_factory: Any) -> None:
    owner: Partner = await partner_factory(SCOPES)
    other: Partner = await partner_factory(SCOPES)
    created = (await owner.http.post("/v1/documents:generate", json={
        "subject": "orders/e2e-link", "shippingLabel": as_json(samples.label())})).json()
    assert (await other.http.get(f"/v1/{created['name']}")).status_code == 404
    assert (await other.http.post(f"/v1/{created['name']}:createDownloadLink",
                                  json={})).status_code == 404
    link = (await owner.http.post(f"/v1/{created['name']}:createDownloadLink",
                                  json={})).json()
    async with httpx.AsyncClient(base_url=str(owner.http.base_url), timeout=30) as browser:
        opened = await browser.get(link["url"])
        assert opened.status_code == 200, opened.text
        assert opened.headers["content-type"] == "application/pdf"
        assert hashlib.sha256(opened.content).hexdigest() == created["sha256"]
        token = link["token"]
        altered = token[:-2] + ("AB" if not token.endswith("AB") else "CD")
        refused = await browser.get(f"/v1/downloads/{altered}")
        assert refused.status_code == 403, refused.text
        # Everything else still needs a token.
        assert (await browser.get(f"/v1/{created['name']}:content")).status_code == 401


async def test_a_batch_of_labels_is_an_operation_of_the_document_service(
        partner_factory: Any) -> None:
    import asyncio

    partner: Partner = await partner_factory(SCOPES)
    started = await partner.http.post("/v1/documents:batchGenerate", json={"requests": [
        {"subject": f"orders/b-{i}", "shippingLabel": as_json(samples.label(f"B-{i}"))}
        for i in range(5)]})
    assert started.status_code == 200, started.text
    name = started.json()["name"]
    assert name.startswith("operations/document/")
    for _ in range(100):
        operation = (await partner.http.get(f"/v1/{name}")).json()
        if operation.get("done"):
            break
        await asyncio.sleep(0.2)
    assert operation["done"], operation
    subjects = [d["subject"] for d in operation["response"]["documents"]]
    assert subjects == [f"orders/b-{i}" for i in range(5)]
    routing_only: Partner = await partner_factory(("routes.read",))
    assert (await routing_only.http.get(f"/v1/{name}")).status_code == 403


async def test_a_2_mb_photo_goes_in_as_base64_and_comes_out_as_image_jpeg(
        partner_factory: Any) -> None:
    import io
    import os

    from PIL import Image

    from cartage.document.v1 import content_pb2

    noise = Image.frombytes("RGB", (1300, 1300), os.urandom(1300 * 1300 * 3))
    out = io.BytesIO()
    noise.save(out, format="JPEG", quality=95)
    data = out.getvalue()
    assert len(data) > 1_500_000
    partner: Partner = await partner_factory(SCOPES)
    pod = as_json(samples.pod(photos=[content_pb2.Image(data=data, content_type="image/jpeg")]))
    captured = await partner.http.post("/v1/documents:captureProofOfDelivery", json={
        "subject": "orders/e2e-big", "proofOfDelivery": pod})
    assert captured.status_code == 200, captured.text
    photo = await partner.http.get(f"/v1/{captured.json()['originals'][1]['name']}:content")
    assert photo.status_code == 200, photo.text[:300]
    assert photo.headers["content-type"] == "image/jpeg" and photo.content == data


async def test_a_pod_larger_than_the_gateways_body_limit_goes_through_its_own_route(
        partner_factory: Any) -> None:
    """Four ~3 MB photos: ~16 MiB of JSON, four times the gateway's MAX_REQUEST_BODY, which
    CaptureProofOfDelivery's policy line raises for its route alone."""
    import io
    import os
    import time

    from PIL import Image

    from cartage.document.v1 import content_pb2
    from gateway.envoy_config import MAX_REQUEST_BODY

    noise = Image.frombytes("RGB", (1700, 1700), os.urandom(1700 * 1700 * 3))
    out = io.BytesIO()
    noise.save(out, format="JPEG", quality=97)
    photo = content_pb2.Image(data=out.getvalue(), content_type="image/jpeg")
    partner: Partner = await partner_factory(SCOPES)
    body = {"subject": "orders/e2e-huge",
            "proofOfDelivery": as_json(samples.pod(photos=[photo] * 4))}
    started = time.perf_counter()
    captured = await partner.http.post("/v1/documents:captureProofOfDelivery", json=body)
    elapsed = time.perf_counter() - started
    assert captured.status_code == 200, captured.text[:300]
    size = len(captured.request.content)
    assert size > 3 * MAX_REQUEST_BODY, size
    print(f"POD of {size} bytes of JSON through the gateway in {elapsed:.2f} s")
    # Other routes keep the gateway's limit.
    too_big = await partner.http.post("/v1/documents:generate", json={
        "subject": "x" * (MAX_REQUEST_BODY + 10), "billOfLading": {}})
    assert too_big.status_code == 413, too_big.text[:200]
