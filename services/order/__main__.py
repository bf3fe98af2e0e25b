"""`python -m services.order [serve|migrate]`."""

from __future__ import annotations

import argparse
import os

import uvloop

from services.kit.log import configure_logging
from services.order.app import migrate, serve
from services.order.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.order")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args()
    settings = Settings.from_env(os.environ)
    configure_logging("order", settings.log_level)
    job = serve(settings) if args.command == "serve" else migrate(settings)
    uvloop.run(job)


if __name__ == "__main__":
    main()
