"""Envoy's own CPU per request on the generated gateway config, without the rest of Cartage.

    python -m bench.envoy_alone [--seconds 8] [--rounds 3] [--out bench/results/envoy_alone.json]

bench.gateway measures Envoy among everything else on two busy cores, where one phase can be 15 %
off the next. This one isolates it: Envoy (one worker) on the config gateway.envoy_config
generates, with a local JWKS instead of the authorization server's, in front of a stand-in
backend (a gRPC server in a child process that answers every order RPC with the benchmark's
order, ~1.1 KB, and every audit export with an empty response). Envoy is pinned to CPU 0, wrk
and the backend to CPU 1 (taskset), so Envoy is the bottleneck and its CPU per request is what
limits the rate. Per config and round: GetOrder (GET /v1/orders/x) and CreateOrder (POST
/v1/orders with the benchmark order as JSON), 64 connections, Envoy's CPU from /proc.

Configs: `generated` (as make run uses it); `no_jwt_cache` (every token's signature checked
again); `transcoder_only` (the transcoder and the router alone: no authentication, scope check,
rate limit, Lua filters, local-reply mapping or access logs; the floor of REST to gRPC through
Envoy here). The Lua filter's status check asks the stand-in, which cannot answer it; the filter
then lets requests through, as it does when the authorization server is down.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.orders import bench_order, log, stop_owned, stop_process
from services.stack.components import free_port

DEFAULT_OUT = Path(__file__).parent / "results" / "envoy_alone.json"
CONFIGS = ("generated", "no_jwt_cache", "transcoder_only")
CONNECTIONS = 64


def backend(port: int) -> None:
    """The stand-in upstream: every order RPC gets the benchmark order, anything else empty."""
    import grpc
    import uvloop

    order = bench_order()
    order.name = "orders/x"
    answer = order.SerializeToString()

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            reply = answer if details.method.startswith("/cartage.order.") else b""

            async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return reply

            return grpc.unary_unary_rpc_method_handler(unary)

    async def serve() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((Handler(),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(serve())


def token_and_jwks() -> tuple[str, dict[str, Any]]:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from gateway.policy import all_scopes

    key = RSAKey.generate_key(2048, parameters={"kid": "bench", "use": "sig", "alg": "RS256"})
    now = int(time.time())
    claims = {"iss": "http://bench.invalid", "sub": "bench", "aud": "cartage-api",
              "client_id": "bench", "iat": now, "nbf": now, "exp": now + 3600,
              "jti": uuid.uuid4().hex, "scope": " ".join(all_scopes()), "tier": "internal"}
    token = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "bench"}, claims, key)
    return token, {"keys": [key.as_dict(private=False)]}


def configs(port: int, admin_port: int, backend_port: int, jwks: dict[str, Any], tmp: Path
            ) -> dict[str, dict[str, Any]]:
    from bench.gateway import variant
    from gateway.envoy_config import JWT_FILTER, PROVIDER, GatewayConfig, build

    upstream = f"127.0.0.1:{backend_port}"
    generated = build(GatewayConfig(port, admin_port, upstream, "http://bench.invalid",
                                    {"order": upstream}, audit_address=upstream,
                                    access_log_path=str(tmp / "envoy-access.log")))
    listener = generated["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for f in listener["typed_config"]["http_filters"]:
        if f["name"] == JWT_FILTER:
            provider = f["typed_config"]["providers"][PROVIDER]
            del provider["remote_jwks"]
            provider["local_jwks"] = {"inline_string": json.dumps(jwks)}
    bare = copy.deepcopy(generated)
    hcm = bare["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] in (
        "envoy.filters.http.grpc_json_transcoder", "envoy.filters.http.router")]
    hcm["access_log"] = []
    hcm.pop("local_reply_config", None)
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route.pop("typed_per_filter_config", None)
    return {"generated": generated,
            "no_jwt_cache": variant(generated, "no_jwt_cache", backend_port),
            "transcoder_only": bare}


async def measure(config: dict[str, Any], name: str, tmp: Path, port: int,
                  scripts: dict[str, Path], seconds: float) -> dict[str, dict[str, float]]:
    from bench.gateway import Cpu, start_envoy, wrk

    envoy = start_envoy(config, tmp, name, port, 1, cpu=0)
    cpu = Cpu()
    cpu.roots["envoy"] = envoy.pid
    url = f"http://127.0.0.1:{port}"
    try:
        results = {}
        for phase, script in scripts.items():
            await wrk(url, script, CONNECTIONS, 2, 2, cpu=1)  # warm-up
            before = cpu.sample()["envoy"]
            done = await wrk(url, script, CONNECTIONS, 2, seconds, cpu=1)
            used = cpu.sample()["envoy"] - before
            bad = done["status"] + done["connect"] + done["read"] + done["write"]
            if bad:
                raise RuntimeError(f"{name} {phase}: {bad} failed requests (see {tmp})")
            results[phase] = {
                "requests_per_s": round(done["requests"] / (done["duration_us"] / 1e6), 1),
                "envoy_us_per_request": round(1e6 * used / max(1, done["requests"]), 1),
                "p99_ms": round(done["p99_us"] / 1000, 2)}
            log(f"{name} {phase}: {results[phase]}")
        return results
    finally:
        stop_process(envoy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.envoy_alone", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all configs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.backend:
        backend(args.backend)
        return 0
    if shutil.which("wrk") is None:
        parser.error("wrk not found (apt-get install -y wrk)")
    from google.protobuf import json_format

    from bench.gateway import WRK_DONE, lua_str, pinned, spawn

    started, stamp = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    tmp = Path(tempfile.mkdtemp(prefix="cartage-bench-envoy-"))
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in CONFIGS}
    try:
        backend_port, port, admin_port = free_port(), free_port(), free_port()
        spawn(pinned(1, [sys.executable, "-m", "bench.envoy_alone", "--backend",
                         str(backend_port)]),
              dict(os.environ), tmp / "backend.log", backend_port, "stand-in backend")
        token, jwks = token_and_jwks()
        body = json.dumps(json_format.MessageToDict(bench_order()), separators=(",", ":"))
        auth = f'wrk.headers["authorization"] = "Bearer " .. {lua_str(token)}\n'
        scripts = {"get_order": tmp / "get.lua", "create_order": tmp / "create.lua"}
        scripts["get_order"].write_text(
            auth + 'request = function() return wrk.format("GET", "/v1/orders/x") end\n'
            + WRK_DONE)
        scripts["create_order"].write_text(
            auth + 'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n'
            f"wrk.body = {lua_str(body)}\n"
            'request = function() return wrk.format(nil, "/v1/orders") end\n' + WRK_DONE)
        built = configs(port, admin_port, backend_port, jwks, tmp)
        for n in range(args.rounds):
            log(f"round {n + 1}/{args.rounds}")
            for name in CONFIGS:
                rounds[name].append(asyncio.run(
                    measure(built[name], name, tmp, port, scripts, args.seconds)))
    finally:
        stop_owned()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {name: {phase: {field: round(statistics.median(r[phase][field] for r in rs), 1)
                              for field in ("requests_per_s", "envoy_us_per_request", "p99_ms")}
                      for phase in ("get_order", "create_order")}
               for name, rs in rounds.items()}
    for name, phases in summary.items():
        log(f"median {name}: " + ", ".join(
            f"{phase} {v['envoy_us_per_request']} µs/request ({v['requests_per_s']} req/s)"
            for phase, v in phases.items()))
    report = {"benchmark": "envoy_alone", "timestamp": stamp,
              "config": {"seconds": args.seconds, "rounds": args.rounds,
                         "connections": CONNECTIONS, "envoy_concurrency": 1,
                         "pinned": pinned(0, []) != [],
                         "response": "the benchmark order, ~1.1 KB protobuf / ~2.2 KB JSON"},
              "median": summary, "rounds": rounds,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
