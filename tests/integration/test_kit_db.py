"""The kit's direct asyncpg path and many-row inserts against real Postgres: values reach the
database as through SQLAlchemy, and constraint violations surface as SQLAlchemy's
IntegrityError with the constraint's name (what the use cases' duplicate handling reads)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from services.kit.db import DirectStatements, constraint_name, create_engine, insert_many
from services.kit.uow import UnitOfWork

metadata = sa.MetaData(schema="kit_db_test")
things = sa.Table(
    "things", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default="none"),
    sa.UniqueConstraint("name", name="uq_things_name"),
)
INSERT = sa.insert(things).values(
    id=sa.bindparam("id", type_=sa.Integer), name=sa.bindparam("name", type_=sa.Text),
    blob=sa.bindparam("blob", type_=sa.LargeBinary), flag=sa.bindparam("flag", type_=sa.Boolean),
).returning(things.c.id, sa.literal("constant").label("literal"))
BY_ID = sa.select(things).where(things.c.id == sa.bindparam("id", type_=sa.Integer))


@pytest.fixture
async def engine(fresh_database):
    engine = create_engine(fresh_database, pool_size=2)
    async with engine.begin() as conn:
        await conn.execute(sa.schema.CreateSchema("kit_db_test"))
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def test_direct_statements_bind_literals_and_conversions_and_map_violations(engine):
    direct = DirectStatements(engine)
    try:
        row = await direct.fetchrow(INSERT, {"id": 1, "name": "a", "blob": b"\x00\xff",
                                             "flag": True})
        assert (row["id"], row["literal"]) == (1, "constant")
        stored = await direct.fetchrow(BY_ID, {"id": 1})
        assert (stored["blob"], stored["flag"], stored["note"]) == (b"\x00\xff", True, "none")
        assert await direct.fetchrow(BY_ID, {"id": 2}) is None
        with pytest.raises(IntegrityError) as caught:
            await direct.fetchrow(INSERT, {"id": 2, "name": "a", "blob": b"", "flag": False})
        assert constraint_name(caught.value) == "uq_things_name"
    finally:
        await direct.close()


async def test_many_rows_go_in_one_statement_and_a_duplicate_fails_all_of_them(engine):
    rows = [{"id": i, "name": f"n{i}", "blob": i.to_bytes(2, "big"), "flag": i % 2 == 0}
            for i in range(1, 301)]
    async with engine.begin() as conn:
        await insert_many(conn, things, rows)
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.select(things).order_by(things.c.id))).all()
    assert [(r.id, r.name, r.blob, r.flag, r.note) for r in stored] == [
        (r["id"], r["name"], r["blob"], r["flag"], "none") for r in rows]
    with pytest.raises(IntegrityError) as caught:
        async with engine.begin() as conn:
            await insert_many(conn, things, [
                {"id": 1000, "name": "fresh", "blob": b"", "flag": True},
                {"id": 1001, "name": "n7", "blob": b"", "flag": True}])
    assert constraint_name(caught.value) == "uq_things_name"
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(things))).scalar() == 300


async def test_read_one_is_a_plain_read_outside_any_transaction(engine):
    uow = UnitOfWork(engine, tables=None)  # type: ignore[arg-type]  # reads need no kit tables
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(things).values(id=5, name="five", blob=b"5", flag=True))
        row = await uow.read_one(BY_ID, {"id": 5})
        assert row is not None and row["name"] == "five"
    finally:
        await uow.close()
