"""Tender channels: how an offer reaches a carrier (the use cases' `TenderChannels` port).

- "through the Cartage API" (`CartageApiChannel`): the carrier lists its tenders and answers
  with its own OAuth client; an offer needs no message.
- JSON/HTTP (`HttpChannel`, `TENDER_CHANNEL_API_CALLBACK`): POST to the carrier's
  `endpoint_uri`; a 200 is an answer now (applied by the use cases), a 202 means the carrier
  answers later, through the gateway's AcceptTender/RejectTender like a polling carrier (we
  offer no unauthenticated callback endpoint, so the offer carries no `callback_url`).
- EDI X12 (`EdiChannel`, `TENDER_CHANNEL_EDI`): a 204 file in the carrier's outbox directory;
  its 990 comes back through the inbox job (`adapters/edi_inbox.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from cartage.carrier.v1 import carrier_pb2
from services.carrier.adapters.repository import CarrierRepository
from services.carrier.adapters.tender_documents import tender_document
from services.carrier.channels import EdiFileSender, HttpTenderSender, TenderResponse
from services.carrier.domain.model import Carrier, ChannelAnswer, Tender
from services.carrier.use_cases.ports import TenderChannels
from services.kit.clock import utc_now
from services.kit.uow import UnitOfWork

log = logging.getLogger(__name__)


def channel_answer(response: TenderResponse) -> ChannelAnswer:
    return ChannelAnswer(accepted=response.accepted, reason_code=response.reason_code or "",
                         reason=response.reason or "")


class CartageApiChannel:
    """The carrier lists its tenders and answers through the gateway: nothing to send."""

    async def offer(self, carrier: Carrier, tender: Tender) -> ChannelAnswer | None:
        return None


class HttpChannel:
    """Offers over the carrier's JSON API, one `HttpTenderSender` (and connection pool) per
    base URL, reused across offers and closed by `aclose`. `allow_public` is the sender's:
    False sends to loopback only (tests, `make run`, a simulator beside the service)."""

    def __init__(self, *, sender_id: str, timeout_s: float, allow_public: bool) -> None:
        self._sender_id, self._timeout_s, self._allow_public = (
            sender_id, timeout_s, allow_public)
        self._senders: dict[str, HttpTenderSender] = {}

    def _sender(self, base_url: str) -> HttpTenderSender:
        sender = self._senders.get(base_url)
        if sender is None:
            sender = HttpTenderSender(base_url, timeout_s=self._timeout_s,
                                      allow_public=self._allow_public)
            self._senders[base_url] = sender
        return sender

    async def offer(self, carrier: Carrier, tender: Tender) -> ChannelAnswer | None:
        base_url = carrier.content.endpoint_uri
        if not base_url:
            log.warning("API_CALLBACK carrier without an endpoint; it can still poll",
                        extra={"tender": tender.name, "carrier": carrier.name})
            return None
        document = tender_document(carrier, tender, sender_id=self._sender_id)
        response = await self._sender(base_url).offer(document)
        return None if response is None else channel_answer(response)

    async def aclose(self) -> None:
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            await sender.aclose()


class EdiChannel:
    """Writes each offer as a 204 into `outbox_dir/<carrier id>/`, for the file transfer
    (AS2/SFTP) to pick up. Interchange control numbers come from a Postgres sequence, so they
    are unique across processes and restarts."""

    def __init__(self, uow: UnitOfWork, repository: CarrierRepository, outbox_dir: Path, *,
                 sender_id: str, test: bool = False) -> None:
        self._uow, self._repo, self._dir = uow, repository, Path(outbox_dir)
        self._sender_id, self._test = sender_id, test

    async def offer(self, carrier: Carrier, tender: Tender) -> ChannelAnswer | None:
        document = tender_document(carrier, tender, sender_id=self._sender_id, edi=True)
        async with self._uow.transaction() as tx:
            control = await self._repo.next_control_number(tx)
        directory = self._dir / carrier.id
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        sender = EdiFileSender(directory, sender_id=self._sender_id,
                               receiver_id=carrier.content.scac, test=self._test)
        path = await sender.send(document, control_number=control, now=utc_now())
        log.info("204 written", extra={"tender": tender.name, "file": str(path)})
        return None


class ChannelRouter:
    """Sends each offer through the carrier's `tender_channel`; a channel without an
    implementation falls back to the Cartage API one (the carrier can always poll)."""

    def __init__(self, channels: Mapping[int, TenderChannels] | None = None) -> None:
        self._poll = CartageApiChannel()
        self._channels = dict(channels or {})

    async def offer(self, carrier: Carrier, tender: Tender) -> ChannelAnswer | None:
        kind = carrier.content.tender_channel or carrier_pb2.TENDER_CHANNEL_CARTAGE_API
        return await self._channels.get(kind, self._poll).offer(carrier, tender)
