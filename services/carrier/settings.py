"""The carrier service's settings, read once in main() (`CARRIER_*`; see kit.app)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from services.kit.app import ServiceSettings
from services.kit.config import Env


@dataclass(frozen=True)
class Settings(ServiceSettings):
    ENV_PREFIX: ClassVar[str] = "CARRIER"

    grpc_address: str = "127.0.0.1:50053"
    # Quotes are in this currency unless a request names another.
    base_currency: str = "EUR"
    # The fuel price index the fuel surcharge tables are read at unless a request gives one.
    fuel_price_index: str = "1.60"
    # How long a carrier has to answer a tender unless TenderShipment says.
    tender_timeout_s: float = 7200.0
    # How often the deadline job looks for tenders whose deadline passed.
    deadline_poll_s: float = 0.5
    # ImportRateCard refuses a larger CSV before reading it (below the 16 MiB gRPC limit).
    max_csv_bytes: int = 8 * 1024 * 1024
    # Lane scores (from the scorecards) are recomputed per client at most this often.
    score_ttl_s: float = 60.0
    score_window_days: int = 90

    @classmethod
    def own(cls, env: Env) -> dict[str, Any]:
        p = cls.ENV_PREFIX
        return {
            "base_currency": env.str(f"{p}_BASE_CURRENCY", cls.base_currency),
            "fuel_price_index": env.str(f"{p}_FUEL_PRICE_INDEX", cls.fuel_price_index),
            "tender_timeout_s": env.float(f"{p}_TENDER_TIMEOUT_S", cls.tender_timeout_s),
            "deadline_poll_s": env.float(f"{p}_DEADLINE_POLL_S", cls.deadline_poll_s),
            "max_csv_bytes": env.int(f"{p}_MAX_CSV_BYTES", cls.max_csv_bytes),
            "score_ttl_s": env.float(f"{p}_SCORE_TTL_S", cls.score_ttl_s),
            "score_window_days": env.int(f"{p}_SCORE_WINDOW_DAYS", cls.score_window_days),
        }
