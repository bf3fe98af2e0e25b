"""Order ingestion benchmark.

    python -m bench.orders [--seconds 15] [--warmup 3] [--concurrency 64] [--channels 4]
                           [--batch-size 500] [--batch-callers 4] [--out bench/results/orders.json]
                           [--workers N] [--skip-naive] [--skip-no-request-id] [--profile DIR]

One run starts its own durable (fsync'ing) PostgreSQL and NATS JetStream in a temp dir, and
measures, on this machine:

1. raw asyncpg: the order + outbox insert as ONE statement of data-modifying CTEs (what the unit of
   work sends at commit), 64 concurrent callers on a pool of 20 connections: the reference the
   targets are checked against; and, for comparison, the same rows as the textbook transaction
   (BEGIN, two INSERTs, COMMIT: four round trips);
2. the issue's calibration point: a naive grpc.aio + asyncpg + JetStream CreateOrder handler
   (`bench.naive_order_server`: textbook transaction, then publish and wait for the ack; no
   validation, idempotency or relay) under the same callers as the service;
3. CreateOrder over gRPC against the order service as a subprocess (`python -m services.order`,
   so client and server do not share a GIL), 64 callers over several channels, each call with a
   unique `request_id` (partners send one); then the same without `request_id`;
4. BatchCreateOrders with 500 orders per call, a few callers;
5. outbox lag (commit -> JetStream ack, `published_at - created_at`) of each single-order phase,
   read after the relay has drained.

The raw phase runs before the service starts (migrations are applied by
`python -m services.order migrate`) and its rows are truncated afterwards, so the relay never
publishes reference rows and the reference gets the machine to itself, as the service does.
Progress goes to stdout; all numbers, targets and pass/fail go to the JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import uvloop
from google.protobuf import duration_pb2, timestamp_pb2
from google.type import latlng_pb2, money_pb2, postal_address_pb2

from cartage.order.v1 import events_pb2, order_pb2, order_service_pb2, order_service_pb2_grpc
from cartage.type.v1 import party_pb2, stop_pb2, time_window_pb2
from services.stack.components import Nats, Postgres, dying_with_parent, free_port, wait_for_port

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).parent / "results" / "orders.json"

TARGETS = {
    "create_order_ratio_to_raw_min": 0.50,
    "batch_orders_per_s_min": 5000.0,
    "outbox_lag_p99_ms_max": 250.0,
}

RAW_SQL = """
WITH o AS (
    INSERT INTO orders.orders (id, client_id, external_reference, state, mode, create_time,
                               update_time, version, cancel_reason, body)
    VALUES ($1, $2, $3, 1, 1, $4, $4, 1, '', $5)
), e AS (
    INSERT INTO orders.outbox (event_id, subject, event_type, payload, request_id)
    VALUES ($6, 'order.created', 'cartage.order.v1.OrderCreatedEvent', $7, $8)
)
SELECT 1
"""

# The same rows as the textbook transaction: BEGIN, two INSERTs, COMMIT (four round trips).
RAW_ORDER_SQL = """
INSERT INTO orders.orders (id, client_id, external_reference, state, mode, create_time,
                           update_time, version, cancel_reason, body)
VALUES ($1, $2, $3, 1, 1, $4, $4, 1, '', $5)
"""
RAW_OUTBOX_SQL = """
INSERT INTO orders.outbox (event_id, subject, event_type, payload, request_id)
VALUES ($1, 'order.created', 'cartage.order.v1.OrderCreatedEvent', $2, $3)
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the order ----------------------------------------------------------------------------------


