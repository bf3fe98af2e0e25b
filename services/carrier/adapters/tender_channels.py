"""Tender channels: how an offer reaches a carrier (the use cases' `TenderChannels` port).

Here only the "through the Cartage API" channel, for carriers that poll ListTenders with their
own OAuth client: an offer needs no message, so `offer` does nothing. The JSON/HTTP callback
and EDI X12 204/990 channels (services/carrier/channels) plug in through `ChannelRouter`.
"""

from __future__ import annotations

from collections.abc import Mapping

from cartage.carrier.v1 import carrier_pb2
from services.carrier.domain.model import Carrier, Tender
from services.carrier.use_cases.ports import TenderChannels


class CartageApiChannel:
    """The carrier lists its tenders and answers through the gateway: nothing to send."""

    async def offer(self, carrier: Carrier, tender: Tender) -> None:
        return None


class ChannelRouter:
    """Sends each offer through the carrier's `tender_channel`; a channel without an
    implementation falls back to the Cartage API one (the carrier can always poll)."""

    def __init__(self, channels: Mapping[int, TenderChannels] | None = None) -> None:
        self._poll = CartageApiChannel()
        self._channels = dict(channels or {})

    async def offer(self, carrier: Carrier, tender: Tender) -> None:
        kind = carrier.content.tender_channel or carrier_pb2.TENDER_CHANNEL_CARTAGE_API
        await self._channels.get(kind, self._poll).offer(carrier, tender)
