"""The routing service's settings, read once in main()."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import Env, SettingsError


# Not slotted: from_env reads the class-level defaults below.
@dataclass(frozen=True)
class Settings:
    database_url: str
    nats_url: str
    grpc_address: str = "127.0.0.1:50052"
    log_level: str = "INFO"
    db_pool_size: int = 10
    # Requests with more shipments (orders + inline) are refused before any work.
    max_shipments: int = 5000
    # Solver time limits in seconds: PlanRoutes' default and maximum; replans that events
    # trigger use the default.
    default_time_limit: float = 10.0
    max_time_limit: float = 300.0
    # Solver worker processes that may run at once (one core each).
    solver_processes: int = 1
    # An OSRM-compatible table service for road distances; empty for haversine.
    osrm_url: str = ""
    migrate_on_start: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = Env(environ)
        settings = cls(
            database_url=env.str("DATABASE_URL"),
            nats_url=env.str("NATS_URL"),
            grpc_address=env.str("ROUTING_GRPC_ADDRESS", cls.grpc_address),
            log_level=env.str("LOG_LEVEL", cls.log_level),
            db_pool_size=env.int("ROUTING_DB_POOL_SIZE", cls.db_pool_size),
            max_shipments=env.int("ROUTING_MAX_SHIPMENTS", cls.max_shipments),
            default_time_limit=env.float("ROUTING_DEFAULT_TIME_LIMIT", cls.default_time_limit),
            max_time_limit=env.float("ROUTING_MAX_TIME_LIMIT", cls.max_time_limit),
            solver_processes=env.int("ROUTING_SOLVER_PROCESSES", cls.solver_processes),
            osrm_url=env.str("ROUTING_OSRM_URL", ""),
            migrate_on_start=env.bool("MIGRATE_ON_START", cls.migrate_on_start),
        )
        if not 0 < settings.default_time_limit <= settings.max_time_limit:
            raise SettingsError("ROUTING_DEFAULT_TIME_LIMIT must be positive and at most "
                                "ROUTING_MAX_TIME_LIMIT")
        if settings.max_shipments < 1 or settings.solver_processes < 1:
            raise SettingsError("ROUTING_MAX_SHIPMENTS and ROUTING_SOLVER_PROCESSES must be "
                                "at least 1")
        return settings
