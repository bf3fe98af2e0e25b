"""The audit trail: every request through Envoy lands, hash-chained, in Postgres; the chain
names the first edited, deleted or reordered record, and the signed anchors of its head catch
what a chain cannot: an insert with recomputed hashes, a cut-off tail, a rewrite of the whole
chain."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import (
    GENESIS,
    Anchor,
    Anchorer,
    AuditStore,
    ChainRewritten,
    canonical,
    chain_hash,
    read_anchor_file,
    write_key_pair,
)
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


@dataclass
class Anchored:
    store: AuditStore
    engine: AsyncEngine
    url: str
    anchorer: Anchorer
    private: Path
    public: Path
    file: Path


@pytest.fixture
async def anchored(scratch: tuple[AuditStore, AsyncEngine, str],
                   tmp_path: Path) -> Anchored:
    """Six records, the head anchored at record 3 and at record 6, by a key made here."""
    store, engine, url = scratch
    private, public, file = (tmp_path / "anchor.key", tmp_path / "anchor.pub",
                             tmp_path / "anchors.jsonl")
    key = write_key_pair(private, public)
    assert private.stat().st_mode & 0o077 == 0
    async with engine.begin() as conn:  # back to three records, to anchor record 3 first
        await conn.execute(sa.text("ALTER TABLE gateway.audit_log DISABLE TRIGGER USER"))
        await conn.execute(sa.text("DELETE FROM gateway.audit_log WHERE seq > 3"))
        await conn.execute(sa.text("ALTER TABLE gateway.audit_log ENABLE TRIGGER USER"))
    anchorer = Anchorer(store, key, file)
    assert (await anchorer.anchor_now()).seq == 3  # type: ignore[union-attr]
    await store.append({"n": i, "path": f"/v1/orders/{i}"} for i in range(4, 7))
    assert (await anchorer.anchor_now()).seq == 6  # type: ignore[union-attr]
    return Anchored(store, engine, url, anchorer, private, public, file)


async def rewrite(engine: AsyncEngine, change: Any) -> None:
    """Replace the chain by change(records) with every hash recomputed: what someone who can
    write the table, and knows how the chain is made, can do."""
    async with engine.connect() as conn:
        records = [r.record for r in await conn.execute(
            sa.text("SELECT record FROM gateway.audit_log ORDER BY seq"))]
    rows, prev = [], GENESIS
    for seq, record in enumerate(change(records), start=1):
        digest = chain_hash(prev, seq, record)
        rows.append({"seq": seq, "record": record, "prev": prev, "hash": digest})
        prev = digest
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE gateway.audit_log DISABLE TRIGGER USER"))
        await conn.execute(sa.text("DELETE FROM gateway.audit_log"))
        for row in rows:
            await conn.execute(sa.text(
                "INSERT INTO gateway.audit_log (seq, record, prev_hash, hash) "
                "VALUES (:seq, :record, :prev, :hash)"), row)
        await conn.execute(sa.text("ALTER TABLE gateway.audit_log ENABLE TRIGGER USER"))


def forged(n: int) -> str:
    return canonical({"n": n, "path": "/v1/orders/forged"})


TAMPERING: dict[str, tuple[str | Any, str, int]] = {
    # name: (SQL, or a change for rewrite(); the check that fails; the record it names)
    "edit": ("UPDATE gateway.audit_log SET record = replace(record, '/v1/orders/5', '/v1/x') "
             "WHERE seq = 5", "content", 5),
    "delete": ("DELETE FROM gateway.audit_log WHERE seq = 4", "sequence", 5),
    "reorder": ("UPDATE gateway.audit_log a SET record = b.record, prev_hash = b.prev_hash, "
                "hash = b.hash FROM gateway.audit_log b WHERE (a.seq, b.seq) IN ((4, 5), (5, 4))",
                "link", 4),
    "insert without rehashing": (
        "INSERT INTO gateway.audit_log (seq, record, prev_hash, hash) SELECT 7, record, hash, "
        "hash FROM gateway.audit_log WHERE seq = 6", "content", 7),
    "insert, rehashed": (lambda rs: [*rs[:4], forged(0), *rs[4:]], "anchor-mismatch", 6),
    "tail truncated": ("DELETE FROM gateway.audit_log WHERE seq > 4", "truncated", 5),
    "tail truncated, rehashed": (lambda rs: rs[:5], "truncated", 6),
    "whole chain rewritten": (lambda rs: [forged(i) for i in range(len(rs))],
                              "anchor-mismatch", 3),
    "one early record rewritten, rehashed": (
        lambda rs: [forged(1), *rs[1:]], "anchor-mismatch", 3),
}


@pytest.mark.parametrize("case", list(TAMPERING))
async def test_the_anchored_chain_names_the_check_that_failed(
        anchored: Anchored, case: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.audit import load_private_key, load_public_key

    key = load_public_key(anchored.public)
    intact = await anchored.store.check([key])
    assert intact.ok and intact.records == 6 and intact.anchors == 2, intact
    assert intact.anchored_up_to == 6
    how, check, seq = TAMPERING[case]
    if isinstance(how, str):
        await tamper(anchored.engine, how)
    else:
        await rewrite(anchored.engine, how)
    verdict = await anchored.store.check([key])
    assert (verdict.check, verdict.broken) == (check, seq), verdict
    # The chain alone misses what was rehashed consistently.
    chain_only = await anchored.store.check()
    assert chain_only.ok == (check in ("anchor-mismatch", "truncated")), chain_only
    # The command line says the same, with the public key only.
    monkeypatch.setenv("DATABASE_URL", anchored.url)
    monkeypatch.setenv("AUDIT_ANCHOR_PUBLIC_KEY_FILE", str(anchored.public))
    assert await asyncio.to_thread(audit_cli, ["verify"]) == 1
    assert f"BROKEN at record {seq} [{check}]" in capsys.readouterr().out
    # The collector does not sign a head that does not chain from the one it anchored last
    # (a change below that is the full verification's to find).
    # A restarted collector picks up the newest anchor its key signed from the table.
    restarted = Anchorer(anchored.store, load_private_key(anchored.private))
    for anchorer in (restarted, anchored.anchorer):
        if case in ("edit", "delete", "reorder"):
            assert (await anchorer.anchor_now()) is not None
        else:
            with pytest.raises(ChainRewritten):
                await anchorer.anchor_now()


async def test_an_intact_anchored_chain_verifies_and_keeps_being_anchored(
        anchored: Anchored, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.audit import load_public_key

    await anchored.store.append([{"n": 7}, {"n": 8}])
    # Records after the newest anchor are the chain's alone until the next one.
    verdict = await anchored.store.check([load_public_key(anchored.public)])
    assert verdict.ok and (verdict.records, verdict.anchored_up_to) == (8, 6), verdict
    monkeypatch.setenv("DATABASE_URL", anchored.url)
    monkeypatch.setenv("AUDIT_ANCHOR_KEY_FILE", str(anchored.private))
    monkeypatch.setenv("AUDIT_ANCHOR_FILE", str(anchored.file))
    assert await asyncio.to_thread(audit_cli, ["anchor"]) == 0  # on demand
    assert "anchored record 8" in capsys.readouterr().out
    monkeypatch.setenv("AUDIT_ANCHOR_PUBLIC_KEY_FILE", str(anchored.public))
    assert await asyncio.to_thread(audit_cli, ["verify"]) == 0
    assert "ok: 8 records" in (out := capsys.readouterr().out) and "anchored up to record 8" in out
    assert [a.seq for a in read_anchor_file(anchored.file)] == [3, 6, 8]


async def test_anchors_cannot_be_forged_or_hidden(anchored: Anchored, tmp_path: Path) -> None:
    from gateway.audit import load_public_key

    key = load_public_key(anchored.public)
    # Someone with the database but not the key: a truncated tail, its anchors deleted from
    # the table. The copy in the anchor file still names the cut.
    await tamper(anchored.engine, "DELETE FROM gateway.audit_log WHERE seq > 4")
    async with anchored.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE gateway.audit_anchor DISABLE TRIGGER USER"))
        await conn.execute(sa.text("DELETE FROM gateway.audit_anchor WHERE seq > 4"))
        await conn.execute(sa.text("ALTER TABLE gateway.audit_anchor ENABLE TRIGGER USER"))
    assert (await anchored.store.check([key])).ok  # the table alone is fooled
    from_file = await anchored.store.check([key], read_anchor_file(anchored.file))
    assert (from_file.check, from_file.broken) == ("truncated", 5), from_file
    # An anchor for the shortened chain signed with another key does not verify.
    other = write_key_pair(tmp_path / "other.key", tmp_path / "other.pub")
    head_seq, head = await anchored.store.head()
    await anchored.store.save_anchor(Anchor.sign(other, head_seq, head))
    assert (await anchored.store.check([key])).check == "anchor-signature"
    # Nor does a genuine anchor whose payload was changed to another record.
    genuine = read_anchor_file(anchored.file)[0]
    moved = genuine.payload.replace('"seq":3', '"seq":2')
    bad = Anchor.parse(moved, genuine.signature, "edited")
    assert not bad.signed_by(key)


async def test_a_chain_without_any_anchor_is_reported(
        scratch: tuple[AuditStore, AsyncEngine, str], tmp_path: Path) -> None:
    from gateway.audit import load_public_key

    store, _, _ = scratch
    write_key_pair(tmp_path / "k", tmp_path / "k.pub")
    verdict = await store.check([load_public_key(tmp_path / "k.pub")])
    assert verdict.check == "no-anchor", verdict


async def test_the_collector_anchors_the_head_periodically(anchored: Anchored) -> None:
    from gateway.audit import load_public_key

    task = asyncio.create_task(anchored.anchorer.run(0.05))
    try:
        for n in range(7, 10):
            await anchored.store.append([{"n": n}])
            await asyncio.sleep(0.2)
    finally:
        task.cancel()
    verdict = await anchored.store.check([load_public_key(anchored.public)])
    assert verdict.ok and verdict.anchored_up_to == 9 and verdict.anchors >= 5, verdict
