"""The routing service's settings, read once in main() (`ROUTING_*`, see kit.app)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from services.kit.app import ServiceSettings
from services.kit.config import Env, SettingsError


@dataclass(frozen=True)
class Settings(ServiceSettings):
    ENV_PREFIX: ClassVar[str] = "ROUTING"

    grpc_address: str = "127.0.0.1:50052"
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

    @classmethod
    def own(cls, env: Env) -> dict[str, Any]:
        return {
            "max_shipments": env.int("ROUTING_MAX_SHIPMENTS", cls.max_shipments),
            "default_time_limit": env.float("ROUTING_DEFAULT_TIME_LIMIT",
                                            cls.default_time_limit),
            "max_time_limit": env.float("ROUTING_MAX_TIME_LIMIT", cls.max_time_limit),
            "solver_processes": env.int("ROUTING_SOLVER_PROCESSES", cls.solver_processes),
            "osrm_url": env.str("ROUTING_OSRM_URL", ""),
        }

    def check(self) -> None:
        if not 0 < self.default_time_limit <= self.max_time_limit:
            raise SettingsError("ROUTING_DEFAULT_TIME_LIMIT must be positive and at most "
                                "ROUTING_MAX_TIME_LIMIT")
        if self.max_shipments < 1 or self.solver_processes < 1:
            raise SettingsError("ROUTING_MAX_SHIPMENTS and ROUTING_SOLVER_PROCESSES must be "
                                "at least 1")
