"""Tracking ingestion benchmark: positions per second over client streams and over batch REST
through the gateway, with geofence and ETA evaluation on, and the time from a position's
arrival to its geofence event.

    python -m bench.tracking [--seconds 15] [--streams 100] [--per-message 20] [--messages 60]
                             [--rest-callers 4] [--fences 10000] [--out bench/results/tracking.json]

One run starts its own durable PostgreSQL, NATS JetStream, the tracking service (`python -m
services.tracking`), the authorization server and Envoy (generated config, tracking upstream
only), registers a client, makes `--streams` vehicles known (a `route.planned` event, as the
routing service announces a plan), and loads `--fences` circular geofences (150 m, a grid with
~550 m between centres) through CreateGeofence. Each vehicle drives north and south along one
column of the grid at 20 m per fix (72 km/h in the fixes' own time), so it enters and leaves a
fence every ~27 fixes. Then:

1. streams: `--streams` concurrent RecordPositions client streams (gRPC, straight to the
   service), each sending `--messages` messages of `--per-message` positions of its own
   vehicle;
2. batch REST: `--rest-callers` concurrent callers POSTing 1,000-position batches to
   `/v1/positions:batchRecord` through Envoy with a bearer token;
3. the same batches straight to the service over gRPC, as the reference for what the edge
   (JWT, strict JSON check, transcoding) costs.

Accepted positions per second come from the service's own answers. The position ->
`geofence.entered` latency is measured by a probe vehicle (`Probe`) on a thread of its own
while both phases run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import nats
import uvloop
from google.protobuf import json_format

from bench import report
from bench.gateway import spawn, start_envoy
from bench.orders import _owned, log, percentile
from cartage.routing.v1 import events_pb2 as routing_events
from cartage.routing.v1 import route_plan_pb2
from cartage.tracking.v1 import events_pb2, tracking_pb2, tracking_service_pb2
from cartage.tracking.v1 import tracking_service_pb2_grpc as rpc
from services.kit.events import EVENT_TYPE_HEADER, catalog
from services.kit.relay import ensure_stream
from services.stack.components import Nats, Postgres, free_port

DEFAULT_OUT = Path(__file__).parent / "results" / "tracking.json"
TARGETS = {"batch_positions_per_s": 10_000, "stream_positions_per_s": 3_000,
           "geofence_event_p99_ms": 500}
LAT0, LNG0, SPACING = 50.0, 10.0, 0.005  # the fence grid
STEP_DEG = 20 / 111_320  # 20 m north or south per fix
ROWS = 100


class Fleet:
    """Each vehicle's next fix: one second later, 20 m further along its column."""

    def __init__(self, count: int) -> None:
        self.ids = [f"bench-{i:03d}" for i in range(count)]
        self.t0 = datetime.now(UTC) - timedelta(days=1)
        self.n = [0] * count

    def fix(self, i: int) -> tracking_pb2.Position:
        n = self.n[i]
        self.n[i] += 1
        span = ROWS * SPACING
        travelled = (n * STEP_DEG) % (2 * span)
        lat = LAT0 + (travelled if travelled <= span else 2 * span - travelled)
        p = tracking_pb2.Position(vehicle=f"vehicles/{self.ids[i]}")
        p.time.FromDatetime(self.t0 + timedelta(seconds=n))
        p.location.latitude, p.location.longitude = lat, LNG0 + (i % ROWS) * SPACING
        return p