def bench_order() -> order_pb2.Order:
    """A realistic order: ~1 KB as stored (the `body` column), a few line items, full stops."""
    day = 1_893_456_000  # 2030-01-01T00:00:00Z

    def ts(seconds: int) -> timestamp_pb2.Timestamp:
        return timestamp_pb2.Timestamp(seconds=seconds)

    def address(postal: str, city: str, line: str) -> postal_address_pb2.PostalAddress:
        return postal_address_pb2.PostalAddress(
            region_code="DE", postal_code=postal, locality=city, address_lines=[line])

    def stop(addr: postal_address_pb2.PostalAddress, lat: float, lng: float, start: int,
             end: int, contact: str, instructions: str) -> stop_pb2.Stop:
        return stop_pb2.Stop(
            address=addr,
            location=latlng_pb2.LatLng(latitude=lat, longitude=lng),
            time_windows=[time_window_pb2.TimeWindow(start_time=ts(start), end_time=ts(end))],
            service_duration=duration_pb2.Duration(seconds=900),
            contact_name=contact, contact_phone="+49 30 1234567", instructions=instructions,
        )

    def party(name: str, addr: postal_address_pb2.PostalAddress, contact: str,
              email: str) -> party_pb2.Party:
        return party_pb2.Party(name=name, address=addr, contact_name=contact,
                               phone="+49 30 7654321", email=email)

    berlin = address("10115", "Berlin", "Invalidenstrasse 117, Hof 2, Rampe 4")
    potsdam = address("14467", "Potsdam", "Friedrich-Ebert-Strasse 79-81, Wareneingang")
    return order_pb2.Order(
        external_reference="PO-0",
        shipper=party("Acme Konservenfabrik GmbH", berlin, "Erika Mustermann",
                      "dispatch@acme-konserven.example"),
        consignee=party("Beta Lebensmittel AG", potsdam, "Max Beispiel",
                        "receiving@beta-lebensmittel.example"),
        pickup=stop(berlin, 52.5321, 13.3849, day + 8 * 3600, day + 10 * 3600,
                    "Erika Mustermann", "Report to gate 2; forklift available on site."),
        delivery=stop(potsdam, 52.3989, 13.0657, day + 12 * 3600, day + 16 * 3600,
                      "Max Beispiel", "Tail lift required; call 30 minutes before arrival."),
        line_items=[
            order_pb2.LineItem(
                sku=f"SKU-{n:05d}", description=f"Euro pallet of canned goods, batch {n}",
                quantity=10 * n, weight_kg=420.5 * n, volume_m3=1.2 * n,
                declared_value=money_pb2.Money(currency_code="EUR", units=1200 * n))
            for n in range(1, 4)
        ],
        priority=order_pb2.PRIORITY_NORMAL,
        required_skills=["tail_lift", "adr"],
        notes="Fragile: stack at most two pallets high. Delivery note and CMR in the driver's "
              "folder. Consignee closes for lunch 12:30-13:00.",
    )


def stored_body(template: order_pb2.Order) -> tuple[bytes, bytes]:
    """What the service stores for one order: the `body` column and the outbox payload."""
    stored = order_pb2.Order()
    stored.CopyFrom(template)
    stored.name = f"orders/{uuid.uuid4().hex}"
    stored.state = order_pb2.Order.State.STATE_CREATED
    stored.create_time.GetCurrentTime()
    stored.update_time.GetCurrentTime()
    stored.etag = "v1"
    stored.client_id = "bench-raw"
    event = events_pb2.OrderCreatedEvent(order=stored, event_id=uuid.uuid4().hex)
    event.event_time.GetCurrentTime()
    return stored.SerializeToString(), event.SerializeToString()


# --- measurement --------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def summary_ms(latencies_s: list[float]) -> dict[str, float]:
    values = sorted(latencies_s)
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round((values[-1] if values else float("nan")) * 1000, 2),
    }


