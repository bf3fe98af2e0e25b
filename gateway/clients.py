"""`python -m gateway.clients create|list|rotate-secret|disable|enable`: the client registry.

    python -m gateway.clients create acme-erp --scope orders.read --scope orders.write \
        [--tier standard|premium|internal] [--allow-ip 10.0.0.0/8]
    python -m gateway.clients list
    python -m gateway.clients rotate-secret acme-erp [--grace-hours 24]
    python -m gateway.clients disable acme-erp

Reads DATABASE_URL. A new or rotated secret is printed once and never stored in clear.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys

from gateway.auth.clients import TIERS, ClientError, ClientRegistry
from services.kit.config import Env
from services.kit.db import create_engine


async def run(args: argparse.Namespace, database_url: str) -> int:
    await ClientRegistry.migrate(database_url)
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    registry = ClientRegistry(engine)
    out = sys.stdout
    try:
        if args.command == "create":
            secret = await registry.create(args.client_id, args.scope, tier=args.tier,
                                           ip_allowlist=args.allow_ip)
            out.write(json.dumps({"client_id": args.client_id, "client_secret": secret}) + "\n")
        elif args.command == "list":
            for c in await registry.list():
                out.write(json.dumps({"client_id": c.client_id, "scopes": list(c.scopes),
                                      "tier": c.rate_tier, "ip_allowlist": list(c.ip_allowlist),
                                      "enabled": c.enabled}) + "\n")
        elif args.command == "rotate-secret":
            grace = dt.timedelta(hours=args.grace_hours)
            secret = await registry.rotate_secret(args.client_id, keep_previous_for=grace)
            out.write(json.dumps({"client_id": args.client_id, "client_secret": secret,
                                  "previous_secret_valid_for_hours": args.grace_hours}) + "\n")
        else:
            await registry.set_enabled(args.client_id, args.command == "enable")
            out.write(f"{args.client_id} {args.command}d\n")
    except ClientError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    finally:
        await engine.dispose()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway.clients")
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="register a client and print its secret once")
    create.add_argument("client_id")
    create.add_argument("--scope", action="append", required=True)
    create.add_argument("--tier", default="standard", choices=TIERS)
    create.add_argument("--allow-ip", action="append", default=[],
                        help="CIDR the client may call from (repeatable; none = anywhere)")
    sub.add_parser("list")
    rotate = sub.add_parser("rotate-secret", help="a new secret, printed once")
    rotate.add_argument("client_id")
    rotate.add_argument("--grace-hours", type=float, default=0.0,
                        help="keep the old secret working this long (default 0: it stops now, "
                             "as after a leak)")
    for name in ("disable", "enable"):
        sub.add_parser(name).add_argument("client_id")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    database_url = Env(os.environ).str("DATABASE_URL")
    return asyncio.run(run(args, database_url))


if __name__ == "__main__":
    sys.exit(main())