class Probe:
    """While the load runs: one more vehicle, on a channel and event loop (thread) of its own,
    sends one position every `interval` seconds, alternately in the middle of its own fence and
    1 km away. The latency of each `geofence.entered` of that fence is its arrival here minus
    the moment the unary call carrying the entering position was sent (so it includes the
    service, its transaction, the outbox relay and NATS, but no client-side queueing)."""

    VEHICLE = "bench-probe"
    LAT, LNG = 49.0, 10.0

    def __init__(self, address: str, nats_url: str, meta: Any, interval: float = 0.1) -> None:
        self.address, self.nats_url, self.meta, self.interval = address, nats_url, meta, interval
        self.latencies: list[float] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: uvloop.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        at: dict[int, float] = {}
        nc = await nats.connect(self.nats_url)

        async def on_event(msg: Any) -> None:
            event = events_pb2.GeofenceEnteredEvent.FromString(msg.data)
            if event.visit.vehicle == f"vehicles/{self.VEHICLE}":
                sent = at.pop(event.visit.position_time.seconds, None)
                if sent is not None:
                    self.latencies.append((time.perf_counter() - sent) * 1000)

        await nc.subscribe("geofence.entered", cb=on_event)
        t = datetime.now(UTC) - timedelta(hours=12)
        n = 0
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = rpc.TrackingServiceStub(channel)
            while not self._stop.is_set():
                inside = n % 2 == 0
                p = tracking_pb2.Position(vehicle=f"vehicles/{self.VEHICLE}")
                p.time.FromDatetime(t + timedelta(minutes=n))
                p.location.latitude = self.LAT if inside else self.LAT + 0.009
                p.location.longitude = self.LNG
                if inside:
                    at[p.time.seconds] = time.perf_counter()
                await stub.BatchRecordPositions(tracking_service_pb2.BatchRecordPositionsRequest(
                    positions=[p]), metadata=self.meta, timeout=30)
                self.sent += 1
                n += 1
                await asyncio.sleep(self.interval)
        await asyncio.sleep(2)  # the last events
        await nc.close()


