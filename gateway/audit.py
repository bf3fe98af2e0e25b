"""The audit trail: Envoy streams one record per request to this collector, which appends it to
`gateway.audit_log` in a hash chain.

    python -m gateway.audit serve     the collector (OTLP logs over gRPC, from Envoy's
                                      open_telemetry access logger)
    python -m gateway.audit verify    walk the chain and check its anchors; exit 1 naming
                                      the check that failed and the first broken record
    python -m gateway.audit anchor    sign the chain's head now (AUDIT_ANCHOR_KEY_FILE)
    python -m gateway.audit keygen PRIVATE PUBLIC   an Ed25519 anchor key pair (PEM files)

Each record's hash is SHA-256 over the previous record's hash, its sequence number and its
canonical JSON, so an edited, deleted, inserted or reordered record breaks the chain at that
point. The table also refuses UPDATE/DELETE with a trigger. What a chain alone cannot catch is
someone who can write the table recomputing the hashes: rewriting the whole chain, inserting a
record and rehashing everything after it, or cutting off the tail. So the collector *anchors*
the head: every AUDIT_ANCHOR_SECONDS (and on demand) it signs (sequence number, hash, time)
with an Ed25519 key that only it holds (AUDIT_ANCHOR_KEY_FILE; the database never sees it) and
stores the signed anchor in `gateway.audit_anchor` and, with AUDIT_ANCHOR_FILE, appends it to
a file outside the database. Anchors are signed, so wherever they are stored nobody without the
key can forge one; `verify` needs the public key only (AUDIT_ANCHOR_PUBLIC_KEY_FILE) and reads
anchors from the table and the file, so deleting anchors from the table does not hide a
truncation either. The collector also refuses to anchor a head whose chain no longer contains
the head it anchored last (it logs an error instead): it never signs over a rewrite.

Not caught: records forged *after* the newest anchor are protected by the chain only, until
the next anchor signs them as if genuine (the window is AUDIT_ANCHOR_SECONDS); an anchor
deleted from both the table and the file.

Envoy's access-log stream is best effort (records are dropped if the collector is down); the
file access log next to it is the fallback for completeness, this table for integrity.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
import uvloop
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
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

audit_anchor = sa.Table(
    "audit_anchor",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
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


ANCHOR_CONTEXT = b"cartage.audit.anchor.v1\n"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def write_key_pair(private_path: str | Path, public_path: str | Path) -> Ed25519PrivateKey:
    """A fresh anchor key pair as PEM files (the private one readable by its owner only)."""
    key = Ed25519PrivateKey.generate()
    private = Path(private_path)
    private.touch(mode=0o600)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    Path(public_path).write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


@dataclass(frozen=True)
class Anchor:
    """A signed statement "the chain's record `seq` has hash `hash`", made at `signed_at`."""

    seq: int
    hash: bytes
    signed_at: str
    key_id: str
    payload: str  # canonical JSON of the four fields above, exactly as signed
    signature: bytes
    source: str = "table"

    @classmethod
    def sign(cls, key: Ed25519PrivateKey, seq: int, digest: bytes) -> Anchor:
        signed_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        payload = canonical({"seq": seq, "hash": digest.hex(), "signed_at": signed_at,
                             "key_id": key_id(key.public_key())})
        return cls.parse(payload, key.sign(ANCHOR_CONTEXT + payload.encode()), "table")

    @classmethod
    def parse(cls, payload: str, signature: bytes, source: str) -> Anchor:
        fields = json.loads(payload)
        return cls(int(fields["seq"]), bytes.fromhex(fields["hash"]), str(fields["signed_at"]),
                   str(fields["key_id"]), payload, signature, source)

    def signed_by(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(self.signature, ANCHOR_CONTEXT + self.payload.encode())
        except InvalidSignature:
            return False
        return True

    def line(self) -> str:
        return json.dumps({"payload": self.payload,
                           "signature": base64.b64encode(self.signature).decode()}) + "\n"


def read_anchor_file(path: str | Path) -> list[Anchor]:
    source = Path(path)
    if not source.exists():
        return []
    return [Anchor.parse(entry["payload"], base64.b64decode(entry["signature"]), str(source))
            for entry in (json.loads(line) for line in source.read_text().splitlines()
                          if line.strip())]


@dataclass(frozen=True)
class Verdict:
    records: int
    broken: int | None  # the first record that fails, None when everything holds
    check: str | None  # sequence, link, content, anchor-signature, anchor-mismatch,
    #                    truncated, no-anchor; None when everything holds
    detail: str  # the head hash (hex) when everything holds, else what failed
    anchors: int = 0
    anchored_up_to: int = 0

    @property
    def ok(self) -> bool:
        return self.check is None


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

    async def head(self) -> tuple[int, bytes]:
        async with self._engine.connect() as conn:
            last = (await conn.execute(sa.select(audit_log.c.seq, audit_log.c.hash)
                                       .order_by(audit_log.c.seq.desc()).limit(1))).first()
        return (last.seq, bytes(last.hash)) if last else (0, GENESIS)

    async def hash_at(self, seq: int) -> bytes | None:
        async with self._engine.connect() as conn:
            found = await conn.scalar(sa.select(audit_log.c.hash).where(audit_log.c.seq == seq))
        return bytes(found) if found is not None else None

    async def follows(self, seq: int, digest: bytes) -> str | None:
        """None if record `seq` still has hash `digest` and every record after it chains from
        it; else what is wrong (the collector's check before it anchors a newer head)."""
        if await self.hash_at(seq) != digest:
            return f"record {seq} no longer has the hash anchored for it"
        async with self._engine.connect() as conn:
            result = await conn.stream(sa.select(audit_log).where(audit_log.c.seq > seq)
                                       .order_by(audit_log.c.seq))
            async for row in result:
                seq += 1
                if (row.seq != seq or bytes(row.prev_hash) != digest
                        or chain_hash(digest, row.seq, row.record) != bytes(row.hash)):
                    return f"record {seq} does not chain from the anchored head"
                digest = bytes(row.hash)
        return None

    async def save_anchor(self, anchor: Anchor) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(audit_anchor).values(
                seq=anchor.seq, payload=anchor.payload, signature=anchor.signature))

    async def anchors(self) -> list[Anchor]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(audit_anchor).order_by(audit_anchor.c.id))
            return [Anchor.parse(r.payload, bytes(r.signature), "table") for r in rows]

    async def check(self, public_keys: Sequence[Ed25519PublicKey] = (),
                    extra_anchors: Sequence[Anchor] = ()) -> Verdict:
        """Walk the chain, then (given public keys) hold it against every anchor in the table
        and in `extra_anchors` (an anchor file). The verdict names the check that failed."""
        prev, expected_seq, count = GENESIS, 1, 0
        anchors: list[Anchor] = []
        if public_keys:
            anchors = [*await self.anchors(), *extra_anchors]
            by_id = {key_id(k): k for k in public_keys}
            for anchor in anchors:
                key = by_id.get(anchor.key_id)
                if key is None or not anchor.signed_by(key):
                    return Verdict(0, anchor.seq, "anchor-signature",
                                   f"the anchor of record {anchor.seq} ({anchor.source}) is not "
                                   f"signed by the anchor key", len(anchors))
        anchored: dict[int, list[Anchor]] = {}
        for anchor in anchors:
            anchored.setdefault(anchor.seq, []).append(anchor)
        async with self._engine.connect() as conn:
            result = await conn.stream(sa.select(audit_log).order_by(audit_log.c.seq))
            async for row in result:
                if row.seq != expected_seq:
                    return Verdict(count, row.seq, "sequence",
                                   f"record {expected_seq} is missing", len(anchors))
                if bytes(row.prev_hash) != prev:
                    return Verdict(count, row.seq, "link",
                                   "does not follow the record before it", len(anchors))
                if chain_hash(prev, row.seq, row.record) != bytes(row.hash):
                    return Verdict(count, row.seq, "content",
                                   "was changed after it was written", len(anchors))
                for anchor in anchored.get(row.seq, ()):
                    if anchor.hash != bytes(row.hash):
                        return Verdict(
                            count, row.seq, "anchor-mismatch",
                            f"differs from the head signed at {anchor.signed_at}: the chain "
                            f"was rewritten up to here (or a record inserted before it)",
                            len(anchors))
                prev, expected_seq, count = bytes(row.hash), expected_seq + 1, count + 1
        beyond = [a for a in anchors if a.seq > count]
        if beyond:
            top = max(beyond, key=lambda a: a.seq)
            return Verdict(count, count + 1, "truncated",
                           f"the chain ends at record {count} but record {top.seq} was "
                           f"anchored at {top.signed_at}", len(anchors))
        if public_keys and count and not anchors:
            return Verdict(count, None, "no-anchor",
                           "no anchor at all: the chain is unproven against a rewrite", 0)
        return Verdict(count, None, None, prev.hex(), len(anchors),
                       max((a.seq for a in anchors), default=0))

    async def verify(self) -> tuple[int, int | None, str]:
        """(records checked, first broken seq or None, head hash hex or the reason): the
        chain alone, without anchors (see check())."""
        verdict = await self.check()
        return verdict.records, verdict.broken, verdict.detail

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


