"""Document service benchmark.

    python -m bench.documents [--seconds 10] [--callers 16] [--labels 500] [--pods 30]
                              [--out bench/results/documents.json]

Starts its own durable PostgreSQL and NATS in a temp dir and the document service as a
subprocess (`python -m services.document`, so client and server do not share a GIL), then
measures over gRPC: GenerateDocument BOLs per second (`callers` concurrent, each BOL its own
number), labels per second of one `labels`-label BatchGenerateDocuments operation (start to
done), and the latency of CaptureProofOfDelivery with 3 photos of ~1 MB each (p50/p99 of
`pods` sequential captures). Not through Envoy: the gateway adds its own ~0.3-0.4 ms of CPU per
request plus the base64 of the photos (bench/gateway.py measures the gateway). Numbers,
targets and pass/fail go to the JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import uvloop
from google.longrunning import operations_pb2_grpc
from google.longrunning import operations_proto_pb2 as ops
from PIL import Image

from bench import report
from cartage.document.v1 import content_pb2, document_service_pb2, document_service_pb2_grpc
from services.stack.components import Nats, Postgres, dying_with_parent, free_port, wait_for_port
from tests import document_samples as samples

TARGETS = {"bol_per_s": 50.0, "labels_per_s": 200.0, "pod_p99_ms": 500.0}
CLIENT = "bench-client"
METADATA = (("x-cartage-client-id", CLIENT),)


def _photo(seed: int) -> content_pb2.Image:
    """A ~1 MB JPEG of noise (noise does not compress, so the size is real)."""
    rng = os.urandom(920 * 920 * 3)
    image = Image.frombytes("RGB", (920, 920), rng)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return content_pb2.Image(data=out.getvalue(), content_type="image/jpeg",
                             file_name=f"photo-{seed}.jpg")


async def _bols(stub: Any, seconds: float, callers: int) -> dict[str, Any]:
    done, errors = 0, 0
    stop = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        nonlocal done, errors
        n = 0
        while time.perf_counter() < stop:
            bol = samples.bill_of_lading(bol_number=f"BOL-{index}-{n}", pro_number=f"PRO-{n}")
            try:
                await stub.GenerateDocument(document_service_pb2.GenerateDocumentRequest(
                    subject=f"orders/{index}-{n}", bill_of_lading=bol), metadata=METADATA,
                    timeout=30)
                done += 1
            except grpc.aio.AioRpcError:
                errors += 1
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - started
    return {"bol_per_s": done / elapsed, "bols": done, "errors": errors, "seconds": elapsed,
            "callers": callers}


async def _labels(channel: grpc.aio.Channel, stub: Any, count: int) -> dict[str, Any]:
    request = document_service_pb2.BatchGenerateDocumentsRequest(requests=[
        document_service_pb2.GenerateDocumentRequest(
            subject=f"orders/label-{i}", shipping_label=samples.label(f"LBL-{i:05d}"))
        for i in range(count)])
    operations = operations_pb2_grpc.OperationsStub(channel)
    started = time.perf_counter()
    operation = await stub.BatchGenerateDocuments(request, metadata=METADATA, timeout=60)
    while not operation.done:
        await asyncio.sleep(0.05)
        operation = await operations.GetOperation(ops.GetOperationRequest(name=operation.name),
                                                  metadata=METADATA, timeout=30)
    elapsed = time.perf_counter() - started
    return {"labels_per_s": count / elapsed, "labels": count, "seconds": elapsed,
            "error": operation.error.message if operation.HasField("error") else ""}


async def _pods(stub: Any, count: int) -> dict[str, Any]:
    photos = [_photo(i) for i in range(3)]
    latencies = []
    for i in range(count):
        pod = samples.pod(photos=photos)
        started = time.perf_counter()
        await stub.CaptureProofOfDelivery(document_service_pb2.CaptureProofOfDeliveryRequest(
            subject=f"orders/pod-{i}", proof_of_delivery=pod), metadata=METADATA, timeout=30)
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {"pod_p50_ms": statistics.median(latencies), "pod_p99_ms": p99, "pods": count,
            "photo_bytes": [len(p.data) for p in photos]}


def _start_service(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(**dying_with_parent([sys.executable, "-m", "services.document"]),
                            env=env)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-documents-"))
    postgres, nats = Postgres(tmp / "pg", free_port(), durable=True), Nats(tmp / "js",
                                                                            free_port())
    postgres.start()
    nats.start()
    port = free_port()
    env = {**os.environ, "DATABASE_URL": postgres.url, "NATS_URL": nats.url,
           "DOCUMENT_GRPC_ADDRESS": f"127.0.0.1:{port}", "DOCUMENT_STORE_DIR": str(tmp / "store"),
           "DOCUMENT_SIGNING_KEY": secrets.token_hex(32), "LOG_LEVEL": "WARNING"}
    service = _start_service(env)
    try:
        wait_for_port(port, timeout=60, process=service, what="document service")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.max_send_message_length", 16 * 1024 * 1024)]) as channel:
            stub = document_service_pb2_grpc.DocumentServiceStub(channel)
            print("BOLs ...", flush=True)
            bols = await _bols(stub, args.seconds, args.callers)
            print(f"  {bols['bol_per_s']:.1f}/s; labels ...", flush=True)
            labels = await _labels(channel, stub, args.labels)
            print(f"  {labels['labels_per_s']:.1f}/s; PODs ...", flush=True)
            pods = await _pods(stub, args.pods)
            print(f"  p99 {pods['pod_p99_ms']:.0f} ms", flush=True)
    finally:
        service.terminate()
        service.wait(30)
        nats.stop()
        postgres.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {**bols, **labels, **pods}


def verdict(results: dict[str, Any]) -> dict[str, bool]:
    return report.passed({
        "bol_per_s": results["bol_per_s"] >= TARGETS["bol_per_s"],
        "labels_per_s": results["labels_per_s"] >= TARGETS["labels_per_s"],
        "pod_p99_ms": results["pod_p99_ms"] <= TARGETS["pod_p99_ms"],
    })

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.documents")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("bench/results/documents.json"))
    arguments = parser.parse_args()
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    figures = uvloop.run(main(arguments))
    sys.exit(report.write_report(
        arguments.out, "documents", config=vars(arguments) | {"out": str(arguments.out)},
        results={"results": figures}, targets=TARGETS, checks=verdict(figures),
        started=started, stamp=stamp))
