"""Prometheus metrics of the gateway's own servers, served like the services' (kit.metrics):
the authorization server on `AUTH_METRICS_PORT`, the audit collector on `AUDIT_METRICS_PORT`
(0, the default: off). Envoy's own stats come from its admin endpoint.

    cartage_http_requests_total{route, code}       authorization server requests
    cartage_http_request_duration_seconds{route}   … and their latency
    cartage_audit_records_total                    audit records appended to the chain
    cartage_audit_export_failures_total            exports from Envoy the collector refused
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter, Histogram

HTTP_HANDLED = Counter("cartage_http_requests", "HTTP requests, by route and status code",
                       ["route", "code"])
HTTP_SECONDS = Histogram(
    "cartage_http_request_duration_seconds", "HTTP request latency, by route", ["route"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
AUDIT_RECORDS = Counter("cartage_audit_records", "Audit records appended to the hash chain")
AUDIT_FAILURES = Counter("cartage_audit_export_failures",
                         "Exports from Envoy the collector could not store")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HttpMetrics:
    """ASGI middleware: one count and one latency sample per request. Routes are the app's
    known paths; anything else is `other`, so that scanners cannot grow the label set."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 routes: set[str]) -> None:
        self._app = app
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self._routes else "other"
        started = time.perf_counter()
        status = [500]

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            HTTP_HANDLED.labels(route, str(status[0])).inc()
            HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