class ChainRewritten(RuntimeError):
    """The chain no longer contains the head this anchorer signed last."""


@dataclass
class Anchorer:
    """Signs the chain's head with the collector's anchor key, on demand (`anchor_now`) and
    every `every` seconds (`run`)."""

    store: AuditStore
    key: Ed25519PrivateKey
    file: Path | None = None
    _last: tuple[int, bytes] | None = field(default=None, init=False)

    async def anchor_now(self) -> Anchor | None:
        """Sign the current head (None: the chain is empty). Raises ChainRewritten, signing
        nothing, when the head this anchorer signed last is no longer in the chain or the
        records after it do not chain from it (checking since the last anchor only: the whole
        chain is `verify`'s job)."""
        if self._last is None:  # after a restart: the newest anchor this key signed
            public = self.key.public_key()
            mine = [a for a in await self.store.anchors()
                    if a.key_id == key_id(public) and a.signed_by(public)]
            if mine:
                newest = max(mine, key=lambda a: a.seq)
                self._last = (newest.seq, newest.hash)
        if self._last is not None:
            wrong = await self.store.follows(*self._last)
            if wrong is not None:
                raise ChainRewritten(wrong)
        seq, digest = await self.store.head()
        if seq == 0:
            return None
        anchor = Anchor.sign(self.key, seq, digest)
        if self.file is not None:
            with self.file.open("a") as out:  # first outside the database
                out.write(anchor.line())
                out.flush()
                os.fsync(out.fileno())
        await self.store.save_anchor(anchor)
        self._last = (seq, digest)
        return anchor

    async def run(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                anchor = await self.anchor_now()
                if anchor is not None:
                    log.info("audit head anchored", extra={"seq": anchor.seq})
            except ChainRewritten as error:
                log.error("audit chain rewritten; not anchoring: %s", error)
            except Exception:
                log.exception("audit anchor failed; retrying next period")


async def _serve(database_url: str, address: str, anchorer_of: Any = None,
                 anchor_seconds: float = 60.0, metrics_port: int = 0) -> None:
    await ClientRegistry.migrate(database_url)
    engine = create_engine(database_url, pool_size=2)
    server, port = await start_collector(engine, address)
    metrics = (MetricsServer(metrics_port, bind_host(address)) if metrics_port else None)
    log.info("audit collector listening", extra={"port": port, "schema": SCHEMA})
    anchoring = None
    if anchorer_of is not None:
        anchoring = asyncio.create_task(anchorer_of(AuditStore(engine)).run(anchor_seconds))
    else:
        log.warning("no AUDIT_ANCHOR_KEY_FILE: the chain's head is not anchored")
    try:
        await server.wait_for_termination()
    finally:
        if metrics is not None:
            metrics.close()
        if anchoring is not None:
            anchoring.cancel()
        await engine.dispose()


async def _verify(database_url: str, public_key: str, anchor_file: str) -> int:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    keys = [load_public_key(public_key)] if public_key else []
    extra = read_anchor_file(anchor_file) if anchor_file else []
    try:
        verdict = await AuditStore(engine).check(keys, extra)
    finally:
        await engine.dispose()
    if verdict.ok:
        anchored = (f", {verdict.anchors} anchors, anchored up to record "
                    f"{verdict.anchored_up_to}" if keys else ", anchors not checked (no "
                    "AUDIT_ANCHOR_PUBLIC_KEY_FILE)")
        sys.stdout.write(f"ok: {verdict.records} records, head {verdict.detail}{anchored}\n")
        return 0
    sys.stdout.write(f"BROKEN at record {verdict.broken} [{verdict.check}]: {verdict.detail} "
                     f"({verdict.records} records before it ok)\n")
    return 1


async def _anchor(database_url: str, key_file: str, anchor_file: str) -> int:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        anchor = await Anchorer(AuditStore(engine), load_private_key(key_file),
                                Path(anchor_file) if anchor_file else None).anchor_now()
    finally:
        await engine.dispose()
    sys.stdout.write("nothing to anchor: the chain is empty\n" if anchor is None
                     else f"anchored record {anchor.seq}, hash {anchor.hash.hex()}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.audit")
    parser.add_argument("command", choices=["serve", "verify", "anchor", "keygen"])
    parser.add_argument("paths", nargs="*", help="keygen: PRIVATE PUBLIC")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        if len(args.paths) != 2:
            parser.error("keygen needs PRIVATE and PUBLIC paths")
        write_key_pair(*args.paths)
        return 0
    env = Env(os.environ)
    database_url = env.str("DATABASE_URL")
    anchor_file = env.str("AUDIT_ANCHOR_FILE", "")
    if args.command == "verify":
        return asyncio.run(_verify(database_url, env.str("AUDIT_ANCHOR_PUBLIC_KEY_FILE", ""),
                                   anchor_file))
    key_file = env.str("AUDIT_ANCHOR_KEY_FILE", "")
    if args.command == "anchor":
        if not key_file:
            parser.error("anchor needs AUDIT_ANCHOR_KEY_FILE")
        return asyncio.run(_anchor(database_url, key_file, anchor_file))
    from services.kit.log import configure_logging

    configure_logging("audit", env.str("LOG_LEVEL", "INFO"))
    anchorer_of = None
    if key_file:
        key = load_private_key(key_file)

        def anchorer_of(store: AuditStore) -> Anchorer:
            return Anchorer(store, key, Path(anchor_file) if anchor_file else None)
    # uvloop, like the services: under load the collector's stock asyncio loop spent ~40 % of
    # its CPU in select() and socket writes.
    uvloop.run(_serve(database_url, env.str("AUDIT_GRPC_ADDRESS", "127.0.0.1:8091"),
                      anchorer_of, env.float("AUDIT_ANCHOR_SECONDS", 60.0),
                      env.int("AUDIT_METRICS_PORT", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
