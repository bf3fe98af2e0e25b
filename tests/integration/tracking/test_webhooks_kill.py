"""kill -9 of the tracking process (the webhook dispatcher) with deliveries in flight and
pending: after a restart every delivery arrives, none is lost, a repeat keeps its webhook-id."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.fernet import Fernet

from cartage.tracking.v1 import webhook_pb2, webhook_service_pb2
from services.stack.components import free_port, wait_for_port
from tests.integration.tracking.test_webhooks import Hooks
from tests.support import eventually, new_client_id
from tests.webhook_receiver import Receiver

pb = webhook_service_pb2
EVENTS = 20
ROOT = Path(__file__).resolve().parents[3]


class TrackingProcess:
    def __init__(self, database_url: str, nats_url: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.env = {**os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_url,
                    "TRACKING_GRPC_ADDRESS": f"127.0.0.1:{self.port}", "LOG_LEVEL": "WARNING",
                    "TRACKING_LINK_SECRET": "y" * 32, "WEBHOOK_ALLOW_LOOPBACK": "true",
                    "TRACKING_WEBHOOK_SECRET_KEY": Fernet.generate_key().decode(),
                    "TRACKING_WEBHOOK_SCHEDULE_SCALE": "0.0001",
                    "TRACKING_WEBHOOK_LEASE_S": "16", "TRACKING_WEBHOOK_POLL_S": "0.05"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> TrackingProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "services.tracking"],
                                            cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=60, process=self.process, what="tracking service")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # SIGKILL, this process only (by its PID)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def tracking_process(durable_stack, durable_database: str, tmp_path: Path
                     ) -> Iterator[TrackingProcess]:
    process = TrackingProcess(durable_database, durable_stack.nats_url, tmp_path / "t.log")
    yield process
    process.stop()


async def test_kill_9_with_pending_deliveries_loses_none(tracking_process: TrackingProcess
                                                         ) -> None:
    receiver = await Receiver().start()
    receiver.answer = lambda _r: (200, {}, 5.0)  # slow: attempts are in flight at the kill
    try:
        tracking_process.start()
        address = f"127.0.0.1:{tracking_process.port}"
        async with grpc.aio.insecure_channel(address) as channel:
            hooks = Hooks(channel, new_client_id())
            endpoint = await hooks.endpoint(receiver)
            for _ in range(EVENTS):
                await hooks.SendTestWebhookEvent(pb.SendTestWebhookEventRequest(
                    name=endpoint.name))

            async def in_flight() -> bool:
                return len(receiver.received) >= 2

            await eventually(in_flight, seconds=20)
        tracking_process.kill()
        receiver.answer = lambda _r: (200, {}, 0.0)
        tracking_process.start()
        async with grpc.aio.insecure_channel(address) as channel:
            hooks = Hooks(channel, hooks.client_id)

            async def all_delivered() -> list[webhook_pb2.WebhookDelivery]:
                found = await hooks.deliveries(endpoint.name)
                done = [d for d in found
                        if d.state == webhook_pb2.WebhookDelivery.STATE_DELIVERED]
                return found if len(done) == EVENTS else []

            deliveries = await eventually(all_delivered, seconds=60)
        ids = {d.name.rsplit("/", 1)[1] for d in deliveries}
        assert len(ids) == EVENTS
        assert {r.webhook_id for r in receiver.received} == ids  # every one arrived
        assert all(r.verified for r in receiver.received)
        # The interrupted attempts were repeated under the same webhook-id: at least once each.
        assert len(receiver.received) >= EVENTS
    finally:
        await receiver.stop()
