"""The skeleton every service shares: settings, start-up, worker processes and shutdown.

A service declares itself once, in its `app.py`:

    DEFINITION = ServiceDefinition(
        name="order", module=__name__, settings=Settings, tables=tables.kit,
        migrations=MIGRATIONS, stream="ORDER", compose=compose)

and its composition root `compose(runtime)` builds its use cases, servicers, consumers and
jobs from what the kit made (engine, unit of work with its outbox relay, settings) and returns
a `Composition`. Everything else is here, once: migrations on start, the engine, the outbox
relay publishing to the service's stream (`kit.events`), the consumers as one supervised job,
health, reflection, interceptors, SIGTERM, and `python -m services.<name> [serve|migrate]`
with `<PREFIX>_WORKERS=N` worker processes sharing the port (each optionally on its own Unix
socket too, for a proxy that balances over them), each restarted on its own if it dies and
ended with its parent even if the parent is killed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import grpc
import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.config import Env
from services.kit.db import KitTables, create_engine, reachable
from services.kit.events import catalog
from services.kit.jobs import Job
from services.kit.log import configure_logging
from services.kit.messaging import (
    ConsumerJob,
    ConsumerSpec,
    Handler,
    OutboxHousekeeping,
    OutboxRelay,
)
from services.kit.metrics import MetricsServer, WorkerMetrics, bind_host
from services.kit.migrations import upgrade_async
from services.kit.server import MAX_MESSAGE_BYTES, HealthCheck, Service
from services.kit.uow import UnitOfWork

UNIX_PATH_MAX = 107  # bytes of a Unix socket path (sun_path, less its terminating NUL)
QUICK_EXIT_S = 3.0  # a worker that exits sooner after its start counts as crash-looping
MAX_QUICK_EXITS = 5


# Not slotted: from_env reads the class-level defaults.
@dataclass(frozen=True)
class ServiceSettings:
    """What every service reads from the environment. A service subclasses it, sets
    `ENV_PREFIX` and its defaults, and adds its own fields (with defaults) read in `own`."""

    ENV_PREFIX: ClassVar[str] = ""

    database_url: str
    nats_url: str
    grpc_address: str = "127.0.0.1:0"
    log_level: str = "INFO"
    db_pool_size: int = 10
    # Worker processes sharing the gRPC port (SO_REUSEPORT); one Python process uses one core.
    workers: int = 1
    # A directory: worker i also listens on `unix:<dir>/<name>-<i>.sock`, its own address, so
    # that the gateway can balance requests over the workers (`worker_sockets`).
    worker_socket_dir: str = ""
    worker_index: int = 0  # set per worker process, not from the environment
    migrate_on_start: bool = True
    # Published outbox rows older than this are deleted, every `outbox_housekeeping_interval_s`
    # (`kit.relay.OutboxHousekeeping`); unpublished rows are never touched.
    outbox_retention_s: float = 86_400.0
    outbox_housekeeping_interval_s: float = 300.0
    # Test-only fail point, see OutboxRelay.
    fault_relay_crash_after_publish: bool = False
    # Prometheus `/metrics` on this port (kit.metrics), on the gRPC address's host; 0: off.
    metrics_port: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        env, prefix = Env(environ), cls.ENV_PREFIX
        settings = cls(
            database_url=env.str("DATABASE_URL"),
            nats_url=env.str("NATS_URL"),
            grpc_address=env.str(f"{prefix}_GRPC_ADDRESS", cls.grpc_address),
            log_level=env.str("LOG_LEVEL", cls.log_level),
            db_pool_size=env.int(f"{prefix}_DB_POOL_SIZE", cls.db_pool_size),
            workers=env.int(f"{prefix}_WORKERS", cls.workers),
            worker_socket_dir=env.str(f"{prefix}_WORKER_SOCKET_DIR", cls.worker_socket_dir),
            migrate_on_start=env.bool("MIGRATE_ON_START", cls.migrate_on_start),
            outbox_retention_s=env.float(f"{prefix}_OUTBOX_RETENTION_S", cls.outbox_retention_s),
            outbox_housekeeping_interval_s=env.float(
                f"{prefix}_OUTBOX_HOUSEKEEPING_INTERVAL_S", cls.outbox_housekeeping_interval_s),
            fault_relay_crash_after_publish=env.bool(
                "CARTAGE_FAULT_RELAY_CRASH_AFTER_PUBLISH", False),
            metrics_port=env.int(f"{prefix}_METRICS_PORT", cls.metrics_port),
            **cls.own(env),
        )
        settings.check()
        return settings

    @classmethod
    def own(cls, env: Env) -> dict[str, Any]:
        """The service's own settings from the environment (field name -> value)."""
        return {}

    def check(self) -> None:
        """Raise SettingsError for a combination of values that cannot work."""


