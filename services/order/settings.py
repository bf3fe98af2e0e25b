"""The order service's settings, read once in main()."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.kit.config import Env


# Not slotted: from_env reads the class-level defaults below.
@dataclass(frozen=True)
class Settings:
    database_url: str
    nats_url: str
    grpc_address: str = "127.0.0.1:50051"
    log_level: str = "INFO"
    db_pool_size: int = 30
    # Worker processes sharing the gRPC port (SO_REUSEPORT); one Python process uses one core.
    workers: int = 1
    # A directory: worker i also listens on `unix:<dir>/order-<i>.sock`, its own address, so
    # that the gateway can balance requests over the workers (worker_sockets()).
    worker_socket_dir: str = ""
    worker_index: int = 0  # set per worker process, not from the environment
    migrate_on_start: bool = True
    # Test-only fail point, see OutboxRelay.
    fault_relay_crash_after_publish: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = Env(environ)
        return cls(
            database_url=env.str("DATABASE_URL"),
            nats_url=env.str("NATS_URL"),
            grpc_address=env.str("ORDER_GRPC_ADDRESS", cls.grpc_address),
            log_level=env.str("LOG_LEVEL", cls.log_level),
            db_pool_size=env.int("ORDER_DB_POOL_SIZE", cls.db_pool_size),
            workers=env.int("ORDER_WORKERS", cls.workers),
            worker_socket_dir=env.str("ORDER_WORKER_SOCKET_DIR", cls.worker_socket_dir),
            migrate_on_start=env.bool("MIGRATE_ON_START", cls.migrate_on_start),
            fault_relay_crash_after_publish=env.bool(
                "CARTAGE_FAULT_RELAY_CRASH_AFTER_PUBLISH", False
            ),
        )


UNIX_PATH_MAX = 107  # bytes of a Unix socket path (sun_path, less its terminating NUL)


def worker_sockets(directory: str, workers: int) -> list[str]:
    """The gRPC addresses of the workers' own sockets (`unix:/abs/path`), in worker order."""
    root = Path(directory).resolve()
    return [f"unix:{root / f'order-{i}.sock'}" for i in range(max(1, workers))]
