"""`python -m services.order [serve|migrate]`.

With ORDER_WORKERS=N > 1, `serve` migrates once and then runs N worker processes that share the
gRPC port through SO_REUSEPORT (the kernel spreads connections over them), each with its own
outbox relay. With ORDER_WORKER_SOCKET_DIR each worker also listens on its own Unix socket there
(`order-<i>.sock`), which the gateway balances requests over. SIGTERM/SIGINT is passed on to
every worker, and if one worker dies the others are stopped too, so a supervisor sees the
failure and restarts the whole service.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys

import uvloop

from services.kit.log import configure_logging
from services.order.app import migrate, run_worker, serve
from services.order.settings import Settings


def _serve_workers(settings: Settings) -> int:
    uvloop.run(migrate(settings))
    worker_settings = dataclasses.replace(settings, migrate_on_start=False)
    # spawn, not fork: gRPC's core must not be forked once it runs.
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(
        target=run_worker, args=(dataclasses.replace(worker_settings, worker_index=i),),
        daemon=True) for i in range(settings.workers)]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    sentinels = {worker.sentinel for worker in workers}
    multiprocessing.connection.wait(sentinels)  # the first worker to exit ends the service
    forward(signal.SIGTERM, None)
    for worker in workers:
        worker.join(15)
    return max((w.exitcode or 0) for w in workers)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.order")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args()
    settings = Settings.from_env(os.environ)
    configure_logging("order", settings.log_level)
    if args.command == "migrate":
        uvloop.run(migrate(settings))
    elif settings.workers > 1:
        sys.exit(_serve_workers(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
