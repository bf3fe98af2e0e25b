"""ORDER_WORKERS=2: two processes share the port, each with a relay and its own socket; no event
is lost or doubled, and SIGTERM stops both."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path

import grpc

from cartage.order.v1 import order_service_pb2 as pb
from services.order.settings import worker_sockets
from tests.integration.test_durability import drained
from tests.support import OrderClient, events_of, new_client_id


async def test_two_workers_share_the_port_and_publish_each_event_once(
        stack, order_process, fresh_database, tmp_path) -> None:
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    with socket.socket(socket.AF_UNIX) as stale:  # left behind by a killed run
        stale.bind(str(sockets / "order-0.sock"))
    service = order_process(DATABASE_URL=fresh_database, ORDER_WORKERS="2",
                            ORDER_WORKER_SOCKET_DIR=str(sockets)).start()
    client_id = new_client_id()
    names: list[str] = []
    # Each worker also listens on its own socket (the gateway balances over them).
    own = worker_sockets(str(sockets), 2)
    for address in own:
        async with grpc.aio.insecure_channel(address) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            client = OrderClient(channel, client_id)
            names.append((await client.create()).name)
            assert (await client.GetOrder(pb.GetOrderRequest(name=names[0]))).name == names[0]
    # Several channels: the kernel spreads connections over the workers.
    for _ in range(4):
        async with grpc.aio.insecure_channel(service.address) as channel:
            client = OrderClient(channel, client_id)
            created = await asyncio.gather(*(client.create() for _ in range(10)))
            names += [order.name for order in created]
            for name in names[-10:]:
                assert (await client.GetOrder(pb.GetOrderRequest(name=name))).name == name
    workers = _children(service.process.pid)
    assert len(workers) == 2
    assert sorted(_listening(pid) for pid in workers) == [
        {a.removeprefix("unix:")} for a in own]
    await drained(fresh_database)
    events = await events_of(stack.nats_url, client_id)
    assert Counter(e.order.name for _, e, _ in events) == Counter({n: 1 for n in names})
    service.process.terminate()
    assert service.wait(30) == 0
    assert not _alive(workers)


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def _listening(pid: int) -> set[str]:
    """The Unix socket paths process `pid` has open (from /proc/net/unix and its fds)."""
    paths = {}
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8:
            paths[fields[6]] = fields[7]
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in paths:
            held.add(paths[target[8:-1]])
    return held


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (the spawn start method also leaves a resource tracker,
    which is not a worker: it runs `multiprocessing.resource_tracker`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found
