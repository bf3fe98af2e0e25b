"""The audit trail: every request through Envoy lands, hash-chained, in Postgres; the chain
names the first edited, deleted or reordered record."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditStore
from gateway.audit import main as audit_cli
from gateway.auth.clients import ClientRegistry
from services.kit.db import create_engine
from tests.e2e.conftest import Partner
from tests.e2e.test_gateway_journeys import order_json
from tests.support import eventually

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]


async def test_every_request_is_audited_in_an_intact_chain(
        partner: Partner, engine: AsyncEngine) -> None:
    key = uuid.uuid4().hex
    created = await partner.http.post("/v1/orders", json=order_json(),
                                      headers={"Idempotency-Key": key})
    denied = await partner.http.get("/v1/orders", headers={"authorization": "Bearer nope"})
    store = AuditStore(engine)

    async def mine() -> list[dict[str, Any]]:
        return [r for r in await store.records()
                if r.get("request_id") in (created.headers["x-request-id"],
                                           denied.headers["x-request-id"])]

    records = await eventually(lambda: _two(mine))
    by_status = {r["http_status"]: r for r in records}
    write = by_status["200"]
    assert write["client_id"] == partner.client_id and write["token_id"]
    assert write["method"] == "POST" and write["path"] == "/v1/orders"
    assert write["rpc"] == "cartage.order.v1.OrderService/CreateOrder"
    assert write["idempotency_key"] == key and write["source_ip"] == "127.0.0.1"
    assert write["time"].endswith("Z") and int(write["duration_ms"]) >= 0
    assert by_status["401"]["client_id"] is None
    count, broken, _ = await store.verify()
    assert broken is None and count >= 2


async def _two(fetch: Any) -> list[dict[str, Any]] | None:
    found = await fetch()
    return found if len(found) >= 2 else None


@pytest.fixture
async def scratch(fresh_database: str) -> AsyncIterator[tuple[AuditStore, AsyncEngine, str]]:
    await ClientRegistry.migrate(fresh_database)
    engine = create_engine(fresh_database, pool_size=2)
    store = AuditStore(engine)
    await store.append({"n": i, "path": f"/v1/orders/{i}"} for i in range(1, 7))
    yield store, engine, fresh_database
    await engine.dispose()


async def tamper(engine: AsyncEngine, sql: str) -> None:
    async with engine.begin() as conn:
        # What a database administrator could do; the trigger stops everyone else.
        await conn.execute(sa.text("ALTER TABLE gateway.audit_log DISABLE TRIGGER USER"))
        await conn.execute(sa.text(sql))
        await conn.execute(sa.text("ALTER TABLE gateway.audit_log ENABLE TRIGGER USER"))


async def test_the_table_refuses_changes(scratch: tuple[AuditStore, AsyncEngine, str]) -> None:
    _, engine, _ = scratch
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM gateway.audit_log WHERE seq = 2"))


@pytest.mark.parametrize(("sql", "first_broken", "intact"), [
    ("UPDATE gateway.audit_log SET record = replace(record, '/v1/orders/3', '/v1/x') "
     "WHERE seq = 3", 3, 2),
    ("DELETE FROM gateway.audit_log WHERE seq = 4", 5, 3),
    # Swap the contents (and hashes) of records 2 and 5, keeping the sequence numbers.
    ("UPDATE gateway.audit_log a SET record = b.record, prev_hash = b.prev_hash, hash = b.hash "
     "FROM gateway.audit_log b WHERE (a.seq, b.seq) IN ((2, 5), (5, 2))", 2, 1),
])
async def test_the_chain_names_the_first_broken_record(
        scratch: tuple[AuditStore, AsyncEngine, str], sql: str, first_broken: int, intact: int,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store, engine, url = scratch
    assert (await store.verify())[1] is None
    await tamper(engine, sql)
    count, broken, reason = await store.verify()
    assert broken == first_broken, reason
    assert count == intact
    monkeypatch.setenv("DATABASE_URL", url)
    assert await asyncio.to_thread(audit_cli, ["verify"]) == 1
    assert f"BROKEN at record {first_broken}" in capsys.readouterr().out
