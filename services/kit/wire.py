"""Splicing already-serialized protobuf messages into a parent without parsing or copying them.

A serialized message is a sequence of fields in any order, and a message-typed field is its
key, its length and the child's bytes. So `parent.SerializeToString() + embedded(field, child)`
is the parent with `field` set to the child (or, for a repeated field, with one more element).
The order service serializes each new order once and splices the bytes into its event and its
stored idempotent response instead of copying the message into each (a copy costs more than the
serialization).
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def embedded(field: FieldDescriptor, payload: bytes) -> bytes:
    """`payload`, a serialized message of `field`'s type, as that field of the parent."""
    if field.message_type is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return varint(field.number << 3 | _LENGTH_DELIMITED) + varint(len(payload)) + payload
