"""Domain events as partner webhook payloads: `{"type", "timestamp", "data"}`, data in the REST
API's JSON (proto3 JSON mapping, zero values printed, as the gateway prints them)."""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message

from services.kit.clock import to_datetime
from services.kit.events import catalog
from services.tracking.domain.webhooks import Public, body

# Event fields for Cartage's own routing, never shown to partners: the tenant is implied by
# whose endpoint receives the event.
INTERNAL_FIELDS = frozenset({"client_id"})


def tenant_of(event: Message) -> str:
    """The event's client: its own `client_id`, or that of the resource it carries."""
    direct = getattr(event, "client_id", "")
    if direct:
        return direct
    for field, value in event.ListFields():
        if field.message_type is not None and not field.is_repeated:
            nested = getattr(value, "client_id", "")
            if nested:
                return nested
    return ""


def public(event: Message) -> Public | None:
    """The event as partners see it; None for one without a tenant (not deliverable)."""
    client_id = tenant_of(event)
    if not client_id:
        return None
    kind = catalog().of(event)
    data = json_format.MessageToDict(event, always_print_fields_with_no_presence=True)
    for name in INTERNAL_FIELDS:
        data.pop(_camel(name), None)
    when = to_datetime(event.event_time)
    return Public(kind.subject, event.event_id, client_id, body(kind.subject, when, data))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def event_types() -> list[str]:
    """The public event catalogue: every event type of the contracts."""
    return sorted(kind.subject for kind in catalog().types)
