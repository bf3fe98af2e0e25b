"""`python -m gateway.auth [serve|migrate]`: the OAuth2 authorization server."""

from __future__ import annotations

import argparse
import os
import sys

import uvloop

from gateway.auth.clients import ClientRegistry
from gateway.auth.keystore import KeyStoreError
from gateway.auth.service import serve
from gateway.auth.settings import AuthSettings
from services.kit.log import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.auth")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args()
    settings = AuthSettings.from_env(os.environ)
    configure_logging("auth", settings.log_level)
    if args.command == "serve":
        try:
            uvloop.run(serve(settings))
        except KeyStoreError as error:
            sys.exit(f"cannot start: {error}")
    else:
        uvloop.run(ClientRegistry.migrate(settings.database_url))


if __name__ == "__main__":
    main()
