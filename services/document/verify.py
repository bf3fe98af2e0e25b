"""`python -m services.document.verify [CLIENT_ID ...]`: check document chains offline.

Reads `DATABASE_URL` and the signing key as the service does (`DOCUMENT_SIGNING_KEY` or
`DOCUMENT_SIGNING_KEY_FILE`), verifies the chain of each client named (every client with a
chain when none is), prints one JSON line per client, and exits 1 if any chain is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from services.document.adapters import tables
from services.document.adapters.repository import DocumentRepository
from services.document.domain import chain
from services.kit.db import create_engine
from services.kit.uow import UnitOfWork


async def verify(database_url: str, key: bytes, clients: Sequence[str]) -> list[dict[str, object]]:
    engine = create_engine(database_url, pool_size=1)
    uow = UnitOfWork(engine, tables.kit)
    repository = DocumentRepository()
    try:
        async with uow.transaction() as tx:
            names = list(clients) or [row[0] for row in await tx.execute(
                sa.select(tables.chain_heads.c.client_id).order_by(
                    tables.chain_heads.c.client_id))]
            found = []
            for client_id in names:
                records, head, hashes = await repository.chain_of(tx, client_id)
                verdict = chain.verify(key, client_id, records, head, hashes)
                found.append({"client_id": client_id, "valid": verdict.valid,
                              "records_checked": verdict.checked,
                              "first_broken_sequence": verdict.first_broken,
                              "problem": verdict.problem})
        return found
    finally:
        await uow.close()
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    from services.document.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m services.document.verify")
    parser.add_argument("clients", nargs="*", help="client ids (default: every client)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    results = asyncio.run(verify(settings.database_url, settings.key(), args.clients))
    for result in results:
        print(json.dumps(result))
    return 0 if all(r["valid"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
