"""The tender waterfall through a kill -9 of the carrier service: simulated carriers accept
(40 %), reject (30 %) or stay silent (30 %) under compressed deadlines while the service is
killed and restarted; every shipment ends BOOKED or TENDER_EXHAUSTED, none is booked twice, no
tender is left open, and each booking has exactly one `tender.accepted` on the stream."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest

from cartage.carrier.v1 import carrier_service_pb2 as pb
from cartage.carrier.v1 import shipment_pb2
from services.kit.relay import ensure_stream
from services.stack.components import free_port, wait_for_port
from tests.integration.carrier.conftest import CarrierClient
from tests.support import eventually, stream_events

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SHIPMENTS = 40
CARRIERS = 4
FINAL = {shipment_pb2.Shipment.STATE_BOOKED, shipment_pb2.Shipment.STATE_TENDER_EXHAUSTED}


class CarrierProcess:
    def __init__(self, database_url: str, nats_url: str, log: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_url,
                    "CARRIER_GRPC_ADDRESS": f"127.0.0.1:{self.port}", "LOG_LEVEL": "WARNING",
                    "CARRIER_DEADLINE_POLL_S": "0.1"}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "services.carrier"],
                                            cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=60, process=self.process, what="carrier service")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def behaviour(tender: str) -> str:
    """40 % accept, 30 % reject, 30 % silent, fixed per tender."""
    roll = hashlib.sha256(tender.encode()).digest()[0] % 10
    return "accept" if roll < 4 else "reject" if roll < 7 else "silent"


async def test_a_kill_during_the_waterfall_loses_nothing_and_books_nothing_twice(
        durable_stack, durable_database, tmp_path: Path) -> None:
    nc = await nats.connect(durable_stack.nats_url)
    await ensure_stream(nc.jetstream(), "ORDER", ["order.>"])
    await nc.close()
    service = CarrierProcess(durable_database, durable_stack.nats_url, tmp_path / "c.log")
    service.start()
    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        shipper = CarrierClient(channel)
        carriers = [CarrierClient(channel) for _ in range(CARRIERS)]
        for i, carrier_client in enumerate(carriers):
            c = await shipper.carrier(f"Carrier {i}", "SIM" + "ABCD"[i],
                                      oauth_client_id=carrier_client.client_id)
            await shipper.card(c.name)
        shipments = [await shipper.shipment() for _ in range(SHIPMENTS)]
        for s in shipments:
            await shipper.tender(s.name, seconds=1.5)

        async def simulate(carrier_client: CarrierClient) -> None:
            answered: set[str] = set()
            while not stop.is_set():
                try:
                    listed = await carrier_client.ListTenders(pb.ListTendersRequest(
                        filter="state = OFFERED", page_size=1000))
                    for tender in listed.tenders:
                        kind = behaviour(tender.name)
                        if kind == "silent" or tender.name in answered:
                            continue
                        if kind == "accept":
                            await carrier_client.AcceptTender(
                                pb.AcceptTenderRequest(name=tender.name))
                        else:
                            await carrier_client.RejectTender(
                                pb.RejectTenderRequest(name=tender.name, reason="no truck"))
                        answered.add(tender.name)
                        outcomes[kind] += 1
                except grpc.aio.AioRpcError as error:  # the kill, or a deadline that passed
                    outcomes[error.code().name] += 1
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(simulate(c)) for c in carriers]
        await asyncio.sleep(1.0)
        service.kill()  # mid-waterfall: offers open, deadlines due while it is down
        await asyncio.sleep(1.0)
        service.start()

        async def unfinished() -> list[str]:
            states = []
            for s in shipments:
                try:
                    got = await shipper.GetShipment(pb.GetShipmentRequest(name=s.name))
                except grpc.aio.AioRpcError:
                    return ["unreachable"]
                if got.state not in FINAL:
                    states.append(got.name)
            return states

        await eventually(unfinished, 90, interval=0.5, until=lambda left: not left)
        stop.set()
        await asyncio.gather(*tasks)
        await channel.close()
    finally:
        stop.set()
        service.stop()
    print(f"\nsimulated answers: {dict(outcomes)}")
    assert outcomes["accept"] > 0 and outcomes["reject"] > 0

    conn = await asyncpg.connect(durable_database)
    try:
        rows = await conn.fetch(
            "SELECT s.id, s.state, s.carrier_id, count(*) FILTER (WHERE t.state = 2) AS accepted,"
            " count(*) FILTER (WHERE t.state = 1) AS open, count(t.id) AS offered "
            "FROM carrier.shipments s LEFT JOIN carrier.tenders t ON t.shipment_id = s.id "
            "GROUP BY s.id")
    finally:
        await conn.close()
    assert len(rows) == SHIPMENTS
    states = Counter(r["state"] for r in rows)
    for row in rows:
        assert row["open"] == 0, row  # no tender left open (none lost)
        assert row["accepted"] == (1 if row["state"] == 3 else 0), row  # never booked twice
        assert row["offered"] >= 1
    assert states[3] > 0, states

    async def accepted_events() -> Counter[str]:
        counts: Counter[str] = Counter()
        for subject, event, _ in await stream_events(durable_stack.nats_url, "CARRIER"):
            if subject == "tender.accepted":
                counts[event.tender.shipment.removeprefix("shipments/")] += 1
        return counts

    booked = {r["id"] for r in rows if r["state"] == 3}
    counts = await eventually(accepted_events, 30,
                              until=lambda c: all(c[b] >= 1 for b in booked))
    assert all(counts[b] == 1 for b in booked), counts