class CpuMeter:
    """CPU seconds used by this process, the order service (with its worker processes),
    Postgres (postmaster and backends) and NATS, each over its whole process tree, and by the
    whole machine: `others` is what processes this run did not start used meanwhile (a busy
    machine makes the numbers meaningless)."""

    def __init__(self, server_pid: int | None, postmaster_pid: int | None,
                 nats_pid: int | None) -> None:
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid
        self.nats_pid = nats_pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def _tree_cpu(self, root: int | None, stats: dict[int, list[str]]) -> float:
        """utime+stime of `root` and its live descendants, plus cutime+cstime of each (the
        children they have already reaped)."""
        if root is None or root not in stats:
            return 0.0
        children: dict[int, list[int]] = {}
        for pid, fields in stats.items():
            children.setdefault(int(fields[1]), []).append(pid)
        ticks, todo = 0, [root]
        while todo:
            pid = todo.pop()
            fields = stats[pid]
            ticks += sum(int(f) for f in fields[11:15])
            todo.extend(children.get(pid, ()))
        return ticks / self._tick

    def sample(self) -> dict[str, float]:
        stats: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
        times = os.times()
        with open("/proc/stat") as proc_stat:
            jiffies = [int(x) for x in proc_stat.readline().split()[1:9]]
        busy = sum(jiffies) - jiffies[3] - jiffies[4]  # all but idle and iowait
        return {
            "bench_client": times.user + times.system,
            "order_service": self._tree_cpu(self.server_pid, stats),
            "postgres": self._tree_cpu(self.postmaster_pid, stats),
            "nats": self._tree_cpu(self.nats_pid, stats),
            "machine": busy / self._tick,
        }

    @staticmethod
    def share(before: dict[str, float], after: dict[str, float], seconds: float
              ) -> dict[str, float]:
        """Cores used on average (1.0 = one full core) by each party over the window."""
        used = {k: (after[k] - before[k]) / seconds for k in before}
        ours = sum(v for k, v in used.items() if k != "machine")
        used["others"] = max(0.0, used["machine"] - ours)
        return {k: round(v, 2) for k, v in used.items()}


@dataclass
class Recorder:
    """Latencies and counts of one phase; only calls that start inside the window count."""

    measuring: bool = False
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    items: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{kind}: {detail[:200]}")

    async def call(self, rpc: Awaitable[T]) -> T | None:
        """Await one call and record it if it started inside the window; None when it failed."""
        measuring = self.measuring
        started = time.perf_counter()
        try:
            result = await rpc
        except Exception as error:  # counted, never fatal to the load
            if measuring:
                if isinstance(error, grpc.aio.AioRpcError):
                    self.error(error.code().name, error.details() or "")
                else:
                    self.error(type(error).__name__, str(error))
            return None
        if measuring:
            self.latencies.append(time.perf_counter() - started)
            self.ok += 1
        return result


Worker = Callable[[int, Recorder, Callable[[], bool]], Awaitable[None]]


async def run_phase(name: str, worker: Worker, callers: int, warmup: float, seconds: float,
                    cpu: CpuMeter) -> tuple[Recorder, float, dict[str, float]]:
    """Run `callers` workers for warmup + seconds; measure only calls started in the window."""
    rec = Recorder()
    loop = asyncio.get_running_loop()
    end = loop.time() + warmup + seconds

    def running() -> bool:
        return loop.time() < end

    tasks = [asyncio.create_task(worker(i, rec, running)) for i in range(callers)]
    try:
        log(f"{name}: warming up {warmup:.0f}s with {callers} callers")
        await asyncio.sleep(warmup)
        rec.measuring = True
        started = time.perf_counter()
        before = cpu.sample()
        log(f"{name}: measuring {seconds:.0f}s")
        await asyncio.sleep(seconds)
        rec.measuring = False
        elapsed = time.perf_counter() - started
        after = cpu.sample()
        await asyncio.gather(*tasks)
    finally:  # interrupted: stop the callers too
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    share = CpuMeter.share(before, after, elapsed)
    log(f"{name}: cores used " + ", ".join(f"{k} {v}" for k, v in share.items()))
    if share["others"] > 0.25:
        log(f"{name}: WARNING other processes used {share['others']} cores meanwhile")
    return rec, elapsed, share


# --- phases -------------------------------------------------------------------------------------


