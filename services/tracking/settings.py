"""The tracking service's settings, read once in main() (`TRACKING_*`, see kit.app)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from services.kit.app import ServiceSettings
from services.kit.config import Env, SettingsError


@dataclass(frozen=True)
class Settings(ServiceSettings):
    ENV_PREFIX: ClassVar[str] = "TRACKING"

    grpc_address: str = "127.0.0.1:50054"
    db_pool_size: int = 20
    # Radius of the geofence made around every stop of an active route plan.
    stop_fence_radius_m: float = 150.0
    # A GeoJSON polygon with more vertices is refused before any geometry work.
    max_polygon_vertices: int = 10_000
    # Default dwell time of a geofence, and the free time at a stop before detention starts.
    dwell_s: float = 300.0
    free_time_s: float = 7200.0
    # eta.updated is published when a stop's ETA moves by more than this.
    eta_threshold_s: float = 300.0
    # The straight-line ETA model: speed and road factor.
    eta_speed_kmh: float = 50.0
    eta_road_factor: float = 1.3
    # HMAC key of tracking-link tokens (at least 32 characters). Empty: a random key per
    # start, so links stop working when the service restarts; set it in production.
    link_secret: str = ""
    # Seconds between WatchTracking polls of the record.
    watch_interval_s: float = 1.0
    # Partner webhooks. The key (at least 32 characters; the Fernet key is derived from it)
    # that encrypts signing secrets at rest. Empty: a random key per start (stored endpoints
    # stop signing after a restart); set it in production (the chart and `make run` do).
    webhook_secret_key: str = ""
    # Loopback receivers allowed (and ONLY loopback, http too): tests and `make run` only.
    webhook_allow_loopback: bool = False
    # Multiplies the retry schedule (immediately, 5 s, 5 min, … 10 h): tests compress it.
    webhook_schedule_scale: float = 1.0
    # How long the previous secret keeps signing after RotateWebhookSecret.
    webhook_rotation_grace_s: float = 86_400.0
    # A claimed delivery is due again after this if its dispatcher died mid-attempt.
    webhook_lease_s: float = 60.0
    # Attempts in flight per endpoint and in all, and the queue's poll interval.
    webhook_per_endpoint: int = 4
    webhook_concurrency: int = 64
    webhook_poll_s: float = 0.2

    @classmethod
    def own(cls, env: Env) -> dict[str, Any]:
        p = cls.ENV_PREFIX
        return {
            "stop_fence_radius_m": env.float(f"{p}_STOP_FENCE_RADIUS_M", cls.stop_fence_radius_m),
            "max_polygon_vertices": env.int(f"{p}_MAX_POLYGON_VERTICES",
                                            cls.max_polygon_vertices),
            "dwell_s": env.float(f"{p}_DWELL_S", cls.dwell_s),
            "free_time_s": env.float(f"{p}_FREE_TIME_S", cls.free_time_s),
            "eta_threshold_s": env.float(f"{p}_ETA_THRESHOLD_S", cls.eta_threshold_s),
            "eta_speed_kmh": env.float(f"{p}_ETA_SPEED_KMH", cls.eta_speed_kmh),
            "eta_road_factor": env.float(f"{p}_ETA_ROAD_FACTOR", cls.eta_road_factor),
            "link_secret": env.str(f"{p}_LINK_SECRET", ""),
            "watch_interval_s": env.float(f"{p}_WATCH_INTERVAL_S", cls.watch_interval_s),
            "webhook_secret_key": env.str(f"{p}_WEBHOOK_SECRET_KEY", ""),
            "webhook_allow_loopback": env.bool("WEBHOOK_ALLOW_LOOPBACK", False),
            "webhook_schedule_scale": env.float(f"{p}_WEBHOOK_SCHEDULE_SCALE", 1.0),
            "webhook_rotation_grace_s": env.float(f"{p}_WEBHOOK_ROTATION_GRACE_S",
                                                  cls.webhook_rotation_grace_s),
            "webhook_lease_s": env.float(f"{p}_WEBHOOK_LEASE_S", cls.webhook_lease_s),
            "webhook_per_endpoint": env.int(f"{p}_WEBHOOK_PER_ENDPOINT",
                                            cls.webhook_per_endpoint),
            "webhook_concurrency": env.int(f"{p}_WEBHOOK_CONCURRENCY", cls.webhook_concurrency),
            "webhook_poll_s": env.float(f"{p}_WEBHOOK_POLL_S", cls.webhook_poll_s),
        }

    def check(self) -> None:
        if not 0 < self.stop_fence_radius_m <= 100_000:
            raise SettingsError("TRACKING_STOP_FENCE_RADIUS_M must be in (0, 100000]")
        if self.max_polygon_vertices < 4:
            raise SettingsError("TRACKING_MAX_POLYGON_VERTICES must be at least 4")
        if self.eta_speed_kmh <= 0 or self.eta_road_factor < 1:
            raise SettingsError("TRACKING_ETA_SPEED_KMH must be positive, "
                                "TRACKING_ETA_ROAD_FACTOR at least 1")
        if self.link_secret and len(self.link_secret) < 32:
            raise SettingsError("TRACKING_LINK_SECRET must have at least 32 characters")
        if self.webhook_secret_key and len(self.webhook_secret_key) < 32:
            raise SettingsError("TRACKING_WEBHOOK_SECRET_KEY must have at least 32 characters")
        # The lease must outlast an attempt (15 s total timeout), or a slow one is repeated.
        if self.webhook_lease_s <= 15 or self.webhook_schedule_scale <= 0:
            raise SettingsError("TRACKING_WEBHOOK_LEASE_S must exceed 15 and "
                                "TRACKING_WEBHOOK_SCHEDULE_SCALE must be positive")
        if self.webhook_per_endpoint < 1 or self.webhook_concurrency < 1:
            raise SettingsError("TRACKING_WEBHOOK_PER_ENDPOINT and _CONCURRENCY must be >= 1")
