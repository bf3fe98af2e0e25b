"""Time: the clock the use cases are given, and exact Timestamp conversions."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def set_timestamp(target: timestamp_pb2.Timestamp, moment: datetime) -> None:
    """Timestamp.FromDatetime is pure Python and slow; aware datetimes convert exactly so."""
    delta = moment - _EPOCH
    target.seconds = delta.days * 86400 + delta.seconds
    target.nanos = delta.microseconds * 1000


def to_datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime (the contract's timestamps are UTC)."""
    return stamp.ToDatetime(tzinfo=UTC)
