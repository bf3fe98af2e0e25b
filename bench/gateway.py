"""Edge gateway benchmark: REST + JWT through Envoy against direct gRPC, in one run.

    python -m bench.gateway [--seconds 10] [--rounds 3] [--connections 64]
                            [--out bench/results/gateway.json]
                            [--variants no_lua,no_file_log,...] [--variant-seconds N]

One run starts, in a temp dir: PostgreSQL (durable) + NATS JetStream, the order service as a
subprocess (`python -m services.order`, LOG_LEVEL=WARNING, ORDER_WORKERS=2, each worker also on
its own Unix socket, which Envoy balances over), the authorization
server (`python -m gateway.auth`) and the audit collector (`python -m gateway.audit serve`) as
subprocesses, and Envoy on the config `make run` generates (gateway.envoy_config.build). It
registers a client on the `internal` tier with every scope, fetches a token, creates a few
orders, waits until the machine is quiet (1-minute load average < --max-load, at most
--load-wait seconds), then measures for the same duration each, at --connections concurrent
connections:

1. GetOrder over direct gRPC (grpc.aio, several channels, `x-cartage-client-id` metadata);
2. GetOrder via REST through Envoy with the bearer token (wrk);
3. CreateOrder over direct gRPC, then via REST through Envoy (wrk + a Lua script building a
   unique `external_reference` per request; no Idempotency-Key and no request_id on either);

--rounds times over (default 3), alternating the two paths. Each path's throughput and p99 are
the medians over the rounds and the ratios are theirs (one 10 s phase on two busy cores can be
15 % off the next); every round's numbers are in the JSON too.

Optionally (--variants a,b,c+d) the REST phases again against Envoy on post-processed copies
of the generated config, first on the config as generated, then per variant: without the Lua
filter that checks client access (no_lua), the file access log (no_file_log), the gRPC audit log
(no_audit_log), the strict-JSON Lua filter (no_strict_json), all four (minimal); to the order
service's shared TCP port instead of its workers' own sockets (shared_port); without
jwt_authn's verified-token cache (no_jwt_cache); `+` combines.
The gateway's own files are never touched: variants exist only as temp files of this run.

CPU is read from /proc/<pid>/stat per process tree (the order service also per worker process,
which shows how its connections were spread), wrk's from its rusage; `others` is what processes
this run did not start used meanwhile. REST status counts come from Envoy's file access log
(`0/DC` = requests still in flight when wrk stopped).

Progress goes to stdout; numbers, CPU per process, machine load, targets and pass flags go to
the JSON file. Every process this run started is stopped again, whatever way it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import uvloop
from google.protobuf import json_format

from bench.orders import (
    Recorder,
    _cpu_model,
    _owned,
    bench_order,
    log,
    stop_owned,
    stop_process,
    summary_ms,
)
from cartage.order.v1 import order_service_pb2, order_service_pb2_grpc
from services.stack.components import Nats, Postgres, dying_with_parent, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).parent / "results" / "gateway.json"
CLIENT_TIER = "internal"

TARGETS = {
    "rest_to_grpc_throughput_ratio_min": 0.70,
    "rest_to_grpc_p99_ratio_max": 2.0,
}

VARIANTS = ("no_lua", "no_file_log", "no_audit_log", "no_strict_json", "shared_port",
            "no_jwt_cache", "minimal")


# --- processes ----------------------------------------------------------------------------------

def spawn(command: list[str], env: dict[str, str], log_path: Path, port: int, what: str,
          timeout: float = 90) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        process = subprocess.Popen(**dying_with_parent(command), cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    _owned.append(process)
    try:
        wait_for_port(port, timeout=timeout, process=process, what=what)
    except Exception:
        raise RuntimeError(f"{what} did not start; log tail:\n"
                           + log_path.read_text(errors="replace")[-2000:]) from None
    return process


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    """`command` on one CPU (taskset), when asked and the machine has more than one."""
    if cpu is not None and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *command]
    return command


def start_envoy(config: dict[str, Any], tmp: Path, name: str, port: int,
                concurrency: int | None, *, cpu: int | None = None) -> subprocess.Popen[bytes]:
    from gateway.envoy_config import envoy_binary

    path = tmp / f"envoy-{name}.json"
    path.write_text(json.dumps(config, indent=1))
    command = [envoy_binary(), "-c", str(path), "--use-dynamic-base-id", "--log-level", "warning"]
    if concurrency:
        command += ["--concurrency", str(concurrency)]
    return spawn(pinned(cpu, command), dict(os.environ), tmp / f"envoy-{name}.log", port,
                 f"envoy ({name})", timeout=30)


# --- CPU and load -------------------------------------------------------------------------------


class Cpu:
    """CPU seconds of process trees by name (utime+stime of the root and its live descendants,
    plus what they reaped), of this process, of reaped children (wrk) and of the machine."""

    def __init__(self) -> None:
        self.roots: dict[str, int] = {}
        self._tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict[str, float]:
        stats: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
        children: dict[int, list[int]] = {}
        for pid, fields in stats.items():
            children.setdefault(int(fields[1]), []).append(pid)
        def tree(root: int) -> float:
            ticks, todo = 0, [root] if root in stats else []
            while todo:
                pid = todo.pop()
                ticks += sum(int(f) for f in stats[pid][11:15])
                todo.extend(children.get(pid, ()))
            return ticks / self._tick

        out: dict[str, float] = {name: tree(root) for name, root in self.roots.items()}
        # Per worker process of the order service (SO_REUSEPORT spreads connections, not
        # requests: a skew shows here). Dotted keys are parts, not added to the total.
        for pid in children.get(self.roots.get("order_service", -1), ()):
            out[f"order_service.{pid}"] = tree(pid)
        me = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["bench_client"] = me.ru_utime + me.ru_stime
        out["wrk"] = reaped.ru_utime + reaped.ru_stime  # wrk is reaped at the end of its run
        with open("/proc/stat") as proc_stat:
            jiffies = [int(x) for x in proc_stat.readline().split()[1:9]]
        out["machine"] = (sum(jiffies) - jiffies[3] - jiffies[4]) / self._tick
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float], seconds: float
              ) -> dict[str, Any]:
        used = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in before}
        ours = sum(v for k, v in used.items() if k != "machine" and "." not in k)
        used["others"] = round(max(0.0, used["machine"] - ours), 2)
        return {"cpu_seconds": used,
                "cores": {k: round(v / seconds, 2) for k, v in used.items()}}


def load1() -> float:
    return os.getloadavg()[0]


async def wait_quiet(max_load: float, max_wait: float) -> dict[str, Any]:
    started = time.monotonic()
    first = load1()
    while load1() >= max_load and time.monotonic() - started < max_wait:
        log(f"waiting for a quiet machine: load average {load1():.2f} >= {max_load}")
        await asyncio.sleep(10)
    now = load1()
    result = {"load1_at_start_of_wait": round(first, 2), "load1_when_measuring": round(now, 2),
              "waited_s": round(time.monotonic() - started, 1), "quiet": now < max_load}
    if not result["quiet"]:
        log(f"WARNING: machine still busy after {max_wait:.0f}s (load {now:.2f}); measuring anyway")
    return result


# --- gRPC load ----------------------------------------------------------------------------------

Worker = Callable[[int, Recorder, Callable[[], bool]], Awaitable[None]]


async def grpc_phase(label: str, worker: Worker, connections: int, warmup: float,
                     seconds: float, cpu: Cpu) -> dict[str, Any]:
    rec = Recorder()
    loop = asyncio.get_running_loop()
    end = loop.time() + warmup + seconds
    tasks = [asyncio.create_task(worker(i, rec, lambda: loop.time() < end))
             for i in range(connections)]
    try:
        await asyncio.sleep(warmup)
        load = load1()
        rec.measuring = True
        before, t0 = cpu.sample(), time.perf_counter()
        log(f"{label}: measuring {seconds:.0f}s")
        await asyncio.sleep(seconds)
        rec.measuring = False
        elapsed = time.perf_counter() - t0
        after = cpu.sample()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result = {
        "requests_per_s": round(rec.ok / elapsed, 1),
        **summary_ms(rec.latencies),
        "ok": rec.ok,
        "errors": sum(rec.errors.values()),
        "errors_by_code": dict(rec.errors),
        "error_samples": rec.error_samples,
        "seconds": round(elapsed, 2),
        "load1_at_start": round(load, 2),
        **Cpu.delta(before, after, elapsed),
    }
    report(label, result)
    return result


def report(label: str, r: dict[str, Any]) -> None:
    cores = ", ".join(f"{k} {v}" for k, v in r["cores"].items() if v)
    log(f"{label}: {r['requests_per_s']:.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
        f"errors {r['errors']} | cores: {cores}")
    if r["cores"].get("others", 0) > 0.25:
        log(f"{label}: WARNING other processes used {r['cores']['others']} cores meanwhile")


def grpc_metadata(client_id: str) -> tuple[tuple[str, str], ...]:
    return (("x-cartage-client-id", client_id), ("x-cartage-scopes", "orders.read orders.write"),
            ("x-cartage-tier", CLIENT_TIER))


def get_worker(stubs: list[order_service_pb2_grpc.OrderServiceStub], names: list[str],
               client_id: str) -> Worker:
    md = grpc_metadata(client_id)

    async def worker(i: int, rec: Recorder, running: Callable[[], bool]) -> None:
        stub = stubs[i % len(stubs)]
        for n in itertools.count(i):
            if not running():
                return
            await rec.call(stub.GetOrder(order_service_pb2.GetOrderRequest(
                name=names[n % len(names)]), metadata=md, timeout=30))

    return worker


def create_worker(stubs: list[order_service_pb2_grpc.OrderServiceStub], client_id: str,
                  run: str) -> Worker:
    md = grpc_metadata(client_id)
    template = bench_order()

    async def worker(i: int, rec: Recorder, running: Callable[[], bool]) -> None:
        stub = stubs[i % len(stubs)]
        for n in itertools.count():
            if not running():
                return
            request = order_service_pb2.CreateOrderRequest()
            request.order.CopyFrom(template)
            request.order.external_reference = f"G-{run}-{i}-{n}"
            await rec.call(stub.CreateOrder(request, metadata=md, timeout=30))

    return worker


# --- REST load (wrk) ----------------------------------------------------------------------------

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\nWRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,'
    .. '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency.max))
end
"""


