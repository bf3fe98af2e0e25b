"""Liveness and readiness are separate grpc.health.v1 entries (the chart's probes rely on it):
the overall "" entry follows the dependency checks, `liveness` stays SERVING while the server
runs, so an outage of Postgres or NATS takes pods out of the Service but does not restart them."""

from __future__ import annotations

import asyncio

from services.kit.server import LIVENESS_SERVICE, Service
from tests.support import eventually, health


async def test_liveness_stays_serving_while_readiness_follows_the_dependencies() -> None:
    reachable = True

    async def dependency() -> bool:
        return reachable

    service = Service(name="probe", address="127.0.0.1:0", register=lambda server: None,
                      service_names=[], health_checks=[dependency], grace_seconds=0.1)
    task = asyncio.create_task(service.run(handle_signals=False))
    try:
        port = await asyncio.wait_for(service.started(), 10)
        address = f"127.0.0.1:{port}"
        assert await health(address, LIVENESS_SERVICE) == "SERVING"
        await eventually(lambda: health(address), until=lambda s: s == "SERVING")
        reachable = False
        await eventually(lambda: health(address), until=lambda s: s == "NOT_SERVING")
        assert await health(address, LIVENESS_SERVICE) == "SERVING"
        reachable = True
        await eventually(lambda: health(address), until=lambda s: s == "SERVING")
    finally:
        service.stop_event.set()
        await asyncio.wait_for(task, 10)
