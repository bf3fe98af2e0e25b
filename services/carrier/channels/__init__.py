"""Tender channels (the karrio split): one canonical model, per channel pure builders and
parsers (`edi_x12`, `http_api`), one code table (`codes`), one module doing I/O (`sender`)."""

from services.carrier.channels.edi_x12 import (
    FunctionalAck,
    build_204,
    build_990,
    parse_204,
    parse_990,
    parse_990s,
    parse_997,
)
from services.carrier.channels.http_api import (
    HttpRequest,
    build_offer_request,
    parse_callback,
    parse_offer_response,
)
from services.carrier.channels.model import (
    CarrierUnavailable,
    ChannelError,
    Party,
    TenderDocument,
    TenderResponse,
    TenderStop,
    UnsafeDestination,
)
from services.carrier.channels.sender import EdiFileSender, EdiInbox, HttpTenderSender, InboxFile

__all__ = [
    "CarrierUnavailable",
    "ChannelError",
    "EdiFileSender",
    "EdiInbox",
    "FunctionalAck",
    "HttpRequest",
    "HttpTenderSender",
    "InboxFile",
    "Party",
    "TenderDocument",
    "TenderResponse",
    "TenderStop",
    "UnsafeDestination",
    "build_204",
    "build_990",
    "build_offer_request",
    "parse_204",
    "parse_990",
    "parse_990s",
    "parse_997",
    "parse_callback",
    "parse_offer_response",
]
