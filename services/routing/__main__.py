"""`python -m services.routing [serve|migrate]`."""

from __future__ import annotations

import argparse
import os

import uvloop

from services.kit.log import configure_logging
from services.routing.app import migrate, serve
from services.routing.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.routing")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args()
    settings = Settings.from_env(os.environ)
    configure_logging("routing", settings.log_level)
    if args.command == "migrate":
        uvloop.run(migrate(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
