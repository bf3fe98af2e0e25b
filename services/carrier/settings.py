"""The carrier service's settings, read once in main() (`CARRIER_*`; see kit.app)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from services.kit.app import ServiceSettings
from services.kit.config import Env, SettingsError


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
    # HTTP tender channel: False sends offers to loopback addresses only (tests, `make run`, a
    # simulator beside the service); production sets True: globally routable addresses only.
    # Private, link-local and metadata addresses are refused either way (channels/sender.py).
    channel_allow_public: bool = False
    # How long an HTTP carrier has to reply to an offer before it counts as unavailable.
    channel_timeout_s: float = 5.0
    # EDI tender channel: 204s go to `<outbox>/<carrier id>/`; 990s are read from the inbox
    # every `edi_poll_s`. The interchange sender id (ISA06) is ours; the receiver, the SCAC.
    edi_outbox_dir: str = ".cartage/carrier-edi/outbox"
    edi_inbox_dir: str = ".cartage/carrier-edi/inbox"
    edi_poll_s: float = 5.0
    edi_sender_id: str = "CARTAGE"

    @classmethod
    def own(cls, env: Env) -> dict[str, Any]:
        p = cls.ENV_PREFIX
        edi = Path(env.str("CARTAGE_DATA_DIR", ".cartage")) / "carrier-edi"
        return {
            "base_currency": env.str(f"{p}_BASE_CURRENCY", cls.base_currency),
            "fuel_price_index": env.str(f"{p}_FUEL_PRICE_INDEX", cls.fuel_price_index),
            "tender_timeout_s": env.float(f"{p}_TENDER_TIMEOUT_S", cls.tender_timeout_s),
            "deadline_poll_s": env.float(f"{p}_DEADLINE_POLL_S", cls.deadline_poll_s),
            "max_csv_bytes": env.int(f"{p}_MAX_CSV_BYTES", cls.max_csv_bytes),
            "score_ttl_s": env.float(f"{p}_SCORE_TTL_S", cls.score_ttl_s),
            "score_window_days": env.int(f"{p}_SCORE_WINDOW_DAYS", cls.score_window_days),
            "channel_allow_public": env.bool(f"{p}_CHANNEL_ALLOW_PUBLIC",
                                             cls.channel_allow_public),
            "channel_timeout_s": env.float(f"{p}_CHANNEL_TIMEOUT_S", cls.channel_timeout_s),
            "edi_outbox_dir": env.str(f"{p}_EDI_OUTBOX_DIR", str(edi / "outbox")),
            "edi_inbox_dir": env.str(f"{p}_EDI_INBOX_DIR", str(edi / "inbox")),
            "edi_poll_s": env.float(f"{p}_EDI_POLL_S", cls.edi_poll_s),
            "edi_sender_id": env.str(f"{p}_EDI_SENDER_ID", cls.edi_sender_id),
        }

    def check(self) -> None:
        super().check()
        if not 0 < self.channel_timeout_s <= 60:
            raise SettingsError("CARRIER_CHANNEL_TIMEOUT_S must be in (0, 60] seconds")
        if self.edi_poll_s <= 0:
            raise SettingsError("CARRIER_EDI_POLL_S must be positive")
        if not 1 <= len(self.edi_sender_id) <= 15 or not self.edi_sender_id.isascii():
            raise SettingsError("CARRIER_EDI_SENDER_ID must be 1-15 ASCII characters (ISA06)")