async def stream_phase(address: str, meta: Any, fleet: Fleet, messages_each: int,
                       per_message: int) -> dict[str, Any]:
    """Every stream sends `messages_each` messages as fast as the transport takes them, then
    closes; the rate is what the service stored over the time until the last answer (so
    whatever the transport buffered counts only once the service has stored it)."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
    try:
        async def one(i: int) -> tracking_service_pb2.RecordPositionsResponse:
            stub = rpc.TrackingServiceStub(channels[i % len(channels)])

            async def messages():
                for _ in range(messages_each):
                    batch = [fleet.fix(i) for _ in range(per_message)]
                    yield tracking_service_pb2.RecordPositionsRequest(positions=batch)
                    await asyncio.sleep(0)

            return await stub.RecordPositions(messages(), metadata=meta, timeout=600)

        started = time.perf_counter()
        results = await asyncio.gather(*[one(i) for i in range(len(fleet.ids))])
        elapsed = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    accepted = sum(r.accepted for r in results)
    refused = sum(len(r.refusals) for r in results)
    return {"streams": len(fleet.ids), "per_message": per_message,
            "seconds": round(elapsed, 2), "accepted": accepted, "refused": refused,
            "per_s": round(accepted / elapsed)}


async def rest_phase(url: str, token: str, fleet: Fleet, seconds: float,
                     callers: int) -> dict[str, Any]:
    stop = time.perf_counter() + seconds
    totals = {"accepted": 0, "refused": 0, "requests": 0, "errors": 0}
    per_vehicle = 1000 // len(fleet.ids)

    async def caller(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            batch = [fleet.fix(i) for i in range(len(fleet.ids)) for _ in range(per_vehicle)]
            body = json_format.MessageToJson(
                tracking_service_pb2.BatchRecordPositionsRequest(positions=batch), indent=None)
            response = await http.post("/v1/positions:batchRecord", content=body,
                                       headers={"content-type": "application/json"})
            totals["requests"] += 1
            if response.status_code != 200:
                totals["errors"] += 1
                continue
            data = response.json()
            totals["accepted"] += int(data.get("accepted", 0))
            totals["refused"] += len(data.get("refusals", []))

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 headers={"authorization": f"Bearer {token}"}) as http:
        await asyncio.gather(*[caller(http) for _ in range(callers)])
    elapsed = time.perf_counter() - started
    return {"callers": callers, "batch": per_vehicle * len(fleet.ids),
            "seconds": round(elapsed, 2), **totals,
            "per_s": round(totals["accepted"] / elapsed)}


async def grpc_batch_phase(address: str, meta: Any, fleet: Fleet, seconds: float,
                           callers: int) -> dict[str, Any]:
    """The same batches straight to the service over gRPC: what the edge costs."""
    stop = time.perf_counter() + seconds
    accepted = requests = 0
    per_vehicle = 1000 // len(fleet.ids)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.TrackingServiceStub(channel)

        async def caller() -> None:
            nonlocal accepted, requests
            while time.perf_counter() < stop:
                batch = [fleet.fix(i) for i in range(len(fleet.ids)) for _ in range(per_vehicle)]
                result = await stub.BatchRecordPositions(
                    tracking_service_pb2.BatchRecordPositionsRequest(positions=batch),
                    metadata=meta, timeout=60)
                accepted += result.accepted
                requests += 1

        started = time.perf_counter()
        await asyncio.gather(*[caller() for _ in range(callers)])
        elapsed = time.perf_counter() - started
    return {"callers": callers, "seconds": round(elapsed, 2), "requests": requests,
            "accepted": accepted, "per_s": round(accepted / elapsed)}


async def make_known(nats_url: str, client_id: str, vehicles: list[str]) -> None:
    plan = route_plan_pb2.RoutePlan(name=f"routePlans/{uuid.uuid4().hex}",
                                    state=route_plan_pb2.RoutePlan.STATE_ACTIVE)
    for vehicle in vehicles:
        plan.routes.add(vehicle=f"vehicles/{vehicle}")
    event = routing_events.RoutePlannedEvent(event_id=uuid.uuid4().hex, client_id=client_id,
                                             route_plan=plan)
    event.event_time.GetCurrentTime()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, "ROUTING", catalog().streams()["ROUTING"], update=False)
        await js.publish("route.planned", event.SerializeToString(), headers={
            "Nats-Msg-Id": event.event_id, EVENT_TYPE_HEADER: catalog().of(event).name})
    finally:
        await nc.close()


async def load_fences(stub: rpc.TrackingServiceStub, meta: Any, count: int) -> float:
    started = time.perf_counter()
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            k = queue.pop()
            fence = tracking_pb2.Geofence(display_name=f"grid-{k}")
            fence.circle.center.latitude = LAT0 + (k // ROWS) * SPACING
            fence.circle.center.longitude = LNG0 + (k % ROWS) * SPACING
            fence.circle.radius_meters = 150
            await stub.CreateGeofence(tracking_service_pb2.CreateGeofenceRequest(
                geofence=fence), metadata=meta, timeout=30)

    await asyncio.gather(*[worker() for _ in range(16)])
    probe = tracking_pb2.Geofence(display_name="probe")
    probe.circle.center.latitude, probe.circle.center.longitude = Probe.LAT, Probe.LNG
    probe.circle.radius_meters = 150
    await stub.CreateGeofence(tracking_service_pb2.CreateGeofenceRequest(geofence=probe),
                              metadata=meta, timeout=30)
    return time.perf_counter() - started


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from gateway.auth.clients import ClientRegistry
    from gateway.envoy_config import GatewayConfig, build
    from gateway.policy import all_scopes
    from services.kit.db import create_engine

    postgres = Postgres(tmp / "pg", free_port(), durable=True, log_file=tmp / "postgres.log")
    _owned.append(postgres)
    postgres.start()
    nats_server = Nats(tmp / "js", free_port(), log_file=tmp / "nats.log")
    _owned.append(nats_server)
    nats_server.start()
    env = {**os.environ, "DATABASE_URL": postgres.url, "NATS_URL": nats_server.url,
           "LOG_LEVEL": "WARNING"}
    port, auth_port = free_port(), free_port()
    spawn([sys.executable, "-m", "services.tracking"],
          {**env, "TRACKING_GRPC_ADDRESS": f"127.0.0.1:{port}",
           "TRACKING_LINK_SECRET": "b" * 32}, tmp / "tracking.log", port, "tracking service",
          timeout=120)
    issuer = f"http://127.0.0.1:{auth_port}"
    spawn([sys.executable, "-m", "gateway.auth"],
          {**env, "AUTH_HTTP_PORT": str(auth_port), "AUTH_ISSUER": issuer,
           "AUTH_ROTATION_SECONDS": "0"}, tmp / "auth.log", auth_port, "authorization server")
    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    engine = create_engine(postgres.url, pool_size=1, max_overflow=0)
    try:
        secret = await ClientRegistry(engine).create(client_id, all_scopes(), tier="internal")
    finally:
        await engine.dispose()
    gw_port = free_port()
    envoy_config = build(GatewayConfig(gw_port, free_port(), f"127.0.0.1:{auth_port}", issuer,
                                       {"tracking": f"127.0.0.1:{port}"},
                                       access_log_path=str(tmp / "envoy-access.log")))
    start_envoy(envoy_config, tmp, "tracking", gw_port, None)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{issuer}/oauth/token", auth=(client_id, secret),
                                   data={"grant_type": "client_credentials"})
        response.raise_for_status()
        token = response.json()["access_token"]

    meta = (("x-cartage-client-id", client_id), ("x-cartage-scopes", "tracking.write"))
    fleet = Fleet(args.streams)
    await make_known(nats_server.url, client_id, [*fleet.ids, Probe.VEHICLE])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpc.TrackingServiceStub(channel)
        for _ in range(300):
            try:
                await stub.BatchRecordPositions(tracking_service_pb2.BatchRecordPositionsRequest(
                    positions=[fleet.fix(len(fleet.ids) - 1)]), metadata=meta, timeout=10)
                break
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(0.1)
        fence_s = await load_fences(stub, meta, args.fences)
    log(f"{args.fences} geofences loaded in {fence_s:.1f}s; {len(fleet.ids)} vehicles known")

    probe = Probe(f"127.0.0.1:{port}", nats_server.url, meta)
    probe.start()
    try:
        results: dict[str, Any] = {"fences": args.fences, "fence_load_seconds": round(fence_s, 1)}
        results["load_average_before"] = os.getloadavg()[0]
        results["streams"] = await stream_phase(f"127.0.0.1:{port}", meta, fleet,
                                                args.messages, args.per_message)
        log(f"streams: {results['streams']}")
        results["batch_rest"] = await rest_phase(f"http://127.0.0.1:{gw_port}", token, fleet,
                                                 args.seconds, args.rest_callers)
        log(f"batch REST: {results['batch_rest']}")
        results["batch_grpc_reference"] = await grpc_batch_phase(
            f"127.0.0.1:{port}", meta, fleet, args.seconds, args.rest_callers)
        log(f"batch gRPC (reference, no edge): {results['batch_grpc_reference']}")
        # other work on the machine shows here (the benchmark itself keeps ~2 cores busy)
        results["load_average_after"] = os.getloadavg()[0]
    finally:
        probe.stop()
    lat = sorted(probe.latencies)
    results["geofence_events"] = {
        "probe_positions": probe.sent, "entered_events": len(lat),
        "p50_ms": round(percentile(lat, 0.50), 1) if lat else None,
        "p99_ms": round(percentile(lat, 0.99), 1) if lat else None,
        "max_ms": round(lat[-1], 1) if lat else None}
    log(f"geofence events: {results['geofence_events']}")
    return results


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    p99 = results["geofence_events"]["p99_ms"]
    checks = {
        "batch_positions_per_s": results["batch_rest"]["per_s"]
        >= TARGETS["batch_positions_per_s"],
        "stream_positions_per_s": results["streams"]["per_s"]
        >= TARGETS["stream_positions_per_s"],
        "geofence_event_p99_ms": p99 is not None and p99 <= TARGETS["geofence_event_p99_ms"],
    }
    return {**checks, "all": all(checks.values())}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.tracking")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--per-message", type=int, default=20)
    p.add_argument("--messages", type=int, default=60, help="messages per stream")
    p.add_argument("--rest-callers", type=int, default=4)
    p.add_argument("--fences", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return report.run("tracking", args.out, lambda tmp: bench(args, tmp), config={
        "seconds": args.seconds, "streams": args.streams, "messages": args.messages,
        "per_message": args.per_message, "rest_callers": args.rest_callers,
        "fences": args.fences, "postgres_durable": True,
        "load": "grpc.aio / httpx Python clients in the benchmark process"},
                      targets=TARGETS, verdict=verdict)


if __name__ == "__main__":
    sys.exit(main())
