"""The order service's settings, read once in main() (`ORDER_*`, see kit.app.ServiceSettings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.kit import app
from services.kit.app import UNIX_PATH_MAX, ServiceSettings

__all__ = ["UNIX_PATH_MAX", "Settings", "worker_sockets"]


@dataclass(frozen=True)
class Settings(ServiceSettings):
    ENV_PREFIX: ClassVar[str] = "ORDER"

    grpc_address: str = "127.0.0.1:50051"
    db_pool_size: int = 30


def worker_sockets(directory: str, workers: int) -> list[str]:
    """The order workers' own sockets (`unix:<dir>/order-<i>.sock`), in worker order."""
    return app.worker_sockets("order", directory, workers)
