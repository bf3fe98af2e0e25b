"""Prometheus metrics, one set for every service, served on `<PREFIX>_METRICS_PORT` (0: off).

    cartage_rpc_handled_total{grpc_service, grpc_method, grpc_code}   RPCs completed
    cartage_rpc_duration_seconds{grpc_service, grpc_method}           their latency (histogram)
    cartage_outbox_published_total{relay}                             rows the relay published
    cartage_outbox_backlog{relay}                 unpublished outbox rows   (the leading relay,
    cartage_outbox_relay_lag_seconds{relay}       the oldest one's age       each report interval)
    cartage_consumer_redeliveries_total{consumer} events delivered again (num_delivered > 1)
    cartage_consumer_dead_letters_total{consumer} events dead-lettered after max_attempts
    cartage_idempotency_replays_total{method}     repeats answered with the stored response

The RPC metrics come from the kit's interceptor (`kit.server`: every unary and server-streaming
RPC of every service, with the status code the caller got), the others from the relay
(`kit.relay`), the consumer runner (`kit.messaging`) and `kit.idempotency`.

Worker processes (`<PREFIX>_WORKERS` > 1) use prometheus_client's multiprocess mode: the parent
process makes a directory, names it in PROMETHEUS_MULTIPROC_DIR before it spawns the workers
(which then keep their values in files there) and serves the sum over them on the one port, so
a pod has one scrape target whatever its worker count. A dead worker's live gauges are dropped
(`worker_exited`); its counters stay in the sum, as counters must.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

RPC_HANDLED = Counter(
    "cartage_rpc_handled", "RPCs completed, by method and status code",
    ["grpc_service", "grpc_method", "grpc_code"])
RPC_SECONDS = Histogram(
    "cartage_rpc_duration_seconds", "RPC latency, from the request parsed to the status sent",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
OUTBOX_PUBLISHED = Counter(
    "cartage_outbox_published", "Outbox rows published to JetStream (acked and stamped)",
    ["relay"])
OUTBOX_BACKLOG = Gauge(
    "cartage_outbox_backlog", "Unpublished outbox rows, as the leading relay last counted them",
    ["relay"], multiprocess_mode="livemax")
OUTBOX_LAG = Gauge(
    "cartage_outbox_relay_lag_seconds",
    "Age of the oldest unpublished outbox row (0: none), as the leading relay last saw it",
    ["relay"], multiprocess_mode="livemax")
CONSUMER_REDELIVERIES = Counter(
    "cartage_consumer_redeliveries", "Events delivered again to a consumer", ["consumer"])
CONSUMER_DEAD_LETTERS = Counter(
    "cartage_consumer_dead_letters", "Events dead-lettered after the last attempt",
    ["consumer"])
IDEMPOTENCY_REPLAYS = Counter(
    "cartage_idempotency_replays", "Repeated requests answered with the stored response",
    ["method"])


def observe_rpc(method: str, code: str, seconds: float) -> None:
    """`method` as gRPC names it: `/package.Service/Method`."""
    service, _, name = method.lstrip("/").rpartition("/")
    RPC_HANDLED.labels(service, name, code).inc()
    RPC_SECONDS.labels(service, name).observe(seconds)


def bind_host(grpc_address: str) -> str:
    """The metrics server listens where the gRPC server does (loopback in make run, every
    interface in a pod)."""
    if grpc_address.startswith("unix:"):
        return "127.0.0.1"
    host = grpc_address.rsplit(":", 1)[0].strip("[]")
    return host or "0.0.0.0"


class MetricsServer:
    """`/metrics` over HTTP in a thread of the process that serves it."""

    def __init__(self, port: int, host: str, registry: CollectorRegistry = REGISTRY) -> None:
        self._server: Any
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WorkerMetrics:
    """The parent of worker processes: the shared directory and the summing server."""

    def __init__(self, name: str, port: int, host: str) -> None:
        self.directory = tempfile.mkdtemp(prefix=f"cartage-{name}-metrics-")
        os.environ[MULTIPROC_ENV] = self.directory  # inherited by the workers it spawns
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        self.server = MetricsServer(port, host, registry)

    def worker_exited(self, pid: int | None) -> None:
        if pid is not None:
            multiprocess.mark_process_dead(pid, self.directory)

    def close(self) -> None:
        self.server.close()
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(self.directory, ignore_errors=True)
