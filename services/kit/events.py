"""One registry of domain event types, read from the contracts.

An event is a message whose options set `(cartage.type.v1.event_subject)`; the stream it goes to
is its package's domain in capitals (`cartage.order.v1.OrderCreatedEvent` on `order.created` in
stream `ORDER`, whose subjects are `order.>`). Every `events_pb2` module of the generated
`cartage` package is read once, so the subjects, streams and classes of every service's events
are declared in the contracts only, and any service can declare (idempotently) the stream it
consumes without the producing service running.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from types import ModuleType
from typing import Any

from google.protobuf.message import Message
from nats.aio.msg import Msg

from services.kit.clock import set_timestamp
from services.kit.uow import OutgoingEvent

EVENT_TYPE_HEADER = "Cartage-Event-Type"


@dataclass(frozen=True, slots=True)
class EventType:
    name: str  # the message's full name, also the Cartage-Event-Type header
    subject: str
    stream: str
    message: type[Message]


class EventCatalog:
    def __init__(self, modules: Iterable[ModuleType]) -> None:
        self._by_name: dict[str, EventType] = {}
        self._by_subject: dict[str, EventType] = {}
        for module in modules:
            for descriptor in module.DESCRIPTOR.message_types_by_name.values():
                subject = _subject_option(descriptor)
                if not subject:
                    continue
                package = descriptor.file.package  # cartage.<domain>.v1
                kind = EventType(descriptor.full_name, subject,
                                 package.split(".")[1].upper(),
                                 getattr(module, descriptor.name))
                if subject in self._by_subject:
                    raise ValueError(f"two events on subject {subject!r}")
                self._by_name[kind.name] = self._by_subject[subject] = kind

    @property
    def types(self) -> tuple[EventType, ...]:
        return tuple(self._by_name.values())

    def streams(self) -> dict[str, tuple[str, ...]]:
        """Every stream and its subjects (`order.>`: the first token of each event subject)."""
        streams: dict[str, set[str]] = {}
        for kind in self._by_name.values():
            streams.setdefault(kind.stream, set()).add(kind.subject.split(".")[0] + ".>")
        return {name: tuple(sorted(subjects)) for name, subjects in sorted(streams.items())}

    def stream(self, name: str) -> dict[str, tuple[str, ...]]:
        """`{name: subjects}` for one stream, the shape the relay and consumers take."""
        return {name: self.streams()[name]}

    def of_subject(self, subject: str) -> EventType:
        kind = self._by_subject.get(subject)
        if kind is None:
            raise KeyError(f"no event type is published on {subject!r}")
        return kind

    def of(self, message: Message | type[Message]) -> EventType:
        return self._by_name[message.DESCRIPTOR.full_name]

    def decode(self, msg: Msg) -> Message | None:
        """The event in `msg`, by its Cartage-Event-Type header (the subject when a publisher
        other than our relay left it out); None for a type this registry does not know."""
        name = (msg.headers or {}).get(EVENT_TYPE_HEADER)
        kind = self._by_name.get(name) if name else self._by_subject.get(msg.subject)
        return None if kind is None else kind.message.FromString(msg.data)

    def outgoing(self, event: Any, when: datetime, *, extra: bytes = b"",
                 **fields: Any) -> OutgoingEvent:
        """`event` for the outbox, stamped with a fresh `event_id` (also its Nats-Msg-Id) and
        `event_time`, plus any `fields` (such as `client_id`). `extra` is appended to the
        serialized message (a field spliced in with `kit.wire.embedded`)."""
        kind = self.of(event)
        event.event_id = os.urandom(16).hex()
        set_timestamp(event.event_time, when)
        for name, value in fields.items():
            setattr(event, name, value)
        return OutgoingEvent(subject=kind.subject, event_type=kind.name,
                             payload=event.SerializeToString() + extra,
                             event_id=event.event_id)


def _subject_option(descriptor: Any) -> str:
    from cartage.type.v1 import event_pb2

    options = descriptor.GetOptions()
    if not options.HasExtension(event_pb2.event_subject):
        return ""
    return options.Extensions[event_pb2.event_subject]


def _contract_event_modules() -> list[ModuleType]:
    import cartage

    modules = []
    for info in pkgutil.walk_packages(cartage.__path__, "cartage."):
        if info.name.endswith(".events_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


@cache
def catalog() -> EventCatalog:
    """Every event type of the contracts (read on first use, not at import)."""
    return EventCatalog(_contract_event_modules())


def subjects_of(streams: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(subjects) for name, subjects in streams.items()}