def lua_str(text: str) -> str:
    assert "]==]" not in text
    return "[==[" + text + "]==]"


def get_script(token: str, names: list[str]) -> str:
    paths = ", ".join(lua_str(f"/v1/{name}") for name in names)
    return f"""
local paths = {{{paths}}}
local i = 0
wrk.headers["authorization"] = "Bearer " .. {lua_str(token)}
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
""" + WRK_DONE


def create_script(token: str, run: str) -> str:
    order = bench_order()
    order.external_reference = "__REF__"
    body = json.dumps(json_format.MessageToDict(order), separators=(",", ":"))
    prefix, suffix = body.split("__REF__")
    return f"""
local prefix, suffix = {lua_str(prefix)}, {lua_str(suffix)}
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local tag = ""
init = function(args)
  tag = args[1] or ""  -- one per wrk invocation: warm-up and measured runs never collide
end
local n = 0
wrk.method = "POST"
wrk.headers["authorization"] = "Bearer " .. {lua_str(token)}
wrk.headers["content-type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/orders", nil,
                    prefix .. "R-{run}-" .. tag .. "-" .. tostring(tid) .. "-" .. n .. suffix)
end
""" + WRK_DONE


_wrk_runs = itertools.count()


async def wrk(url: str, script: Path, connections: int, threads: int, seconds: float,
              *, cpu: int | None = None) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *pinned(cpu, ["wrk", "-t", str(threads), "-c", str(connections), "-d",
                      f"{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(script), url,
                      "--", f"w{next(_wrk_runs)}"]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), seconds + 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            return dict(json.loads(line[len("WRKJSON "):]))
    raise RuntimeError(f"wrk failed (exit {process.returncode}):\n{text[-2000:]}")