async def raw_phase(database_url: str, args: argparse.Namespace, body: bytes, payload: bytes,
                    cpu: CpuMeter, *, two_statements: bool = False) -> dict[str, Any]:
    """The reference: one CTE statement per order (what our unit of work sends), or with
    `two_statements` the textbook BEGIN / INSERT order / INSERT outbox / COMMIT."""
    pool = await asyncpg.create_pool(database_url, min_size=args.raw_pool, max_size=args.raw_pool)
    name = "raw asyncpg (BEGIN + 2 INSERTs + COMMIT)" if two_statements else "raw asyncpg"

    async def transaction(i: int, n: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(RAW_ORDER_SQL, uuid.uuid4().hex, f"bench-raw2-{i}", f"PO-{n}",
                               datetime.now(UTC), body)
            await conn.execute(RAW_OUTBOX_SQL, uuid.uuid4().hex, payload, f"raw2:{i}:{n}")

    try:
        async def worker(i: int, rec: Recorder, running: Callable[[], bool]) -> None:
            client = f"bench-raw-{i}"
            for n in itertools.count():
                if not running():
                    return
                await rec.call(transaction(i, n) if two_statements else pool.fetchval(
                    RAW_SQL, uuid.uuid4().hex, client, f"PO-{n}", datetime.now(UTC), body,
                    uuid.uuid4().hex, payload, f"raw:{i}:{n}",
                ))

        rec, elapsed, cpu_share = await run_phase(
            name, worker, args.concurrency, args.warmup, args.seconds, cpu)
    finally:
        await pool.close()
    result = {
        "commits_per_s": round(rec.ok / elapsed, 1),
        **summary_ms(rec.latencies),
        "commits": rec.ok,
        "errors": sum(rec.errors.values()),
        "error_samples": rec.error_samples,
        "seconds": round(elapsed, 2),
        "pool_size": args.raw_pool,
        "callers": args.concurrency,
        "cores_used": cpu_share,
    }
    log(f"{name}: {result['commits_per_s']:.0f} commits/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, errors {result['errors']}")
    return result


async def open_channels(port: int, count: int) -> list[grpc.aio.Channel]:
    options = [("grpc.use_local_subchannel_pool", 1),  # one connection per channel
               ("grpc.max_receive_message_length", 32 * 1024 * 1024),
               ("grpc.max_send_message_length", 32 * 1024 * 1024)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
                for _ in range(count)]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    return channels


async def naive_phase(database_url: str, nats_url: str, template: order_pb2.Order,
                      args: argparse.Namespace, cpu: CpuMeter, tmp: Path) -> dict[str, Any]:
    """The issue's calibration point: `bench.naive_order_server` under the same callers."""
    port = free_port()
    server = start_service(dict(os.environ), port, tmp / "naive-server.log",
                           ("bench.naive_order_server", str(port), database_url, nats_url),
                           "naive handler")
    _owned.append(server)
    service_pid = cpu.server_pid
    try:
        cpu.server_pid = server.pid
        channels = await open_channels(port, args.channels)
        try:
            stubs = [order_service_pb2_grpc.OrderServiceStub(ch) for ch in channels]
            return await create_phase("naive handler (no validation, idempotency, relay)",
                                      "naive", stubs, template, args, cpu, with_request_id=True)
        finally:
            for channel in channels:
                await asyncio.wait_for(channel.close(), 5)
    finally:
        cpu.server_pid = service_pid
        _owned.remove(server)
        stop_process(server)


def metadata(client_id: str, request_id: str) -> tuple[tuple[str, str], ...]:
    return (("x-cartage-client-id", client_id), ("x-cartage-scopes", "orders.write"),
            ("x-request-id", request_id))


async def create_phase(label: str, tag: str, stubs: list[order_service_pb2_grpc.OrderServiceStub],
                       template: order_pb2.Order, args: argparse.Namespace, cpu: CpuMeter,
                       *, with_request_id: bool) -> dict[str, Any]:
    """CreateOrder at `concurrency` callers. Each caller is its own client id (external references
    are unique per client, counted); `x-request-id` = `<tag>:<m|w>:...` tags the outbox rows."""
    run = uuid.uuid4().hex[:6]

    async def worker(i: int, rec: Recorder, running: Callable[[], bool]) -> None:
        stub = stubs[i % len(stubs)]
        client = f"bench-{run}-{tag}-{i}"
        for n in itertools.count():
            if not running():
                return
            measuring = rec.measuring
            request = order_service_pb2.CreateOrderRequest()
            request.order.CopyFrom(template)
            request.order.external_reference = f"PO-{n}"
            if with_request_id:
                request.request_id = uuid.uuid4().hex
            trace = f"{tag}:{'m' if measuring else 'w'}:{i}:{n}"
            await rec.call(stub.CreateOrder(request, metadata=metadata(client, trace), timeout=30))

    rec, elapsed, cpu_share = await run_phase(
        label, worker, args.concurrency, args.warmup, args.seconds, cpu)
    result = {
        "orders_per_s": round(rec.ok / elapsed, 1),
        **summary_ms(rec.latencies),
        "orders": rec.ok,
        "errors": sum(rec.errors.values()),
        "errors_by_code": dict(rec.errors),
        "error_samples": rec.error_samples,
        "seconds": round(elapsed, 2),
        "callers": args.concurrency,
        "channels": len(stubs),
        "request_id": with_request_id,
        "cores_used": cpu_share,
    }
    log(f"{label}: {result['orders_per_s']:.0f} orders/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, errors {result['errors']}")
    return result


async def batch_phase(stubs: list[order_service_pb2_grpc.OrderServiceStub],
                      template: order_pb2.Order, args: argparse.Namespace, cpu: CpuMeter
                      ) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    size = args.batch_size

    async def worker(i: int, rec: Recorder, running: Callable[[], bool]) -> None:
        stub = stubs[i % len(stubs)]
        client = f"bench-{run}-batch-{i}"
        counter = itertools.count()
        for n in itertools.count():
            if not running():
                return
            measuring = rec.measuring
            request = order_service_pb2.BatchCreateOrdersRequest(request_id=uuid.uuid4().hex)
            for _ in range(size):
                item = request.requests.add()
                item.order.CopyFrom(template)
                item.order.external_reference = f"PO-{next(counter)}"
            trace = f"batch:{'m' if measuring else 'w'}:{i}:{n}"
            response = await rec.call(stub.BatchCreateOrders(
                request, metadata=metadata(client, trace), timeout=60))
            # `measuring` is what rec.call saw: nothing awaits between the two reads.
            if response is not None and measuring:
                created = sum(1 for r in response.results if r.HasField("order"))
                rec.items += created
                if created != size:
                    rec.error("ITEM_ERRORS", f"{size - created} of {size} items failed")

    rec, elapsed, cpu_share = await run_phase(
        f"BatchCreateOrders x{size}", worker, args.batch_callers, args.warmup, args.seconds, cpu)
    result = {
        "orders_per_s": round(rec.items / elapsed, 1),
        "calls_per_s": round(rec.ok / elapsed, 2),
        **{f"{k.removesuffix('_ms')}_ms_per_call": v for k, v in summary_ms(rec.latencies).items()},
        "orders": rec.items,
        "calls": rec.ok,
        "errors": sum(rec.errors.values()),
        "errors_by_code": dict(rec.errors),
        "error_samples": rec.error_samples,
        "seconds": round(elapsed, 2),
        "callers": args.batch_callers,
        "batch_size": size,
        "request_id": True,
        "cores_used": cpu_share,
    }
    log(f"BatchCreateOrders: {result['orders_per_s']:.0f} orders/s "
        f"({result['calls_per_s']} calls/s), p50 {result['p50_ms_per_call']} ms/call, "
        f"p99 {result['p99_ms_per_call']} ms/call, errors {result['errors']}")
    return result


async def drain_and_lag(conn: asyncpg.Connection, tag: str, wait_s: float = 30.0
                        ) -> dict[str, Any]:
    """Wait until the relay has published every outbox row, then read the lag of the rows the
    measured calls of phase `tag` created."""
    started = time.perf_counter()
    deadline = started + wait_s
    pending = -1
    while time.perf_counter() < deadline:
        pending = await conn.fetchval(
            "SELECT count(*) FROM orders.outbox WHERE published_at IS NULL")
        if pending == 0:
            break
        await asyncio.sleep(0.1)
    drained = pending == 0
    rows = await conn.fetch(
        """SELECT EXTRACT(EPOCH FROM (published_at - created_at)) * 1000 AS lag_ms
           FROM orders.outbox WHERE request_id LIKE $1 AND published_at IS NOT NULL""",
        f"{tag}:m:%",
    )
    lags = sorted(float(r["lag_ms"]) for r in rows)
    result = {
        "rows": len(lags),
        "p50_ms": round(percentile(lags, 0.50), 2),
        "p99_ms": round(percentile(lags, 0.99), 2),
        "max_ms": round(lags[-1], 2) if lags else float("nan"),
        "drained": drained,
        "unpublished_left": pending,
        "drain_wait_s": round(time.perf_counter() - started, 2),
    }
    log(f"outbox lag ({tag}): p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
        f"max {result['max_ms']} ms over {result['rows']} rows (drained: {drained})")
    return result


# --- processes ----------------------------------------------------------------------------------


# Everything this run started, stopped again by `stop_owned` whatever way the run ends.
_owned: list[Postgres | Nats | subprocess.Popen[bytes]] = []


def stop_owned() -> None:
    """Stop what this run started (newest first), by the handles it holds; idempotent."""
    while _owned:
        item = _owned.pop()
        try:
            if isinstance(item, subprocess.Popen):
                stop_process(item)
            else:
                item.stop()
        except Exception as error:  # keep stopping the rest
            log(f"cleanup: could not stop {item!r}: {error!r}")


def service_env(database_url: str, nats_url: str, port: int, workers: int | None
                ) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_url,
           "ORDER_GRPC_ADDRESS": f"127.0.0.1:{port}", "LOG_LEVEL": "WARNING"}
    if workers is not None:
        env["ORDER_WORKERS"] = str(workers)
    return env