def worker_sockets(name: str, directory: str, workers: int) -> list[str]:
    """The gRPC addresses of the workers' own sockets (`unix:/abs/path`), in worker order."""
    root = Path(directory).resolve()
    return [f"unix:{root / f'{name}-{i}.sock'}" for i in range(max(1, workers))]


@dataclass(frozen=True)
class Runtime:
    """What the kit built for a service's composition root."""

    settings: Any
    engine: AsyncEngine
    uow: UnitOfWork
    relay: OutboxRelay


@dataclass(frozen=True)
class Composition:
    """What a composition root returns: its gRPC servicers, and what runs beside them."""

    register: Callable[[grpc.aio.Server], None]
    service_names: Sequence[str]
    consumers: Sequence[tuple[ConsumerSpec, Handler]] = ()
    jobs: Sequence[Job] = ()
    health_checks: Sequence[HealthCheck] = ()
    # Awaited after the server stopped (the kit closes the unit of work and engine itself).
    close: Callable[[], Awaitable[None]] | None = None


Compose = Callable[[Runtime], Composition | Awaitable[Composition]]
ServiceHook = Callable[[Service], object]


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    module: str  # the app module, which holds this definition as DEFINITION (for workers)
    settings: type[ServiceSettings]
    tables: KitTables
    migrations: Path
    stream: str | None  # the JetStream stream its outbox publishes to (None: no events)
    compose: Compose = field(repr=False)
    # The largest gRPC message it takes or sends (a proof of delivery carries photos).
    max_message_bytes: int = MAX_MESSAGE_BYTES

    async def migrate(self, settings: ServiceSettings) -> None:
        await upgrade_async(settings.database_url, self.tables.schema, self.migrations)

    async def serve(self, settings: ServiceSettings, *, handle_signals: bool = True,
                    service_hook: ServiceHook | None = None) -> None:
        """Run until SIGTERM/SIGINT (or `service.stop_event`). `service_hook`, when given, is
        called with the Service before it starts (tests use it to learn the port and stop it)."""
        if settings.migrate_on_start:
            await self.migrate(settings)
        engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
        relay = OutboxRelay(engine, self.tables, settings.nats_url, name=self.name,
                            streams=catalog().stream(self.stream) if self.stream else {},
                            crash_after_publish=settings.fault_relay_crash_after_publish)
        uow = UnitOfWork(engine, self.tables, on_events=relay.wake)
        composition: Composition | None = None
        # With workers, their parent serves the metrics of all of them (_serve_workers).
        metrics_server = (MetricsServer(settings.metrics_port, bind_host(settings.grpc_address))
                          if settings.metrics_port and settings.workers <= 1 else None)
        try:
            built = self.compose(Runtime(settings, engine, uow, relay))
            composition = await built if inspect.isawaitable(built) else built
            housekeeping = OutboxHousekeeping(
                engine, self.tables, retention=timedelta(seconds=settings.outbox_retention_s),
                interval=settings.outbox_housekeeping_interval_s)
            jobs = [Job("outbox-relay", relay.run, ready=relay.ready),
                    # Not required: the service serves while it is down; rows only wait longer.
                    Job("outbox-housekeeping", housekeeping.run, required=False),
                    *composition.jobs]
            if composition.consumers:
                jobs.append(ConsumerJob(uow, settings.nats_url, f"{self.name}-consumer",
                                        composition.consumers).job())
            own = None
            if settings.worker_socket_dir:
                own = worker_sockets(self.name, settings.worker_socket_dir,
                                     settings.workers)[settings.worker_index]
            service = Service(
                name=self.name,
                address=settings.grpc_address,
                register=composition.register,
                service_names=composition.service_names,
                health_checks=[reachable(engine), *composition.health_checks],
                jobs=jobs,
                reuse_port=settings.workers > 1,
                own_address=own,
                max_message_bytes=self.max_message_bytes,
            )
            if service_hook is not None:
                service_hook(service)
            await service.run(handle_signals=handle_signals)
        finally:
            if metrics_server is not None:
                metrics_server.close()
            if composition is not None and composition.close is not None:
                await composition.close()
            await uow.close()
            await engine.dispose()

    def main(self, argv: Sequence[str] | None = None) -> None:
        """`python -m services.<name> [serve|migrate]`."""
        parser = argparse.ArgumentParser(prog=f"python -m services.{self.name}")
        parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
        args = parser.parse_args(argv)
        settings = self.settings.from_env(os.environ)
        configure_logging(self.name, settings.log_level)
        if args.command == "migrate":
            uvloop.run(self.migrate(settings))
        elif settings.workers > 1:
            sys.exit(self._serve_workers(settings))
        else:
            uvloop.run(self.serve(settings))

    def _serve_workers(self, settings: ServiceSettings) -> int:
        """Migrate once, then run the workers. A worker that dies is started again on its own
        (the others keep serving the port meanwhile); one that keeps dying within seconds of
        its start `MAX_QUICK_EXITS` times in a row ends the service, so that its supervisor
        sees the failure. SIGTERM/SIGINT is passed on to every worker."""
        uvloop.run(self.migrate(settings))
        worker_settings = dataclasses.replace(settings, migrate_on_start=False)
        metrics = (WorkerMetrics(self.name, settings.metrics_port,
                                 bind_host(settings.grpc_address))
                   if settings.metrics_port else None)
        # spawn, not fork: gRPC's core must not be forked once it runs.
        context = multiprocessing.get_context("spawn")
        log = logging.getLogger("cartage.workers")
        workers: dict[int, multiprocessing.process.BaseProcess] = {}
        started: dict[int, float] = {}
        quick_exits: dict[int, int] = dict.fromkeys(range(settings.workers), 0)
        requested = False

        def start(index: int) -> None:
            worker = context.Process(target=run_worker, daemon=True, args=(
                self.module, dataclasses.replace(worker_settings, worker_index=index),
                os.getpid()))
            worker.start()
            workers[index], started[index] = worker, time.monotonic()

        def forward(signum: int, _frame: object) -> None:
            for worker in workers.values():
                if worker.is_alive() and worker.pid is not None:
                    os.kill(worker.pid, signum)

        def stop(signum: int, frame: object) -> None:
            nonlocal requested
            requested = True
            forward(signum, frame)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for index in range(settings.workers):
            start(index)
        failed = False
        while not requested and not failed:
            multiprocessing.connection.wait([w.sentinel for w in workers.values()])
            dead = [i for i, w in workers.items() if not w.is_alive()]
            if not dead:  # its pipe closed a moment before the process was reapable
                time.sleep(0.05)
            for index in dead:
                if requested:
                    break
                quick = time.monotonic() - started[index] < QUICK_EXIT_S
                quick_exits[index] = quick_exits[index] + 1 if quick else 0
                log.error("worker exited; restarting it", extra={
                    "worker": index, "exitcode": workers[index].exitcode,
                    "quick_exits": quick_exits[index]})
                if metrics is not None:
                    metrics.worker_exited(workers[index].pid)
                if quick_exits[index] >= MAX_QUICK_EXITS:
                    failed = True
                    break
                time.sleep(min(0.2 * 2 ** quick_exits[index], 5.0) if quick else 0)
                start(index)
        forward(signal.SIGTERM, None)
        for worker in workers.values():
            worker.join(15)
        if metrics is not None:
            metrics.close()
        if failed:
            return 1
        # A worker still starting when the stop came ends by the signal itself, not by its
        # handler: that is a clean stop too.
        clean = {0, -signal.SIGTERM, -signal.SIGINT}
        return 0 if all(w.exitcode in clean for w in workers.values()) else 1


def run_worker(module: str, settings: ServiceSettings, parent: int) -> None:
    """Entry point of one worker process (importable, as the spawn start method needs)."""
    _die_with(parent)
    definition: ServiceDefinition = importlib.import_module(module).DEFINITION
    configure_logging(definition.name, settings.log_level)
    uvloop.run(definition.serve(settings))



def _die_with(parent: int) -> None:
    """SIGTERM this worker when the parent process dies, even by SIGKILL: an orphaned worker
    would keep serving the shared port and relaying the outbox beside its replacement."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's forwarding is all there is
        return
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)
