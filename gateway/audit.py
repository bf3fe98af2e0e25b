"""The audit trail: Envoy streams one record per request to this collector, which appends it to
`gateway.audit_log` in a hash chain.

    python -m gateway.audit serve     the collector (OTLP logs over gRPC, from Envoy's
                                      open_telemetry access logger)
    python -m gateway.audit verify    walk the chain; exit 1 naming the first broken record

Each record's hash is SHA-256 over the previous record's hash, its sequence number and its
canonical JSON, so an edited, deleted, inserted or reordered record breaks the chain at that
point. The table also refuses UPDATE/DELETE with a trigger. What a chain alone cannot catch is
someone rewriting the whole tail consistently: publish the head hash (`verify` prints it)
somewhere the database's administrators cannot write.

Envoy's access-log stream is best effort (records are dropped if the collector is down); the
file access log next to it is the fallback for completeness, this table for integrity.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

import grpc
import sqlalchemy as sa
import uvloop
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clients import SCHEMA, ClientRegistry, metadata
from gateway.metrics import AUDIT_FAILURES, AUDIT_RECORDS
from services.kit.config import Env
from services.kit.db import create_engine, insert_many
from services.kit.metrics import MetricsServer, bind_host

log = logging.getLogger("cartage.audit")
GENESIS = b"\0" * 32

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.LargeBinary, nullable=False),
    sa.Column("hash", sa.LargeBinary, nullable=False),
)

# What Envoy sends per request (attributes of the OTLP log record); see gateway.envoy_config.
AUDIT_FIELDS = {
    "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "client_id": "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:client_id)%",
    "token_id": "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:jti)%",
    "source_ip": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%",
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "rpc": "%ROUTE_NAME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "idempotency_key": "%REQ(IDEMPOTENCY-KEY)%",
    "http_status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS%",
    # What the collector needs to tell the true outcome (see outcome()); not stored.
    "service_grpc_status": "%DYNAMIC_METADATA(cartage.outcome:grpc_status)%",
    "response_content_type": "%RESP(CONTENT-TYPE)%",
    "duration_ms": "%DURATION%",
    "gateway": "%HOSTNAME%",
}


# google.rpc.Code → the names Envoy's %GRPC_STATUS% writes.
CODE_NAMES = ("OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
              "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
              "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
              "Unauthenticated")


def _code_name(code: int) -> str:
    return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else "Unknown"


# A token sent in the URL is refused (the gateway reads the Authorization header only), but the
# path would still carry it into a trail that can never be edited: it is replaced here.
URL_TOKEN = re.compile(r"(?<=[?&]access_token=)[^&]*", re.IGNORECASE)


def outcome(raw: dict[str, Any]) -> dict[str, Any]:
    """The record to store (a URL's `access_token` redacted); `grpc_status` is the true
    outcome for REST and gRPC callers alike.

    - The service answered with an error: its own grpc-status (kept by the `cartage.outcome`
      filter before the transcoder turned it into an HTTP status).
    - A gRPC response (a service's OK, or the gateway's own reply to a gRPC caller): Envoy's
      %GRPC_STATUS%, read from that response's grpc-status.
    - A REST response without a service error: 2xx is OK; the gateway's own replies (401, 403,
      429, the strict JSON check's 400 ...) carry the code their JSON body has
      (gateway.envoy_config.LOCAL_REPLY_CODES). %GRPC_STATUS% would guess from the HTTP code
      with the gRPC-over-HTTP mapping (400 → Internal, 404 → Unimplemented, 429 → Unavailable).
    """
    from gateway.envoy_config import LOCAL_REPLY_CODES

    record = dict(raw)
    if isinstance(record.get("path"), str):
        record["path"] = URL_TOKEN.sub("REDACTED", record["path"])
    service = record.pop("service_grpc_status", None)
    content_type = record.pop("response_content_type", None) or ""
    if service is not None and str(service).isdigit():
        record["grpc_status"] = _code_name(int(service))
    elif not content_type.startswith("application/grpc"):
        http = int(record["http_status"]) if str(record.get("http_status")).isdigit() else 0
        record["grpc_status"] = ("OK" if 200 <= http < 300
                                 else _code_name(LOCAL_REPLY_CODES.get(http, 2)))
    return record


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev: bytes, seq: int, record: str) -> bytes:
    return hashlib.sha256(prev + seq.to_bytes(8, "big") + record.encode()).digest()


class AuditStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append records in order; one transaction, serialized across collectors."""
        rows = [canonical(r) for r in records]
        if not rows:
            return 0
        async with self._engine.begin() as conn:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
                sa.func.hashtextextended("gateway.audit_log", 0))))
            last = (await conn.execute(sa.select(audit_log.c.seq, audit_log.c.hash)
                                       .order_by(audit_log.c.seq.desc()).limit(1))).first()
            seq, prev = (last.seq, bytes(last.hash)) if last else (0, GENESIS)
            values = []
            for record in rows:
                seq += 1
                digest = chain_hash(prev, seq, record)
                values.append({"seq": seq, "record": record, "prev_hash": prev, "hash": digest})
                prev = digest
            await insert_many(conn, audit_log, values)
        return len(values)

    async def verify(self) -> tuple[int, int | None, str]:
        """(records checked, first broken seq or None, head hash hex or the reason)."""
        prev, expected_seq, count = GENESIS, 1, 0
        async with self._engine.connect() as conn:
            result = await conn.stream(sa.select(audit_log).order_by(audit_log.c.seq))
            async for row in result:
                if row.seq != expected_seq:
                    return count, row.seq, f"record {expected_seq} is missing"
                if bytes(row.prev_hash) != prev:
                    return count, row.seq, "does not follow the record before it"
                if chain_hash(prev, row.seq, row.record) != bytes(row.hash):
                    return count, row.seq, "was changed after it was written"
                prev, expected_seq, count = bytes(row.hash), expected_seq + 1, count + 1
        return count, None, prev.hex()

    async def records(self) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(audit_log.c.record).order_by(audit_log.c.seq))
            return [json.loads(r.record) for r in rows]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Collector(logs_service_pb2_grpc.LogsServiceServicer):
    """OTLP LogsService: what Envoy's open_telemetry access logger calls."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def Export(self, request: logs_service_pb2.ExportLogsServiceRequest,
                     context: grpc.aio.ServicerContext
                     ) -> logs_service_pb2.ExportLogsServiceResponse:
        records = []
        for resource in request.resource_logs:
            for scope in resource.scope_logs:
                for entry in scope.log_records:
                    record = {a.key: _value(a.value) for a in entry.attributes}
                    # Envoy writes "-" for a value it does not have.
                    records.append(outcome({k: (None if v in ("-", "") else v)
                                            for k, v in record.items()}))
        try:
            await self._store.append(records)
        except Exception:
            AUDIT_FAILURES.inc()
            raise
        AUDIT_RECORDS.inc(len(records))
        return logs_service_pb2.ExportLogsServiceResponse()


async def start_collector(engine: AsyncEngine, address: str) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Collector(AuditStore(engine)),
                                                            server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


async def _serve(database_url: str, address: str, metrics_port: int = 0) -> None:
    await ClientRegistry.migrate(database_url)
    engine = create_engine(database_url, pool_size=2)
    server, port = await start_collector(engine, address)
    metrics = (MetricsServer(metrics_port, bind_host(address)) if metrics_port else None)
    log.info("audit collector listening", extra={"port": port, "schema": SCHEMA})
    try:
        await server.wait_for_termination()
    finally:
        if metrics is not None:
            metrics.close()
        await engine.dispose()


async def _verify(database_url: str) -> int:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        count, broken, detail = await AuditStore(engine).verify()
    finally:
        await engine.dispose()
    if broken is None:
        sys.stdout.write(f"ok: {count} records, head {detail}\n")
        return 0
    sys.stdout.write(f"BROKEN at record {broken}: {detail} ({count} records before it ok)\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.audit")
    parser.add_argument("command", choices=["serve", "verify"])
    args = parser.parse_args(argv)
    env = Env(os.environ)
    database_url = env.str("DATABASE_URL")
    if args.command == "verify":
        return asyncio.run(_verify(database_url))
    from services.kit.log import configure_logging

    configure_logging("audit", env.str("LOG_LEVEL", "INFO"))
    # uvloop, like the services: under load the collector's stock asyncio loop spent ~40 % of
    # its CPU in select() and socket writes.
    uvloop.run(_serve(database_url, env.str("AUDIT_GRPC_ADDRESS", "127.0.0.1:8091"),
                      env.int("AUDIT_METRICS_PORT", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