def start_service(env: dict[str, str], port: int, log_path: Path,
                  module: tuple[str, ...] = ("services.order",), what: str = "order service"
                  ) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            **dying_with_parent([sys.executable, "-m", *module]), cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )
    wait_for_port(port, timeout=60, process=process, what=what)
    return process


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_profiler(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """Optional: py-spy the service during the measured window (investigation only)."""
    if not args.profile:
        return None
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        log("--profile given but py-spy is not installed; skipping")
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"{name}.txt"
    spy_process = subprocess.Popen(
        [spy, "record", "--subprocesses", "-p", str(pid),
         "-d", str(int(args.warmup + args.seconds)), "-r", "200", "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _owned.append(spy_process)
    return spy_process


# --- main ---------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    template = bench_order()
    body, payload = stored_body(template)
    results["order_bytes"] = {"request_order": template.ByteSize(), "stored_body": len(body),
                              "outbox_payload": len(payload)}
    log(f"order: {template.ByteSize()} B on the wire, body {len(body)} B, "
        f"outbox payload {len(payload)} B")

    postgres = Postgres(tmp / "pg", free_port(), durable=True)
    nats_server = Nats(tmp / "js", free_port())
    service: subprocess.Popen[bytes] | None = None
    t0 = time.perf_counter()
    # SIGTERM/SIGINT cancel the run, so the finally blocks below stop what it started.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        _owned.append(postgres)
        postgres.start()
        _owned.append(nats_server)
        nats_server.start()
        log(f"postgres (durable) and nats up in {time.perf_counter() - t0:.1f}s")
        port = free_port()
        env = service_env(postgres.url, nats_server.url, port, args.workers)
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.order", "migrate", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(migrate.communicate(), 120)
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{output.decode(errors='replace')[-2000:]}")
        log("migrations applied")
        assert postgres.process is not None
        assert nats_server.process is not None
        cpu = CpuMeter(None, postgres.process.pid, nats_server.process.pid)
        admin = await asyncpg.connect(postgres.url)
        try:
            await admin.execute("CHECKPOINT")
            results["raw_asyncpg"] = await raw_phase(postgres.url, args, body, payload, cpu)
            # The relay must never see the reference rows; every phase starts after a checkpoint.
            await admin.execute("TRUNCATE orders.orders, orders.outbox")
            await admin.execute("CHECKPOINT")
            results["raw_asyncpg_two_statements"] = await raw_phase(
                postgres.url, args, body, payload, cpu, two_statements=True)
            await admin.execute("TRUNCATE orders.orders, orders.outbox")
            await admin.execute("CHECKPOINT")

            raw_rate = results["raw_asyncpg"]["commits_per_s"]
            textbook_rate = results["raw_asyncpg_two_statements"]["commits_per_s"]

            def ratios(result: dict[str, Any]) -> None:
                result["ratio_to_raw"] = round(result["orders_per_s"] / raw_rate, 3) \
                    if raw_rate else None
                result["ratio_to_raw_two_statements"] = round(
                    result["orders_per_s"] / textbook_rate, 3) if textbook_rate else None

            if not args.skip_naive:
                results["naive_handler"] = await naive_phase(postgres.url, nats_server.url,
                                                             template, args, cpu, tmp)
                ratios(results["naive_handler"])
                await admin.execute("TRUNCATE orders.orders, orders.outbox")
                await admin.execute("CHECKPOINT")

            service = start_service(env, port, tmp / "order-service.log")
            _owned.append(service)
            cpu.server_pid = service.pid
            log(f"order service up (pid {service.pid}) on 127.0.0.1:{port}")
            channels = await open_channels(port, args.channels)
            try:
                stubs = [order_service_pb2_grpc.OrderServiceStub(ch) for ch in channels]

                phases = [("create_order", "rid", "CreateOrder (request_id)", True)]
                if not args.skip_no_request_id:
                    phases.append(("create_order_no_request_id", "norid",
                                   "CreateOrder (no request_id)", False))
                for key, tag, label, with_rid in phases:
                    profiler = start_profiler(args, service.pid, key)
                    result = await create_phase(label, tag, stubs, template, args, cpu,
                                                with_request_id=with_rid)
                    if profiler is not None:
                        await asyncio.to_thread(profiler.wait, 30)
                    ratios(result)
                    result["outbox_lag"] = await drain_and_lag(admin, tag)
                    results[key] = result
                    await admin.execute("CHECKPOINT")

                profiler = start_profiler(args, service.pid, "batch")
                results["batch_create"] = await batch_phase(stubs, template, args, cpu)
                if profiler is not None:
                    await asyncio.to_thread(profiler.wait, 30)
                results["batch_create"]["outbox_drain"] = await drain_and_lag(admin, "batch")
            finally:
                for channel in channels:
                    await asyncio.wait_for(channel.close(), 5)
        finally:
            await asyncio.wait_for(admin.close(), 5)
    finally:
        stop_owned()
    return results


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    create = results.get("create_order", {})
    batch = results.get("batch_create", {})
    lag = create.get("outbox_lag", {})
    ratio = create.get("ratio_to_raw") or 0.0
    checks = {
        "create_order_ratio_to_raw": ratio >= TARGETS["create_order_ratio_to_raw_min"],
        "create_order_no_errors": create.get("errors", 1) == 0,
        "batch_orders_per_s": batch.get("orders_per_s", 0.0)
        >= TARGETS["batch_orders_per_s_min"],
        "outbox_lag_p99": bool(lag.get("drained"))
        and lag.get("p99_ms", float("inf")) <= TARGETS["outbox_lag_p99_ms_max"],
    }
    return {**checks, "all": all(checks.values())}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.orders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="single-order callers")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels (connections)")
    parser.add_argument("--raw-pool", type=int, default=20, help="asyncpg pool size (reference)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-callers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None,
                        help="ORDER_WORKERS for the service (default: the service's own)")
    parser.add_argument("--skip-naive", action="store_true",
                        help="skip the naive-handler calibration phase")
    parser.add_argument("--skip-no-request-id", action="store_true",
                        help="skip the CreateOrder phase without request_id")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the service per phase into DIR (needs py-spy)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    tmp = Path(tempfile.mkdtemp(prefix="cartage-bench-orders-"))
    try:
        results = uvloop.run(bench(args, tmp))
    except asyncio.CancelledError:
        log("interrupted; stopped the processes this run started")
        return 130
    finally:
        stop_owned()  # also when the event loop itself failed
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "benchmark": "orders",
        "timestamp": stamp,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": _cpu_model(),
        },
        "config": {
            "seconds": args.seconds, "warmup_seconds": args.warmup,
            "concurrency": args.concurrency, "channels": args.channels,
            "raw_pool_size": args.raw_pool, "batch_size": args.batch_size,
            "batch_callers": args.batch_callers, "postgres_durable": True,
            "service": "subprocess `python -m services.order`, LOG_LEVEL=WARNING",
            "order_workers": args.workers if args.workers is not None
            else os.environ.get("ORDER_WORKERS", "service default"),
        },
        **results,
        "targets": TARGETS,
        "pass": verdict(results),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"pass: {report['pass']}")
    log(f"wrote {args.out} ({report['wall_seconds']}s)")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