def log_size(access_log: Path | None) -> int:
    try:
        return os.path.getsize(access_log) if access_log else 0
    except OSError:
        return 0


def statuses(access_log: Path | None, start: int) -> dict[str, int] | None:
    """HTTP status counts of the Envoy file access log lines written after offset `start`."""
    if access_log is None or not access_log.exists():
        return None
    counts: Counter[str] = Counter()
    with open(access_log, "rb") as f:
        f.seek(start)
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            counts[f"{record.get('http_status')}/{record.get('flags') or '-'}"] += 1
    return dict(counts)


# Envoy admin stats kept per REST phase: how long requests spent in Envoy vs upstream, what
# the filters counted (the strict-JSON and access Lua filters, jwt_authn, rbac, rate limits),
# and how many upstream connections carried the load.
ENVOY_STATS = (r"^(http\.edge\.(downstream_rq_time|downstream_rq_[0-9]xx|downstream_rq_total"
               r"|jwt_authn\.|rbac\.|lua\.|strict_json|client_)|"
               r"cluster\.svc_order\.(upstream_rq_time|upstream_cx_total|upstream_rq_total"
               r"|upstream_cx_active))")


async def envoy_stats(admin_port: int | None) -> dict[str, Any]:
    """Counters and gauges by name; histograms as p50/p99 (ms) of Envoy's last flush interval
    (5 s, so inside a phase measured for longer)."""
    if admin_port is None:
        return {}
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"http://127.0.0.1:{admin_port}/stats",
                                      params={"format": "json", "filter": ENVOY_STATS})
        stats = response.json()["stats"]
    except (httpx.HTTPError, ValueError, KeyError) as error:
        return {"error": repr(error)}
    out: dict[str, Any] = {}
    for entry in stats:
        if "name" in entry:
            out[entry["name"]] = entry["value"]
        elif "histograms" in entry:
            quantiles = entry["histograms"]["supported_quantiles"]
            for h in entry["histograms"]["computed_quantiles"]:
                values = dict(zip(quantiles, h["values"], strict=True))
                out[h["name"]] = {f"p{q:g}": values[q].get("interval") for q in (50, 99)}
    return out


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Counters as increments over the phase; histograms and gauges as read at its end."""
    return {k: (v - before[k] if isinstance(v, int) and isinstance(before.get(k), int)
                and not k.endswith(("_active",)) else v)
            for k, v in after.items()}


async def rest_phase(label: str, url: str, script: Path, args: argparse.Namespace,
                     warmup: float, seconds: float, cpu: Cpu,
                     access_log: Path | None = None, admin_port: int | None = None
                     ) -> dict[str, Any]:
    if warmup > 0:
        await wrk(url, script, args.connections, args.wrk_threads, warmup)
    load = load1()
    log(f"{label}: measuring {seconds:.0f}s (wrk -c{args.connections} -t{args.wrk_threads})")
    offset = log_size(access_log)
    stats_before = await envoy_stats(admin_port)
    before, t0 = cpu.sample(), time.perf_counter()
    out = await wrk(url, script, args.connections, args.wrk_threads, seconds)
    elapsed = time.perf_counter() - t0
    after = cpu.sample()
    stats_after = await envoy_stats(admin_port)
    await asyncio.sleep(0.2)  # let Envoy flush its file log
    by_status = statuses(access_log, offset)
    duration = out["duration_us"] / 1e6
    socket_errors = out["connect"] + out["read"] + out["write"] + out["timeout"]
    ok = out["requests"] - out["status"]
    result = {
        "requests_per_s": round(ok / duration, 1),
        "p50_ms": round(out["p50_us"] / 1000, 2),
        "p99_ms": round(out["p99_us"] / 1000, 2),
        "max_ms": round(out["max_us"] / 1000, 2),
        "ok": ok,
        "errors": socket_errors + out["status"],
        "non_2xx_3xx": out["status"],
        "socket_errors": {k: out[k] for k in ("connect", "read", "write", "timeout")},
        "status_flags_from_envoy_access_log": by_status,
        "seconds": round(duration, 2),
        "load1_at_start": round(load, 2),
        **Cpu.delta(before, after, elapsed),
    }
    if stats_after:
        result["envoy_stats"] = stats_delta(stats_before, stats_after)
    report(label, result)
    return result


async def smoke(client: httpx.AsyncClient, method: str, path: str, body: Any = None
                ) -> dict[str, Any]:
    """One request before a phase: the status and body prove the path works (or why not)."""
    for attempt in range(50):  # Envoy fetches the JWKS asynchronously after start
        response = await client.request(method, path, json=body)
        if response.status_code != 401 or attempt == 49:
            break
        await asyncio.sleep(0.1)
    if response.status_code >= 300:
        log(f"WARNING: {method} {path} -> {response.status_code} {response.text[:300]}")
    return {"status": response.status_code, "body": response.text[:200]}


# --- Envoy config variants ----------------------------------------------------------------------


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])


def variant(config: dict[str, Any], name: str, order_port: int) -> dict[str, Any]:
    """A copy of the generated config with one cost removed (in this run's temp dir only);
    `a+b` applies both."""
    if "+" in name:
        for part in name.split("+"):
            config = variant(config, part, order_port)
        return config
    config = copy.deepcopy(config)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    drop_filters: set[str] = set()
    drop_logs: set[str] = set()
    if name in ("no_lua", "minimal"):
        drop_filters.add("envoy.filters.http.lua")
    if name in ("no_strict_json", "minimal"):
        drop_filters.update(("cartage.strict_json", "cartage.strict_json.buffer"))
    if name in ("no_file_log", "minimal"):
        drop_logs.add("envoy.access_loggers.file")
    if name in ("no_audit_log", "minimal"):
        drop_logs.add("envoy.access_loggers.open_telemetry")
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in drop_filters]
    hcm["access_log"] = [a for a in hcm.get("access_log", []) if a["name"] not in drop_logs]
    from gateway.envoy_config import upstream_cluster

    if name == "shared_port":
        # The order service's shared TCP port instead of its workers' own sockets: the kernel
        # spreads Envoy's connections (one per 8 streams) over the workers (SO_REUSEPORT).
        clusters = config["static_resources"]["clusters"]
        clusters[:] = [upstream_cluster("svc_order", f"127.0.0.1:{order_port}", http2=True)
                       if c["name"] == "svc_order" else c for c in clusters]
    elif name == "no_jwt_cache":
        # Every request's token parsed and its RS256 signature checked again.
        for f in hcm["http_filters"]:
            if f["name"] == "envoy.filters.http.jwt_authn":
                for provider in f["typed_config"]["providers"].values():
                    provider.pop("jwt_cache_config", None)
    elif name not in VARIANTS:
        raise ValueError(f"unknown variant {name}")
    return config


def with_ports(config: dict[str, Any], port: int, admin_port: int) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    return config


# --- the run ------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def compare(grpc_r: dict[str, Any], rest_r: dict[str, Any]) -> dict[str, Any]:
    return {
        "throughput_ratio": ratio(rest_r["requests_per_s"], grpc_r["requests_per_s"]),
        "p99_ratio": ratio(rest_r["p99_ms"], grpc_r["p99_ms"]),
        "p50_ratio": ratio(rest_r["p50_ms"], grpc_r["p50_ms"]),
    }


def over_rounds(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Median throughput and p99 of each path over the rounds, their ratios, and each round's
    numbers; the full results (CPU per process) are those of each path's median round."""
    def median_round(side: list[dict[str, Any]]) -> dict[str, Any]:
        ordered = sorted(side, key=lambda r: r["requests_per_s"])
        return ordered[(len(ordered) - 1) // 2]

    grpc_side, rest_side = [g for g, _ in pairs], [r for _, r in pairs]

    def med(side: list[dict[str, Any]], field: str) -> float:
        return round(float(statistics.median(r[field] for r in side)), 2)

    return {
        "grpc_direct": median_round(grpc_side),
        "rest_via_envoy": median_round(rest_side),
        "throughput_ratio": ratio(med(rest_side, "requests_per_s"),
                                  med(grpc_side, "requests_per_s")),
        "p99_ratio": ratio(med(rest_side, "p99_ms"), med(grpc_side, "p99_ms")),
        "p50_ratio": ratio(med(rest_side, "p50_ms"), med(grpc_side, "p50_ms")),
        "median": {"grpc_requests_per_s": med(grpc_side, "requests_per_s"),
                   "rest_requests_per_s": med(rest_side, "requests_per_s"),
                   "grpc_p99_ms": med(grpc_side, "p99_ms"),
                   "rest_p99_ms": med(rest_side, "p99_ms")},
        "rounds": [{"grpc_requests_per_s": g["requests_per_s"],
                    "rest_requests_per_s": r["requests_per_s"],
                    "grpc_p99_ms": g["p99_ms"], "rest_p99_ms": r["p99_ms"],
                    "errors": g["errors"] + r["errors"], **compare(g, r)} for g, r in pairs],
    }


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from gateway.auth.clients import ClientRegistry
    from gateway.envoy_config import GatewayConfig, build
    from gateway.policy import all_scopes
    from services.kit.db import create_engine
    from services.order.settings import worker_sockets

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)

    results: dict[str, Any] = {}
    cpu = Cpu()
    t0 = time.perf_counter()
    postgres = Postgres(tmp / "pg", free_port(), durable=True, log_file=tmp / "postgres.log")
    _owned.append(postgres)
    postgres.start()
    nats_server = Nats(tmp / "js", free_port(), log_file=tmp / "nats.log")
    _owned.append(nats_server)
    nats_server.start()
    assert postgres.process is not None and nats_server.process is not None
    cpu.roots.update(postgres=postgres.process.pid, nats=nats_server.process.pid)
    log(f"postgres (durable) and nats up in {time.perf_counter() - t0:.1f}s")

    base_env = {**os.environ, "DATABASE_URL": postgres.url, "NATS_URL": nats_server.url,
                "LOG_LEVEL": "WARNING"}
    order_port, auth_port, audit_port = free_port(), free_port(), free_port()
    sockets = tmp / "sockets"
    sockets.mkdir()
    order = spawn([sys.executable, "-m", "services.order"],
                  {**base_env, "ORDER_GRPC_ADDRESS": f"127.0.0.1:{order_port}",
                   "ORDER_WORKERS": str(args.workers), "ORDER_WORKER_SOCKET_DIR": str(sockets)},
                  tmp / "order.log", order_port, "order service", timeout=120)
    cpu.roots["order_service"] = order.pid
    log(f"order service up (pid {order.pid}, ORDER_WORKERS={args.workers}) on :{order_port}")
    issuer = f"http://127.0.0.1:{auth_port}"
    auth = spawn([sys.executable, "-m", "gateway.auth"],
                 {**base_env, "AUTH_HTTP_PORT": str(auth_port), "AUTH_ISSUER": issuer,
                  "AUTH_ROTATION_SECONDS": "0"},
                 tmp / "auth.log", auth_port, "authorization server")
    cpu.roots["auth_server"] = auth.pid
    log(f"authorization server up (pid {auth.pid}) on :{auth_port}")
    audit = spawn([sys.executable, "-m", "gateway.audit", "serve"],
                  {**base_env, "AUDIT_GRPC_ADDRESS": f"127.0.0.1:{audit_port}"},
                  tmp / "audit.log", audit_port, "audit collector")
    cpu.roots["audit_collector"] = audit.pid
    log(f"audit collector up (pid {audit.pid}) on :{audit_port}")

    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    engine = create_engine(postgres.url, pool_size=1, max_overflow=0)
    try:
        secret = await ClientRegistry(engine).create(client_id, all_scopes(), tier=CLIENT_TIER)
    finally:
        await engine.dispose()

    gw_port, admin_port = free_port(), free_port()
    # Envoy balances over the order workers' own sockets, as `make run` configures it.
    generated = build(GatewayConfig(
        gw_port, admin_port, f"127.0.0.1:{auth_port}", issuer,
        {"order": ",".join(worker_sockets(str(sockets), args.workers))},
        access_log_path=str(tmp / "envoy-access.log"), audit_address=f"127.0.0.1:{audit_port}"))
    envoy = start_envoy(generated, tmp, "generated", gw_port, args.envoy_concurrency)
    cpu.roots["envoy"] = envoy.pid
    log(f"envoy up (pid {envoy.pid}, concurrency {args.envoy_concurrency or 'default'}) "
        f"on :{gw_port}; client {client_id} (tier {CLIENT_TIER}, scopes {all_scopes()})")

    async def fetch_token() -> str:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(f"{issuer}/oauth/token", auth=(client_id, secret),
                                       data={"grant_type": "client_credentials"})
            response.raise_for_status()
            return str(response.json()["access_token"])

    token = await fetch_token()
    run = uuid.uuid4().hex[:6]
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{order_port}", options=options)
                for _ in range(args.channels)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
        stubs = [order_service_pb2_grpc.OrderServiceStub(ch) for ch in channels]
        template = bench_order()
        names = []
        for n in range(args.orders):
            request = order_service_pb2.CreateOrderRequest()
            request.order.CopyFrom(template)
            request.order.external_reference = f"SEED-{run}-{n}"
            created = await stubs[0].CreateOrder(request, metadata=grpc_metadata(client_id))
            names.append(created.name)
        log(f"created {len(names)} orders to read back; started in "
            f"{time.perf_counter() - t0:.1f}s")

        access_log = tmp / "envoy-access.log"
        scripts = tmp / "lua"
        scripts.mkdir()

        async def rest_pair(port: int, tok: str, tag: str, label: str, warmup: float,
                            seconds: float, phases: tuple[str, ...],
                            admin: int | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                         headers={"authorization": f"Bearer {tok}"}) as http:
                if "get" in phases:
                    get_lua = scripts / f"get-{tag}.lua"
                    get_lua.write_text(get_script(tok, names))
                    check = await smoke(http, "GET", f"/v1/{names[0]}")
                    out["get_order"] = await rest_phase(
                        f"GetOrder REST via Envoy{label}", f"http://127.0.0.1:{port}", get_lua,
                        args, warmup, seconds, cpu, access_log, admin)
                    out["get_order"]["smoke"] = check
                if "create" in phases:
                    create_lua = scripts / f"create-{tag}.lua"
                    create_lua.write_text(create_script(tok, f"{run}{tag}"))
                    body = json_format.MessageToDict(template)
                    body["externalReference"] = f"SMOKE-{run}-{tag}"
                    check = await smoke(http, "POST", "/v1/orders", body)
                    out["create_order"] = await rest_phase(
                        f"CreateOrder REST via Envoy{label}", f"http://127.0.0.1:{port}",
                        create_lua, args, warmup, seconds, cpu, access_log, admin)
                    out["create_order"]["smoke"] = check
            return out

        results["machine_load"] = await wait_quiet(args.max_load, args.load_wait)
        # Rounds of the four phases, alternating the two paths: on two busy cores one phase can
        # be 15 % off the next for no reason of its own, so the ratios come from the medians.
        rounds: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
            "get_order": [], "create_order": []}
        for n in range(args.rounds):
            tag = f" (round {n + 1}/{args.rounds})" if args.rounds > 1 else ""
            token = await fetch_token()  # rounds can outlast a token
            get_grpc = await grpc_phase(f"GetOrder direct gRPC{tag}",
                                        get_worker(stubs, names, client_id),
                                        args.connections, args.warmup, args.seconds, cpu)
            rest_get = await rest_pair(gw_port, token, f"r{n}", tag, args.warmup,
                                       args.seconds, ("get",), admin_port)
            rounds["get_order"].append((get_grpc, rest_get["get_order"]))
            create_grpc = await grpc_phase(f"CreateOrder direct gRPC{tag}",
                                           create_worker(stubs, client_id, f"{run}r{n}"),
                                           args.connections, args.warmup, args.seconds, cpu)
            rest_create = await rest_pair(gw_port, token, f"r{n}", tag, args.warmup,
                                          args.seconds, ("create",), admin_port)
            rounds["create_order"].append((create_grpc, rest_create["create_order"]))
        for key, pairs in rounds.items():
            results[key] = over_rounds(pairs)
            log(f"{key}: REST/gRPC throughput {results[key]['throughput_ratio']} (rounds "
                f"{[r['throughput_ratio'] for r in results[key]['rounds']]}), "
                f"p99 ratio {results[key]['p99_ratio']}")

        if args.variants:
            stop_process(envoy)
            variants: dict[str, Any] = {}
            phases = tuple(args.variant_phases.split(","))
            for name in ["generated", *args.variants]:
                config = (generated if name == "generated"
                          else variant(generated, name, order_port))
                port, admin = free_port(), free_port()
                process = start_envoy(with_ports(config, port, admin), tmp, name, port,
                                      args.envoy_concurrency)
                cpu.roots["envoy"] = process.pid
                try:
                    measured = await rest_pair(port, await fetch_token(), name, f" [{name}]", 1.0,
                                               args.variant_seconds, phases, admin)
                finally:
                    stop_process(process)
                variants[name] = measured
            results["envoy_variants"] = {
                "phases": list(phases),
                "seconds": args.variant_seconds,
                "results": variants,
                "summary": {name: {ph: {"requests_per_s": v[ph]["requests_per_s"],
                                        "p99_ms": v[ph]["p99_ms"],
                                        "envoy_cpu_ms_per_request": round(
                                            1000 * v[ph]["cpu_seconds"]["envoy"]
                                            / max(1, v[ph]["ok"]), 3)}
                                   for ph in v} for name, v in variants.items()},
            }
            for name, v in results["envoy_variants"]["summary"].items():
                log(f"variant {name}: {v}")
    finally:
        for channel in channels:
            await channel.close()
    for key in ("get_order", "create_order"):
        for side in ("grpc_direct", "rest_via_envoy"):
            r = results[key][side]
            r["cpu_ms_per_request"] = {k: round(1000 * v / max(1, r["ok"]), 3)
                                       for k, v in r["cpu_seconds"].items() if v}
    return results


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, bool] = {}
    for key in ("get_order", "create_order"):
        r = results.get(key, {})
        checks[f"{key}_throughput_ratio"] = (r.get("throughput_ratio") or 0.0) >= TARGETS[
            "rest_to_grpc_throughput_ratio_min"]
        checks[f"{key}_p99_ratio"] = (r.get("p99_ratio") or float("inf")) <= TARGETS[
            "rest_to_grpc_p99_ratio_max"]
        checks[f"{key}_no_errors"] = bool(r.get("rounds")) and all(
            round_["errors"] == 0 for round_ in r["rounds"])
    return {**checks, "all": all(checks.values())}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the four phases; ratios from the medians")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per phase")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--channels", type=int, default=4, help="direct gRPC channels")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="ORDER_WORKERS")
    parser.add_argument("--envoy-concurrency", type=int, default=None,
                        help="Envoy worker threads (default: Envoy's own, as `make run`)")
    parser.add_argument("--orders", type=int, default=100, help="orders created to read back")
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--load-wait", type=float, default=180.0,
                        help="at most this many seconds waiting for the load to drop")
    parser.add_argument("--variants", type=lambda s: [v for v in s.split(",") if v],
                        default=[], help=f"Envoy config variants to measure: {','.join(VARIANTS)}")
    parser.add_argument("--variant-phases", default="get,create")
    parser.add_argument("--variant-seconds", type=float, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for name in (part for v in args.variants for part in v.split("+")):
        if name not in VARIANTS:
            parser.error(f"unknown variant {name}; choose from {','.join(VARIANTS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.variant_seconds is None:
        args.variant_seconds = args.seconds
    if shutil.which("wrk") is None:
        parser.error("wrk not found (apt-get install -y wrk)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if argv is None and "GRPC_VERBOSITY" not in os.environ:
        # gRPC core logs a line at every fork (wrk, Envoy) while its threads run, and reads its
        # verbosity once, at import: start again with errors only.
        os.execve(sys.executable, [sys.executable, "-m", "bench.gateway", *sys.argv[1:]],
                  {**os.environ, "GRPC_VERBOSITY": "ERROR"})
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    tmp = Path(tempfile.mkdtemp(prefix="cartage-bench-gateway-"))
    try:
        results = uvloop.run(bench(args, tmp))
    except asyncio.CancelledError:
        log("interrupted; stopped the processes this run started")
        return 130
    finally:
        stop_owned()
        shutil.rmtree(tmp, ignore_errors=True)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    report_ = {
        "benchmark": "gateway",
        "timestamp": stamp,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "processor": _cpu_model()},
        "config": {
            "seconds": args.seconds, "warmup_seconds": args.warmup, "rounds": args.rounds,
            "connections": args.connections, "grpc_channels": args.channels,
            "wrk_threads": args.wrk_threads,
            "wrk": (wrk_version.stdout + wrk_version.stderr).splitlines()[0:1],
            "order_workers": args.workers,
            "envoy_to_order": "each order worker's own Unix socket, least-request balanced",
            "envoy_concurrency": args.envoy_concurrency or "envoy default (= cores)",
            "client_tier": CLIENT_TIER, "postgres_durable": True,
            "rest_load": "wrk (C), one Lua script per phase",
            "grpc_load": "grpc.aio Python client in the benchmark process (uvloop)",
            "create_order": "no request_id / Idempotency-Key; unique external_reference",
        },
        **results,
        "targets": TARGETS,
        "pass": verdict(results),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report_, indent=2) + "\n")
    log(f"pass: {report_['pass']}")
    log(f"wrote {args.out} ({report_['wall_seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
